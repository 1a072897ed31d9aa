//! Reading what `batch` and `segment` leave behind: the batch report and an output
//! folder's masks; and a frame folder that breaks mid-run.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A `batch-report*.json`, parsed.
pub fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The report's entry for the item whose output is `out`.
pub fn item<'a>(report: &'a serde_json::Value, out: &str) -> &'a serde_json::Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["out"] == out)
        .unwrap_or_else(|| panic!("{out} not in {report}"))
}

/// The `frames` of an output folder's masks.json.
pub fn frames_of(out: &Path) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("masks.json")).unwrap_or_else(|e| panic!("{}: {e}", out.display())),
    )
    .unwrap();
    doc["frames"].clone()
}

/// No staging folder of sam2-tui's is left in `out`.
pub fn assert_no_staging_left(out: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".sam2-tui"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

/// `clip`'s frames as a PNG folder `dir` whose fifth frame is cut short after its header:
/// the folder opens (every header is read), the frame fails to decode when a
/// propagation gets there.
pub fn broken_frame_folder(clip: &Path, dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("ffmpeg")
        .stdin(Stdio::null())
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(clip)
        .args(["-start_number", "0"])
        .arg(dir.join("%05d.png"))
        .status()
        .unwrap();
    assert!(st.success());
    let cut = dir.join("00004.png");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..200]).unwrap();
    dir.to_path_buf()
}
