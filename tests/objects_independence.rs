//! Objects are independent (issue #18): correcting or removing object k changes no other
//! object's masks. Each case runs `sam2-tui segment --session … --logits` twice on the
//! same clip — the journal with the operation and the same journal without it — and
//! requires every other object's `masks.json` entries (frame, score, RLE) and logits
//! files to be byte-identical. Four objects prompted on frames 0–2 (a click, a box, two
//! clicks, a click), a propagation, then the operation, a second propagation and a
//! reverse pass; nudged random-init weights (`common::present_tiny_checkpoint`), so the
//! masks are not empty and a leak from one object to another would show.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const FRAMES: u32 = 8;

fn prompts() -> Vec<String> {
    vec![
        r#"{"op":"add_prompt","frame":0,"object":1,"points":[[30,20,1]]}"#.into(),
        r#"{"op":"add_prompt","frame":0,"object":2,"box":[60,8,100,48]}"#.into(),
        r#"{"op":"add_prompt","frame":1,"object":3,"points":[[100,40,1],[115,50,0]]}"#.into(),
        r#"{"op":"add_prompt","frame":2,"object":4,"points":[[20,50,1]]}"#.into(),
        r#"{"op":"propagate","start":2}"#.into(),
    ]
}

/// The ops after `operation` (if any): a second propagation from the frame after it (a
/// correction on a tracked frame is not a conditioning frame: a propagation through
/// that frame would track it again, as the reference does) and a reverse pass.
fn journal(operation: Option<&str>) -> String {
    let mut ops = prompts();
    ops.extend(operation.map(str::to_string));
    ops.push(r#"{"op":"propagate","start":5}"#.into());
    ops.push(r#"{"op":"propagate","start":6,"reverse":true,"max_frames":4}"#.into());
    format!(r#"{{"version":1,"ops":[{}]}}"#, ops.join(","))
}

struct Setup {
    dir: PathBuf,
    clip: PathBuf,
    checkpoint: PathBuf,
}

fn setup(name: &str) -> Setup {
    let dir = common::scratch(name);
    let clip = dir.join("clip.mp4");
    common::pattern_clip(&clip, FRAMES, 0);
    let checkpoint = common::present_tiny_checkpoint(&common::fixture_cache("objects-independence"));
    Setup { dir, clip, checkpoint }
}

impl Setup {
    /// `segment` over `journal` into `dir/name`, with `extra` flags; the output folder.
    fn segment(&self, name: &str, journal: &str, extra: &[&str]) -> PathBuf {
        let session = self.dir.join(format!("{name}.json"));
        std::fs::write(&session, journal).unwrap();
        let out = self.dir.join(name);
        let o = Command::new(common::bin())
            .arg("segment")
            .arg(&self.clip)
            .arg("--session")
            .arg(&session)
            .arg("--out")
            .arg(&out)
            .arg("--checkpoint")
            .arg(&self.checkpoint)
            .args(["--device", "cpu", "--image-size", "128", "--logits"])
            .args(extra)
            .env("OMP_NUM_THREADS", "2")
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .output()
            .unwrap();
        assert!(o.status.success(), "segment {name} failed:\n{}", String::from_utf8_lossy(&o.stderr));
        out
    }
}

/// One object's results in an output folder: per frame, its masks.json entry (score and
/// RLE, as written) and its logits file's bytes.
#[derive(PartialEq)]
struct Frame {
    entry: serde_json::Value,
    logits: Vec<u8>,
}

fn object(out: &Path, id: u64) -> BTreeMap<u64, Frame> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("masks.json")).unwrap()).unwrap();
    let mut frames = BTreeMap::new();
    for f in doc["frames"].as_array().unwrap() {
        let frame = f["frame"].as_u64().unwrap();
        for o in f["objects"].as_array().unwrap().iter().filter(|o| o["id"] == id) {
            let logits = std::fs::read(out.join(format!("logits/{id}/{frame:05}.npy"))).unwrap();
            frames.insert(frame, Frame { entry: o.clone(), logits });
        }
    }
    let files = std::fs::read_dir(out.join(format!("logits/{id}"))).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files, frames.len(), "object {id}: one logits file per masks.json entry");
    frames
}

/// Foreground pixels of one object over all its frames (from the RLE counts).
fn foreground(frames: &BTreeMap<u64, Frame>) -> u64 {
    frames.values().map(|f| serde_json::from_value::<sam2_tui::rle::Rle>(f.entry["rle"].clone()).unwrap().area()).sum()
}

/// An empty mask with the "no output here" score: what a frame an object was never
/// tracked on shows when another op reports that frame (as the reference's outputs do).
fn is_placeholder(f: &Frame) -> bool {
    let rle: sam2_tui::rle::Rle = serde_json::from_value(f.entry["rle"].clone()).unwrap();
    rle.area() == 0 && f.entry["score"].as_f64() == Some(-1024.0)
}

/// Every object but `changed` has the same results in `a` and `b` (and results at all,
/// with some foreground): byte for byte on every frame where both runs have one; a frame
/// only one run reports (a removal reports its frames for every object left, tracked
/// there or not) holds the placeholder. `changed` differs.
fn assert_others_identical(a: &Path, b: &Path, changed: u64) {
    for id in [1u64, 2, 3, 4].into_iter().filter(|&id| id != changed) {
        let (x, y) = (object(a, id), object(b, id));
        assert!(x.len() >= FRAMES as usize - 2, "object {id}: results on only {} frames", x.len());
        assert!(foreground(&x) > 0, "object {id}: empty masks prove nothing");
        let frames: std::collections::BTreeSet<u64> = x.keys().chain(y.keys()).copied().collect();
        let differing: Vec<u64> = frames
            .into_iter()
            .filter(|f| match (x.get(f), y.get(f)) {
                (Some(p), Some(q)) => p != q,
                (Some(p), None) | (None, Some(p)) => !is_placeholder(p),
                (None, None) => unreachable!(),
            })
            .collect();
        assert!(differing.is_empty(), "object {id} changed on frames {differing:?}");
    }
    assert!(object(a, changed) != object(b, changed), "object {changed}: the operation changed nothing");
}

/// The three runs with `extra` flags for `segment`.
fn check_independence(name: &str, extra: &[&str]) {
    let s = setup(name);
    let without = s.segment("without", &journal(None), extra);
    // A correction on a tracked frame (two clicks; the frame's mask is fed back).
    let corrected = s.segment(
        "corrected",
        &journal(Some(r#"{"op":"add_prompt","frame":4,"object":2,"points":[[70,30,1],[90,40,0]]}"#)),
        extra,
    );
    assert_others_identical(&without, &corrected, 2);
    // The removal of the first object (every other object moves down one index).
    let removed = s.segment("removed", &journal(Some(r#"{"op":"remove_object","object":1}"#)), extra);
    assert_others_identical(&without, &removed, 1);
    assert!(object(&removed, 1).is_empty(), "a removed object has no masks");
}

#[test]
fn correcting_or_removing_one_object_changes_no_other_objects_masks() {
    check_independence("objects-independence", &[]);
}

/// The same with the objects of a frame tracked together (`batch_objects`): a removal
/// changes which objects share a batch, a correction which memories have equal lengths.
#[test]
fn batched_correcting_or_removing_one_object_changes_no_other_objects_masks() {
    check_independence("objects-independence-batched", &["--tune", "batch_objects=on"]);
}
