//! Session folders (a journal and its memory bank) under the data directory
//! (`~/.local/share/sam2-tui/sessions/` on Linux): the console's, kept so that a session
//! can be resumed until the user prunes it, and one-shot runs' (`segment` without
//! `--session-dir`), removed when the run ends and swept by a later run if it was killed.
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// In a one-shot run's folder: the pid of the run that owns it.
const ONE_SHOT: &str = ".one-shot";

/// Where session folders go by default.
pub fn root() -> PathBuf {
    super::options::default_session_dir().parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Before its rename into place, a one-shot folder is `.staging.<owner>.<name>`: a run
/// killed before the rename leaves a folder whose name says whose it was.
const STAGING: &str = ".staging.";

/// Makes `dir` as belonging to this process only, for as long as it runs (an existing
/// `dir` is marked in place). A new folder appears with its mark already inside: a run
/// killed at any instant leaves nothing the sweep cannot tell from a kept session.
pub fn mark_one_shot(dir: &Path) -> anyhow::Result<()> {
    let cannot = |e: std::io::Error| anyhow::anyhow!("{}: cannot create session directory: {e}", dir.display());
    let owner = sam2_api::util::owner_tag();
    if dir.is_dir() {
        return sam2_api::util::atomic_write(&dir.join(ONE_SHOT), owner.as_bytes());
    }
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        anyhow::bail!("{}: not a folder a session can have", dir.display());
    };
    std::fs::create_dir_all(parent).map_err(cannot)?;
    let staging = parent.join(format!("{STAGING}{owner}.{}", name.to_string_lossy()));
    std::fs::create_dir(&staging).map_err(cannot)?;
    sam2_api::util::atomic_write(&staging.join(ONE_SHOT), owner.as_bytes())?;
    std::fs::rename(&staging, dir).map_err(cannot)
}

/// The owner a staging folder's name carries (see `STAGING`).
fn staging_owner(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let (tag, _) = name.strip_prefix(STAGING)?.split_once('.')?;
    tag.split('@').next()?.parse::<i32>().ok()?;
    Some(tag.to_string())
}

/// `<pid>@<host>` (or a bare pid, as written before hosts were recorded).
fn one_shot_owner(dir: &Path) -> Option<String> {
    let tag = std::fs::read_to_string(dir.join(ONE_SHOT)).ok()?.trim().to_string();
    tag.split('@').next()?.parse::<i32>().ok()?;
    Some(tag)
}

/// Removes a folder made by `mark_one_shot` (and nothing else).
pub fn remove_one_shot(dir: &Path) {
    if one_shot_owner(dir).is_some() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!("{}: cannot remove this run's session folder: {e}", dir.display());
        }
    }
}

/// Removes the one-shot folders under `root` whose run is no longer alive.
pub fn sweep_one_shot(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let dir = e.path();
        // A data directory in a shared home is seen by every node: judge only this host's.
        if one_shot_owner(&dir).is_some_and(|owner| sam2_api::util::owner_gone(&owner)) {
            remove_one_shot(&dir);
        } else if staging_owner(&dir).is_some_and(|owner| sam2_api::util::owner_gone(&owner)) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("{}: cannot remove a killed run's unfinished session folder: {e}", dir.display());
            }
        }
    }
}

/// A kept session folder.
#[derive(Clone, Debug, PartialEq)]
pub struct KeptSession {
    pub path: PathBuf,
    pub bytes: u64,
    /// When its journal last changed.
    pub modified: SystemTime,
    pub ops: usize,
}

fn size_of(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(path).map(|es| es.flatten().map(|e| size_of(&e.path())).sum()).unwrap_or(0)
        }
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// The session folders under `root` (those with a journal, not owned by a live one-shot
/// run), oldest first.
pub fn list(root: &Path) -> Vec<KeptSession> {
    let Ok(entries) = std::fs::read_dir(root) else { return vec![] };
    let mut out: Vec<KeptSession> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let journal = path.join("journal.json");
            let modified = std::fs::metadata(&journal).ok()?.modified().ok()?;
            if one_shot_owner(&path).is_some_and(|owner| !sam2_api::util::owner_gone(&owner)) {
                return None;
            }
            let ops = sam2_api::session::Journal::load(&journal).map(|j| j.ops.len()).unwrap_or(0);
            Some(KeptSession { bytes: size_of(&path), path, modified, ops })
        })
        .collect();
    out.sort_by_key(|s| s.modified);
    out
}

