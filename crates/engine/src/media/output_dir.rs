//! Where a run's outputs land, and the promise that goes with it: sam2-tui only ever
//! replaces what it wrote itself, and at every instant `--out` holds either the previous
//! complete output or the new complete one.
//!
//! - An output folder carries a marker file (`.sam2-tui-output`) written before anything
//!   else; only a folder with the marker and nothing but sam2-tui's own entries (or an
//!   empty folder) is ever replaced. Anything else at `--out` is refused before any model
//!   work, and so is an `--out` that is, holds or lies inside the input.
//! - A run writes into a staging folder next to `--out` (`.sam2-tui-segment-<pid>@<host>-…`) and
//!   swaps it in with one atomic exchange (`renameat2(RENAME_EXCHANGE)` on Linux,
//!   `renamex_np(RENAME_SWAP)` on macOS); the previous output then sits at the staging
//!   name and is removed. Staging folders and overlay temp files of a process that is no
//!   longer alive (a `kill -9`) are swept by the next run in the same folder.
//! - An `--overlay` video is written to a temp file next to it and renamed into place
//!   after the folder: an existing overlay file is replaced only when the output folder
//!   being replaced records it (same path, size and modification time).
use anyhow::anyhow;
use sam2_api::util::bad_input;
use std::path::{Component, Path, PathBuf};

pub const MARKER: &str = ".sam2-tui-output";
const STAGING_PREFIX: &str = ".sam2-tui-segment-";
const OVERLAY_PREFIX: &str = ".sam2-tui-overlay-";
/// What sam2-tui writes into an output folder; a folder holding anything else is not
/// replaced (someone put it there).
const OWN_ENTRIES: &[&str] = &[MARKER, "masks.json", "annotations", "logits"];

/// The marker's content: who wrote the folder, and the overlay written with it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    pub written_by: String,
    #[serde(default)]
    pub overlay: Option<FileStamp>,
}

/// Enough of a file to recognise it as the one written then.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    pub path: PathBuf,
    pub len: u64,
    pub modified_ns: u128,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::symlink_metadata(path).ok()?;
        let modified_ns = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
        Some(FileStamp { path: path.to_path_buf(), len: m.len(), modified_ns })
    }
}

/// What is at `--out` now.
#[derive(Clone, Debug, PartialEq)]
enum Existing {
    Nothing,
    EmptyDir,
    /// An earlier sam2-tui output.
    Ours(Marker),
}

/// A checked `--out` (and `--overlay`): nothing has been written yet.
#[derive(Debug)]
pub struct OutputTarget {
    out: PathBuf,
    parent: PathBuf,
    overlay: Option<PathBuf>,
}

/// `path` made absolute and lexically normal (`.` and `..` resolved), with the deepest
/// existing ancestor's symlinks resolved, so two spellings of one place compare equal.
fn normal(path: &Path) -> anyhow::Result<PathBuf> {
    let abs = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    // Resolve links in the part that exists; keep the rest as written.
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = std::fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    Ok(resolved)
}

/// Whether `dir` holds a complete sam2-tui output (published whole, so the marker and
/// masks.json together mean complete; `batch` skips such items when re-run).
pub fn is_complete(dir: &Path) -> bool {
    !std::fs::symlink_metadata(dir).map(|m| m.file_type().is_symlink()).unwrap_or(true)
        && read_marker(dir).is_some()
        && dir.join("masks.json").is_file()
}

