//! `sam2-tui batch --streams K`: K videos tracked at once by one worker (issue #18), each
//! item still a job of its own: the masks and logits each item gets alone (`batch`
//! without `--streams`), published as soon as it ends; an item whose input breaks in
//! the middle fails alone; a worker crash mid-group changes no mask; an interrupt leaves
//! what was published and nothing of what was not.
//!
//! Nudged random-init weights (`common::present_tiny_checkpoint`, so the masks are not
//! empty) at model input 128 on the CPU: the logic, not the parity, is under test here
//! (`tests/streams.rs` holds the lockstep itself to the single-session path).
mod common;

use common::batch_outputs::{assert_no_staging_left, broken_frame_folder, frames_of, item, report};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn checkpoint() -> PathBuf {
    common::present_tiny_checkpoint(&common::fixture_cache("objects-independence"))
}

fn batch_command(manifest: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(common::bin());
    c.arg("batch")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .arg("--checkpoint")
        .arg(checkpoint())
        .args(["--device", "cpu", "--image-size", "128"])
        .args(extra)
        .env("OMP_NUM_THREADS", "2")
        .env("XDG_DATA_HOME", out.with_extension("data"))
        .envs(env.iter().copied());
    c
}

fn batch(manifest: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    batch_command(manifest, out, extra, env).output().unwrap()
}

/// Starts `batch --streams 2` and reads its stderr up to the first line that contains
/// one of `until` (the event awaited); the child, the lines still to come and those read.
fn streams_of_two_until(
    m: &Path,
    out: &Path,
    until: &[&str],
) -> (std::process::Child, std::io::Lines<BufReader<std::process::ChildStderr>>, Vec<String>) {
    let mut child =
        batch_command(m, out, &["--streams", "2"], &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = vec![];
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if until.iter().any(|u| line.contains(u)) {
            break;
        }
    }
    (child, lines, seen)
}

/// Three items: `a` (objects on two frames, a removal, a reverse pass), `b` (short), `c`
/// (a frame folder whose fifth frame is cut short: it opens, then breaks mid-run).
fn manifest(dir: &Path) -> PathBuf {
    common::pattern_clip(&dir.join("a.mp4"), 6, 0);
    common::pattern_clip(&dir.join("b.mp4"), 4, 5);
    std::fs::write(
        dir.join("a.json"),
        r#"{"version":1,"ops":[
            {"op":"add_prompt","frame":0,"object":1,"points":[[30,20,1]]},
            {"op":"add_prompt","frame":1,"object":2,"box":[60,8,100,48]},
            {"op":"add_prompt","frame":1,"object":3,"points":[[100,40,1]]},
            {"op":"propagate"},
            {"op":"remove_object","object":2},
            {"op":"propagate","start":4,"reverse":true,"max_frames":3}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("b.json"),
        r#"{"objects":[{"id":1,"frame":0,"points":[[40,30,1]]},{"id":4,"frame":1,"box":[70,10,110,50]}]}"#,
    )
    .unwrap();
    broken_frame_folder(&dir.join("a.mp4"), &dir.join("c-frames"));
    let m = dir.join("manifest.jsonl");
    std::fs::write(
        &m,
        concat!(
            "{\"input\":\"a.mp4\",\"session\":\"a.json\",\"out\":\"a\"}\n",
            "{\"input\":\"c-frames\",\"prompts\":\"b.json\",\"out\":\"c\"}\n",
            "{\"input\":\"b.mp4\",\"prompts\":\"b.json\",\"out\":\"b\"}\n",
        ),
    )
    .unwrap();
    m
}

