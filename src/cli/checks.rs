//! The checks a command makes on what the user gave before any model work, shared by
//! `segment` and the console: every failure is one line naming the file, and bad input
//! (exit 2).
use crate::media::outputs::VideoInfo;
use crate::session::Journal;
use crate::util::{as_bad_input, bad_input};
use std::path::{Path, PathBuf};

/// The journal of `--prompts` or `--session`, checked against the video it will run on:
/// at least one op, frames in range, every point and box inside the frame.
pub fn ops_for_video(journal: &Journal, file: &Path, video: &VideoInfo) -> anyhow::Result<()> {
    if journal.ops.is_empty() {
        return Err(bad_input(format!("{}: no ops to run", file.display())));
    }
    journal.check_for_video(file, video.frames, video.width, video.height)
}

/// The checkpoint file: present, a regular file, a checkpoint of the model asked for.
/// Returns what it is. The tensors are read (mapped) and dropped again, once per file as
/// it is on disk: a `batch` judges every item, and reading a 150-MB `.pt` again for each
/// held a freed place 0.2–0.45 s before the next video could take it. A file rewritten
/// since (another length or modification time) is read again.
pub fn checkpoint(path: &Path, model: Option<crate::model::ModelSize>) -> anyhow::Result<crate::weights::Detected> {
    type Key = (PathBuf, u64, Option<std::time::SystemTime>, Option<crate::model::ModelSize>);
    static CHECKED: std::sync::Mutex<Vec<(Key, crate::weights::Detected)>> = std::sync::Mutex::new(Vec::new());
    let key = std::fs::metadata(path).ok().map(|m| (path.to_path_buf(), m.len(), m.modified().ok(), model));
    let checked = || CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(det) = key.as_ref().and_then(|k| checked().iter().find(|(c, _)| c == k).map(|(_, d)| d.clone())) {
        return Ok(det);
    }
    let det = check_checkpoint(path, model)?;
    if let Some(k) = key {
        checked().push((k, det.clone()));
    }
    Ok(det)
}

fn check_checkpoint(path: &Path, model: Option<crate::model::ModelSize>) -> anyhow::Result<crate::weights::Detected> {
    if !path.exists() {
        return Err(bad_input(format!(
            "{}: checkpoint not found (run `sam2-tui weights download {}` or pass --checkpoint)",
            path.display(),
            model.unwrap_or(crate::model::ModelSize::Tiny)
        )));
    }
    let ckpt = crate::weights::load(path).map_err(as_bad_input)?;
    let det = crate::weights::detect(&ckpt)
        .map_err(|e| bad_input(format!("{}: {}", path.display(), format!("{e:#}").replace('\n', " "))))?;
    crate::weights::check_requested(&det, model, None, path).map_err(as_bad_input)?;
    Ok(det)
}

/// `--overlay FILE`, checked before the run rather than after it.
pub fn overlay_target(path: &Option<PathBuf>) -> anyhow::Result<()> {
    match path {
        Some(p) => crate::media::overlay::check_target(p),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelSize, ModelVersion};

    /// A checkpoint judged once is not judged again while the file is the same, but a file
    /// rewritten at that path is: the answer never outlives the file it was about.
    #[test]
    fn a_checkpoint_rewritten_after_its_check_is_checked_again() {
        let dir = std::env::temp_dir().join(format!("sam2-tui-checks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.safetensors");
        std::fs::write(&path, b"not a checkpoint").unwrap();
        assert!(checkpoint(&path, None).is_err(), "a broken file is refused");
        crate::model::random_init::write_random_checkpoint(&path, ModelSize::Tiny, ModelVersion::V2_1, 0).unwrap();
        let det = checkpoint(&path, None).expect("a tiny checkpoint");
        assert_eq!(det.size, ModelSize::Tiny);
        assert_eq!(checkpoint(&path, Some(ModelSize::Tiny)).unwrap(), det, "the same file, the same answer");
        assert!(checkpoint(&path, Some(ModelSize::Large)).is_err(), "asked for another model: refused");
        // Rewritten in place: refused again, not the answer remembered for the old file.
        std::fs::write(&path, b"broken since").unwrap();
        assert!(checkpoint(&path, None).is_err(), "the rewritten file is checked again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