/// Removes the kept sessions whose journal has not changed for `older_than` (all of them
/// with zero); returns what was (or, with `dry_run`, would be) removed.
pub fn prune(root: &Path, older_than: Duration, dry_run: bool) -> anyhow::Result<Vec<KeptSession>> {
    let now = SystemTime::now();
    let old: Vec<KeptSession> =
        list(root).into_iter().filter(|s| now.duration_since(s.modified).unwrap_or_default() >= older_than).collect();
    if !dry_run {
        for s in &old {
            std::fs::remove_dir_all(&s.path)
                .map_err(|e| anyhow::anyhow!("{}: cannot remove: {e}", s.path.display()))?;
        }
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(root: &Path, name: &str) -> PathBuf {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("bank-0")).unwrap();
        std::fs::write(d.join("journal.json"), br#"{"version":1,"ops":[{"op":"reset"}]}"#).unwrap();
        std::fs::write(d.join("bank-0/state.json"), b"[]").unwrap();
        d
    }

    #[test]
    fn a_killed_one_shot_runs_folder_is_swept_and_kept_sessions_are_not() {
        let t = tempfile::tempdir().unwrap();
        let kept = session(t.path(), "kept");
        let killed = session(t.path(), "killed");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        std::fs::write(killed.join(ONE_SHOT), child.id().to_string()).unwrap();
        child.wait().unwrap();
        let elsewhere = session(t.path(), "elsewhere");
        std::fs::write(elsewhere.join(ONE_SHOT), format!("{}@another_node", child.id())).unwrap();
        let mine = session(t.path(), "mine");
        mark_one_shot(&mine).unwrap();
        sweep_one_shot(t.path());
        assert!(!killed.exists());
        assert!(kept.exists() && mine.exists());
        assert!(elsewhere.exists(), "a run on another host sharing this data directory is not swept");
        let listed: Vec<PathBuf> = list(t.path()).into_iter().map(|s| s.path).collect();
        assert_eq!(listed, vec![kept.clone()], "a live run's folder is not offered for pruning");
        remove_one_shot(&kept);
        assert!(kept.exists(), "only one-shot folders are removed as such");
    }

    #[test]
    fn a_one_shot_folder_appears_with_its_mark_and_a_run_killed_before_that_leaves_only_what_the_sweep_takes() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("sessions/123-456-0");
        mark_one_shot(&dir).unwrap();
        assert!(one_shot_owner(&dir).is_some(), "marked");
        let names: Vec<String> = std::fs::read_dir(t.path().join("sessions"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["123-456-0"], "no staging folder is left");
        // Killed between making its staging folder and the rename, at any point.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = format!("{}@{}", child.id(), sam2_api::util::this_host());
        child.wait().unwrap();
        let root = t.path().join("sessions");
        let killed = root.join(format!("{STAGING}{dead}.777-888-0"));
        std::fs::create_dir(&killed).unwrap();
        std::fs::write(killed.join(".tmpXYZ"), b"half a mark").unwrap();
        let elsewhere = root.join(format!("{STAGING}{}@another_node.1-2-0", child.id()));
        std::fs::create_dir(&elsewhere).unwrap();
        let live = root.join(format!("{STAGING}{}.3-4-0", sam2_api::util::owner_tag()));
        std::fs::create_dir(&live).unwrap();
        sweep_one_shot(&root);
        assert!(!killed.exists(), "a killed run's staging folder is swept");
        assert!(elsewhere.exists() && live.exists(), "another host's, or a live run's, is not");
        assert!(dir.exists(), "a live run's folder is not");
    }

    #[test]
    fn pruning_removes_only_sessions_older_than_asked() {
        let t = tempfile::tempdir().unwrap();
        let s = session(t.path(), "s");
        std::fs::create_dir(t.path().join("not-a-session")).unwrap();
        assert!(prune(t.path(), Duration::from_secs(3600), false).unwrap().is_empty());
        let would = prune(t.path(), Duration::ZERO, true).unwrap();
        assert_eq!(would.len(), 1);
        assert!(s.exists(), "a dry run removes nothing");
        assert_eq!(would[0].ops, 1);
        prune(t.path(), Duration::ZERO, false).unwrap();
        assert!(!s.exists() && t.path().join("not-a-session").exists());
    }
}