/// Every logits file under `dir`, relative path → values.
fn logits_of(dir: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let mut all = std::collections::BTreeMap::new();
    for obj in std::fs::read_dir(dir.join("logits")).unwrap().flatten() {
        for f in std::fs::read_dir(obj.path()).unwrap().flatten() {
            let b = std::fs::read(f.path()).unwrap();
            let header = u16::from_le_bytes([b[8], b[9]]) as usize;
            let v = b[10 + header..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            all.insert(format!("{}/{}", obj.file_name().to_string_lossy(), f.file_name().to_string_lossy()), v);
        }
    }
    all
}

/// The same frames with the same objects and byte-identical masks; the scores (the
/// object-score logits) within 1e-4, since the objects of several videos go through
/// larger matrix products, which round differently. Returns the largest score difference.
fn assert_same_masks(name: &str, got: &serde_json::Value, want: &serde_json::Value) -> f64 {
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len(), "{name}: not the same frames");
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["frame"], w["frame"], "{name}: not the same frames");
        let (go, wo) = (g["objects"].as_array().unwrap(), w["objects"].as_array().unwrap());
        assert_eq!(go.len(), wo.len(), "{name}: frame {}: not the same objects", w["frame"]);
        for (a, b) in go.iter().zip(wo) {
            assert_eq!(a["id"], b["id"], "{name}: frame {}: not the same objects", w["frame"]);
            assert_eq!(a["rle"], b["rle"], "{name}: frame {} object {}: the mask differs", w["frame"], b["id"]);
            worst = worst.max((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs());
        }
    }
    assert!(worst <= 1e-4, "{name}: max |dscore| {worst:e}");
    worst
}

fn has_foreground(frames: &serde_json::Value) -> bool {
    frames
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["objects"].as_array().unwrap())
        .any(|o| serde_json::from_value::<sam2_tui::rle::Rle>(o["rle"].clone()).unwrap().area() > 0)
}

#[test]
fn videos_at_once_get_the_masks_and_logits_each_gets_alone_and_a_broken_one_fails_alone() {
    let dir = common::scratch("batch-streams");
    let m = manifest(&dir);
    let alone = dir.join("alone");
    let r = batch(&m, &alone, &["--logits"], &[]);
    assert_eq!(r.status.code(), Some(1), "{}", String::from_utf8_lossy(&r.stderr));
    let together = dir.join("together");
    let r = batch(&m, &together, &["--logits", "--streams", "3"], &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "one item fails, so the batch does: {err}");
    assert!(err.contains("3 video(s) at once each"), "{err}");
    assert!(err.contains("1 of 3 item(s) failed"), "{err}");
    let rep = report(&together.join("batch-report.json"));
    assert_eq!(rep["finished"], true);
    let c = item(&rep, "c");
    assert_eq!(c["status"], "failed");
    assert!(c["error"].as_str().unwrap().contains("00004.png"), "the error names the broken frame: {c}");
    assert!(!together.join("c").exists(), "a failed item leaves no output folder");
    for name in ["a", "b"] {
        assert_eq!(item(&rep, name)["status"], "done", "{rep}");
        assert_eq!(item(&rep, name)["restarts"], 0, "{rep}");
        let (got, want) = (frames_of(&together.join(name)), frames_of(&alone.join(name)));
        assert!(has_foreground(&want), "{name}: empty masks prove nothing");
        let score_diff = assert_same_masks(name, &got, &want);
        let (got, want) = (logits_of(&together.join(name)), logits_of(&alone.join(name)));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name}: not the same logits files"
        );
        let worst =
            got.iter().flat_map(|(k, g)| g.iter().zip(&want[k]).map(|(x, y)| (x - y).abs())).fold(0f32, f32::max);
        assert!(worst <= 1e-3, "{name}: max |dlogit| {worst:e}");
        eprintln!("{name}: masks identical, max |dlogit| {worst:e}, max |dscore| {score_diff:e}");
    }
    assert!(!logits_of(&together.join("a")).keys().any(|k| k.starts_with("2/")), "the removed object's logits go");
    assert_no_staging_left(&together);
}

