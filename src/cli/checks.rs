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
/// Returns what it is. The tensors are read (mapped) and dropped again.
pub fn checkpoint(path: &Path, model: Option<crate::model::ModelSize>) -> anyhow::Result<crate::weights::Detected> {
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