fn read_marker(dir: &Path) -> Option<Marker> {
    let bytes = std::fs::read(dir.join(MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Classifies what is at `out`, refusing what may not be replaced.
fn existing(out: &Path) -> anyhow::Result<Existing> {
    let meta = match std::fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(bad_input(format!("{}: cannot inspect --out: {e}", out.display()))),
    };
    if meta.file_type().is_symlink() {
        return Err(bad_input(format!(
            "{}: --out is a symbolic link; give the folder it points to, or another path",
            out.display()
        )));
    }
    if !meta.is_dir() {
        return Err(bad_input(format!(
            "{}: --out exists and is not a folder; sam2-tui will not replace it",
            out.display()
        )));
    }
    let names: Vec<String> = std::fs::read_dir(out)
        .map_err(|e| bad_input(format!("{}: cannot read --out: {e}", out.display())))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(Existing::EmptyDir);
    }
    let Some(marker) = read_marker(out) else {
        return Err(bad_input(format!(
            "{}: --out exists and was not written by sam2-tui (no {MARKER} in it); choose another --out or empty it yourself",
            out.display()
        )));
    };
    if let Some(stranger) = names.iter().find(|n| !OWN_ENTRIES.contains(&n.as_str())) {
        return Err(bad_input(format!(
            "{}: this sam2-tui output now also holds '{stranger}', which sam2-tui did not write; move it out or choose another --out",
            out.display()
        )));
    }
    Ok(Existing::Ours(marker))
}

impl OutputTarget {
    /// Checks `--out` (and `--overlay`) against the inputs before any work: the error is
    /// a one-line `BadInput` naming the path.
    pub fn check(out: &Path, overlay: Option<&Path>, inputs: &[&Path]) -> anyhow::Result<OutputTarget> {
        let out = normal(out)?;
        let parent = out.parent().filter(|_| out.file_name().is_some()).map(Path::to_path_buf).ok_or_else(|| {
            bad_input(format!("{}: --out must name a folder below some parent folder", out.display()))
        })?;
        for input in inputs {
            let input = normal(input)?;
            if out == input || input.starts_with(&out) {
                return Err(bad_input(format!(
                    "{}: --out is or contains the input {}",
                    out.display(),
                    input.display()
                )));
            }
            if out.starts_with(&input) {
                return Err(bad_input(format!("{}: --out lies inside the input {}", out.display(), input.display())));
            }
        }
        let existing = existing(&out)?;
        let overlay = match overlay {
            None => None,
            Some(o) => Some(check_overlay(&normal(o)?, &out, &existing, inputs)?),
        };
        Ok(OutputTarget { out, parent, overlay })
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Creates the staging folder (marker first) next to `--out`, after sweeping what
    /// dead runs left there.
    pub fn stage(&self) -> anyhow::Result<Staging> {
        std::fs::create_dir_all(&self.parent).map_err(|e| anyhow!("{}: cannot create: {e}", self.parent.display()))?;
        sweep(&self.parent, STAGING_PREFIX);
        if let Some(dir) = self.overlay.as_ref().and_then(|o| o.parent()) {
            sweep(dir, OVERLAY_PREFIX);
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("{STAGING_PREFIX}{}-", sam2_api::util::owner_tag()))
            .tempdir_in(&self.parent)
            .map_err(|e| anyhow!("{}: cannot write here: {e}", self.parent.display()))?;
        let marker = Marker { written_by: format!("sam2-tui {}", env!("CARGO_PKG_VERSION")), overlay: None };
        sam2_api::util::atomic_write(&dir.path().join(MARKER), &serde_json::to_vec_pretty(&marker)?)?;
        let overlay_tmp = match &self.overlay {
            None => None,
            Some(o) => {
                let ext = o.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
                let f = tempfile::Builder::new()
                    .prefix(&format!("{OVERLAY_PREFIX}{}-", sam2_api::util::owner_tag()))
                    .suffix(&ext)
                    .tempfile_in(o.parent().unwrap_or(Path::new("/")))
                    .map_err(|e| anyhow!("{}: cannot write next to the overlay: {e}", o.display()))?;
                Some(f.into_temp_path())
            }
        };
        Ok(Staging { dir, marker, overlay_tmp })
    }

    /// Puts the staged output (and overlay) in place: `--out` swaps atomically, then the
    /// overlay is renamed over its path. Whatever the staging replaced is removed.
    pub fn publish(&self, mut staging: Staging) -> anyhow::Result<()> {
        // Someone may have written into --out while we ran: judge it again.
        let now = existing(&self.out)?;
        if let Some(tmp) = &staging.overlay_tmp {
            staging.marker.overlay =
                FileStamp::of(tmp).map(|s| FileStamp { path: self.overlay.clone().unwrap_or_default(), ..s });
            sam2_api::util::atomic_write(
                &staging.dir.path().join(MARKER),
                &serde_json::to_vec_pretty(&staging.marker)?,
            )?;
        }
        let staged = staging.dir.keep();
        match now {
            Existing::Nothing => rename_no_replace(&staged, &self.out)?,
            Existing::EmptyDir | Existing::Ours(_) => {
                exchange(&staged, &self.out)?;
                // `staged` now holds what was at --out: an empty folder or our own output.
                let removed = if now == Existing::EmptyDir {
                    std::fs::remove_dir(&staged)
                } else {
                    std::fs::remove_dir_all(&staged)
                };
                removed.map_err(|e| anyhow!("{}: cannot remove the replaced output: {e}", staged.display()))?;
            }
        }
        if let (Some(tmp), Some(overlay)) = (staging.overlay_tmp.take(), &self.overlay) {
            tmp.persist(overlay).map_err(|e| anyhow!("{}: cannot put the overlay in place: {e}", overlay.display()))?;
        }
        Ok(())
    }
}

fn check_overlay(overlay: &Path, out: &Path, existing_out: &Existing, inputs: &[&Path]) -> anyhow::Result<PathBuf> {
    let name = overlay.display();
    if overlay.file_name().is_none() || overlay.parent().is_none() {
        return Err(bad_input(format!("{name}: --overlay must name a video file")));
    }
    if overlay.starts_with(out) {
        return Err(bad_input(format!("{name}: --overlay lies inside --out {}; put it next to it", out.display())));
    }
    for input in inputs {
        let input = normal(input)?;
        if overlay == input || overlay.starts_with(&input) {
            return Err(bad_input(format!("{name}: --overlay is or lies inside the input {}", input.display())));
        }
    }
    // Whether FFmpeg has a container for its extension is `media::overlay::check_target`'s.
    let parent = overlay.parent().unwrap();
    if !parent.is_dir() {
        return Err(bad_input(format!("{name}: the overlay's folder {} does not exist", parent.display())));
    }
    match std::fs::symlink_metadata(overlay) {
        Err(_) => Ok(overlay.to_path_buf()),
        Ok(m) if !m.file_type().is_file() => {
            Err(bad_input(format!("{name}: --overlay exists and is not a regular file; sam2-tui will not replace it")))
        }
        Ok(_) => {
            let ours = matches!(existing_out, Existing::Ours(Marker { overlay: Some(s), .. }) if FileStamp::of(overlay).as_ref() == Some(s));
            if ours {
                Ok(overlay.to_path_buf())
            } else {
                Err(bad_input(format!(
                    "{name}: --overlay exists and is not the overlay of the output being replaced; sam2-tui will not overwrite it"
                )))
            }
        }
    }
}

/// A run's outputs while they are written.
pub struct Staging {
    dir: tempfile::TempDir,
    marker: Marker,
    overlay_tmp: Option<tempfile::TempPath>,
}

impl Staging {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The temp file the overlay video is written to (renamed into place by `publish`).
    pub fn overlay_path(&self) -> Option<&Path> {
        self.overlay_tmp.as_deref()
    }
}

/// Removes `<prefix><pid>@<host>-…` entries in `dir` whose process is gone (on this host:
/// another host's runs in a shared folder are left alone). Only names sam2-tui
/// makes are touched, and a staging folder only when it holds the marker (or nothing).
fn sweep(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(owner) = name.strip_prefix(prefix).and_then(|r| r.split('-').next()) else { continue };
        if !sam2_api::util::owner_gone(owner) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let removed = if meta.is_dir() {
            if read_marker(&path).is_some() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_dir(&path) // empty: the run died before writing its marker
            }
        } else if meta.is_file() && prefix == OVERLAY_PREFIX {
            std::fs::remove_file(&path)
        } else {
            continue;
        };
        match removed {
            Ok(()) => tracing::info!("removed {} left by an interrupted run", path.display()),
            Err(e) => tracing::warn!("{}: left in place: {e}", path.display()),
        }
    }
}