#[test]
fn a_worker_crash_mid_group_changes_no_mask_and_counts_against_the_items_it_interrupted() {
    let dir = common::scratch("batch-streams-crash");
    let m = manifest(&dir);
    // `a` and `b`, then `b` again: it takes the first place freed, after the crash.
    let good = dir.join("good.jsonl");
    let text = std::fs::read_to_string(&m).unwrap();
    let mut items: String = text.lines().filter(|l| !l.contains("c-frames")).map(|l| format!("{l}\n")).collect();
    items.push_str("{\"input\":\"b.mp4\",\"prompts\":\"b.json\",\"out\":\"b2\"}\n");
    std::fs::write(&good, items).unwrap();
    let clean = dir.join("clean");
    let r = batch(&good, &clean, &["--streams", "2"], &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Only `a` reaches frame 5; the worker dies while both streams run their first pass.
    let crashed = dir.join("crashed");
    let r = batch(&good, &crashed, &["--streams", "2"], &[("SAM2_TUI_FAULT", "abort@frame=3")]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("died") && err.contains("SIGABRT"), "{err}");
    assert!(err.contains("; 1 worker restart(s);"), "one death, however many items it served: {err}");
    let rep = report(&crashed.join("batch-report.json"));
    assert_eq!(item(&rep, "b2")["restarts"], 0, "it started after the crash: {rep}");
    for name in ["a", "b", "b2"] {
        let want_restarts = if name == "b2" { 0 } else { 1 };
        assert_eq!(item(&rep, name)["restarts"], want_restarts, "{rep}");
        assert_eq!(
            frames_of(&crashed.join(name)),
            frames_of(&clean.join(name)),
            "{name}: masks and scores after a crash differ from the same run without one"
        );
    }
}

#[test]
fn an_interrupt_keeps_the_items_already_published_and_leaves_nothing_of_the_others() {
    let dir = common::scratch("batch-streams-interrupt");
    common::pattern_clip(&dir.join("short.mp4"), 2, 0);
    common::pattern_clip(&dir.join("long.mp4"), 200, 3);
    std::fs::write(dir.join("p.json"), r#"{"objects":[{"id":1,"frame":0,"points":[[40,30,1]]}]}"#).unwrap();
    let m = dir.join("manifest.jsonl");
    std::fs::write(
        &m,
        "{\"input\":\"short.mp4\",\"prompts\":\"p.json\",\"out\":\"short\"}\n{\"input\":\"long.mp4\",\"prompts\":\"p.json\",\"out\":\"long\"}\n",
    )
    .unwrap();
    let out = dir.join("out");
    // The event awaited: the short item's line says it is done (published).
    let (mut child, lines, seen) = streams_of_two_until(&m, &out, &["] short: done"]);
    assert!(seen.last().is_some_and(|l| l.contains("short: done")), "{seen:#?}");
    // SAFETY: a plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen:#?}\n{rest:#?}");
    let rep = report(&out.join("batch-report.json"));
    assert_eq!(rep["finished"], false);
    assert_eq!(item(&rep, "short")["status"], "done");
    assert_eq!(item(&rep, "long")["status"], "pending", "{rep}");
    assert!(out.join("short/masks.json").is_file());
    assert!(!out.join("long").exists(), "an interrupted item leaves no output folder");
    assert_no_staging_left(&out);
}

#[test]
fn a_place_freed_by_a_short_item_goes_to_the_next_item_while_the_longest_still_runs() {
    let dir = common::scratch("batch-streams-admission");
    common::pattern_clip(&dir.join("long.mp4"), 200, 3);
    common::pattern_clip(&dir.join("short.mp4"), 2, 0);
    common::pattern_clip(&dir.join("next.mp4"), 3, 5);
    std::fs::write(dir.join("p.json"), r#"{"objects":[{"id":1,"frame":0,"points":[[40,30,1]]}]}"#).unwrap();
    let line = |name: &str| format!("{{\"input\":\"{name}.mp4\",\"prompts\":\"p.json\",\"out\":\"{name}\"}}\n");
    let m = dir.join("manifest.jsonl");
    std::fs::write(&m, [line("long"), line("short"), line("next")].concat()).unwrap();
    let out = dir.join("out");
    // Two places: `long` and `short` start together; `next` gets `short`'s place when it
    // ends, not `long`'s 200 frames later. The event awaited: `next` is done.
    let (mut child, lines, seen) = streams_of_two_until(&m, &out, &["] next: done", "] long: done"]);
    // Not needed any further: the long item is stopped here.
    // SAFETY: a plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    child.wait().unwrap();
    assert!(
        seen.last().is_some_and(|l| l.contains("] next: done")),
        "the third item waited for the longest of the first two: {seen:#?}\n{rest:#?}"
    );
    let rep = report(&out.join("batch-report.json"));
    assert_eq!(item(&rep, "long")["status"], "pending", "{rep}");
    assert_eq!(item(&rep, "next")["frames"], 3, "{rep}");
    // Joining a propagation under way changes none of its masks: `next` alone.
    let one = dir.join("next.jsonl");
    std::fs::write(&one, line("next")).unwrap();
    let alone = dir.join("alone");
    let r = batch(&one, &alone, &[], &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let want = frames_of(&alone.join("next"));
    assert!(has_foreground(&want), "empty masks prove nothing");
    assert_same_masks("next", &frames_of(&out.join("next")), &want);
    assert_no_staging_left(&out);
}