fn cstr(p: &Path) -> anyhow::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| anyhow!("{}: path holds a NUL byte", p.display()))
}

/// Swaps two paths in one step: each then names what the other named.
fn exchange(a: &Path, b: &Path) -> anyhow::Result<()> {
    let (ca, cb) = (cstr(a)?, cstr(b)?);
    #[cfg(target_os = "linux")]
    // SAFETY: both are valid NUL-terminated paths that live across the call.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    #[cfg(target_os = "macos")]
    // SAFETY: as above.
    let r = unsafe { libc::renamex_np(ca.as_ptr(), cb.as_ptr(), libc::RENAME_SWAP) };
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    let r: i32 = {
        let _ = (&ca, &cb);
        -1
    };
    if r != 0 {
        return Err(anyhow!("{}: cannot swap the new output in: {}", b.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Renames `from` to `to`, failing if `to` appeared in the meantime.
fn rename_no_replace(from: &Path, to: &Path) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let (cf, ct) = (cstr(from)?, cstr(to)?);
        // SAFETY: both are valid NUL-terminated paths that live across the call.
        let r = unsafe {
            libc::renameat2(libc::AT_FDCWD, cf.as_ptr(), libc::AT_FDCWD, ct.as_ptr(), libc::RENAME_NOREPLACE)
        };
        if r != 0 {
            return Err(anyhow!(
                "{}: cannot put the output in place: {}",
                to.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        anyhow::ensure!(
            std::fs::symlink_metadata(to).is_err(),
            "{}: appeared while the run was writing; not replaced",
            to.display()
        );
        std::fs::rename(from, to).map_err(|e| anyhow!("{}: cannot put the output in place: {e}", to.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_bad_input(e: &anyhow::Error) -> bool {
        sam2_api::util::exit::code_of(e) == sam2_api::util::exit::BAD_INPUT
    }

    #[test]
    fn an_output_folder_is_replaced_whole_and_only_when_sam2_tui_wrote_it() {
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("clip.mp4");
        std::fs::write(&input, b"video").unwrap();
        let out = t.path().join("out");
        for round in 0..2 {
            let target = OutputTarget::check(&out, None, &[&input]).unwrap();
            let staging = target.stage().unwrap();
            std::fs::write(staging.path().join("masks.json"), format!("round {round}")).unwrap();
            target.publish(staging).unwrap();
            assert_eq!(std::fs::read_to_string(out.join("masks.json")).unwrap(), format!("round {round}"));
        }
        let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "only the input and the output remain: {left:?}");
        // A file of the user's inside it makes it the user's.
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        let e = OutputTarget::check(&out, None, &[&input]).unwrap_err();
        assert!(is_bad_input(&e) && e.to_string().contains("notes.txt"), "{e}");
    }

    #[test]
    fn folders_files_and_links_that_sam2_tui_did_not_write_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("clip.mp4");
        std::fs::write(&input, b"video").unwrap();
        let users = t.path().join("photos");
        std::fs::create_dir(&users).unwrap();
        std::fs::write(users.join("a.jpg"), b"x").unwrap();
        let file = t.path().join("report.txt");
        std::fs::write(&file, b"x").unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&users, &link).unwrap();
        for out in [&users, &file, &link, &input] {
            let e = OutputTarget::check(out, None, &[&input]).unwrap_err();
            assert!(is_bad_input(&e), "{}: {e}", out.display());
        }
        assert!(users.join("a.jpg").exists() && file.exists() && input.exists());
        // An empty folder holds nothing to lose.
        let empty = t.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let target = OutputTarget::check(&empty, None, &[&input]).unwrap();
        target.publish(target.stage().unwrap()).unwrap();
        assert!(empty.join(MARKER).exists());
    }

    #[test]
    fn an_out_that_is_holds_or_lies_inside_the_input_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let frames = t.path().join("frames");
        std::fs::create_dir(&frames).unwrap();
        for out in [frames.clone(), t.path().to_path_buf(), frames.join("masks"), frames.join("..").join("frames")] {
            let e = OutputTarget::check(&out, None, &[&frames]).unwrap_err();
            assert!(is_bad_input(&e), "{}: {e}", out.display());
        }
        assert!(is_bad_input(&OutputTarget::check(Path::new("/"), None, &[&frames]).unwrap_err()));
    }

    #[test]
    fn an_existing_overlay_is_replaced_only_when_the_replaced_output_wrote_it() {
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("clip.mp4");
        std::fs::write(&input, b"video").unwrap();
        let out = t.path().join("out");
        let overlay = t.path().join("overlay.mp4");
        std::fs::write(&overlay, b"the user's video").unwrap();
        assert!(is_bad_input(&OutputTarget::check(&out, Some(&overlay), &[&input]).unwrap_err()));
        assert!(is_bad_input(&OutputTarget::check(&out, Some(&input), &[&input]).unwrap_err()));
        std::fs::remove_file(&overlay).unwrap();
        for round in 0..2 {
            let target = OutputTarget::check(&out, Some(&overlay), &[&input]).unwrap();
            let staging = target.stage().unwrap();
            std::fs::write(staging.overlay_path().unwrap(), format!("overlay {round}")).unwrap();
            target.publish(staging).unwrap();
            assert_eq!(std::fs::read_to_string(&overlay).unwrap(), format!("overlay {round}"));
        }
        // Changed by someone since: no longer ours to replace.
        std::fs::write(&overlay, b"edited by the user").unwrap();
        assert!(is_bad_input(&OutputTarget::check(&out, Some(&overlay), &[&input]).unwrap_err()));
    }

    #[test]
    fn what_a_dead_run_left_is_swept_and_a_live_runs_staging_is_not() {
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("clip.mp4");
        std::fs::write(&input, b"video").unwrap();
        // A pid that is not running: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = t.path().join(format!("{STAGING_PREFIX}{dead}-abc"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join(MARKER), b"{\"written_by\":\"sam2-tui\"}").unwrap();
        std::fs::write(stale.join("masks.json"), b"{}").unwrap();
        let live = t.path().join(format!("{STAGING_PREFIX}1-abc")); // pid 1 is always alive
                                                                    // Another machine's run writing into the same shared folder (a cluster's tasks).
        let elsewhere = t.path().join(format!("{STAGING_PREFIX}{dead}@another_node-abc"));
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join(MARKER), b"{\"written_by\":\"sam2-tui\"}").unwrap();
        std::fs::create_dir(&live).unwrap();
        let not_ours = t.path().join(format!("{STAGING_PREFIX}{dead}-user"));
        std::fs::create_dir(&not_ours).unwrap();
        std::fs::write(not_ours.join("keep.txt"), b"x").unwrap();
        let target = OutputTarget::check(&t.path().join("out"), None, &[&input]).unwrap();
        let staging = target.stage().unwrap();
        assert!(!stale.exists(), "a dead run's staging is swept");
        assert!(live.exists(), "a live run's staging is left alone");
        assert!(elsewhere.exists(), "a run on another host is not judged by a pid of this one");
        assert!(not_ours.join("keep.txt").exists(), "a folder without the marker is not ours");
        drop(staging);
    }
}
