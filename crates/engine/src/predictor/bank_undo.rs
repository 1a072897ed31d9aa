//! The undo log of the memory bank: what one journal op changed on disk, so that the op
//! can be taken back whole.
//!
//! Why: a worker that dies in the middle of a click (add_prompt, clear_frame,
//! remove_object, reset) leaves the bank half-way through that op. The supervisor sends
//! the op again to a fresh worker, and that worker must start from the bank as it was
//! before the op — otherwise the dead worker's mask for the clicked frame is fed back as
//! the click's mask input and the replay becomes a correction (different masks from a
//! run without the crash). The same holds when the op finished but the supervisor never
//! heard so: it resends, so the op's effects must go.
//!
//! Layout under `<bank>/undo/`:
//! - `op.json`: `{"seq": N, "committed": bool}` of the op this log belongs to;
//! - per change `k` (in order): `k.rec`, a JSON record `{"path": P, "existed": bool}`
//!   written (durably, in the page cache) BEFORE P is touched, and `k.old`, the previous
//!   version of P (a hard link for a file, the directory itself for a removed directory).
//!
//! Rolling back walks the records newest first: a record whose `k.old` exists puts it
//! back at P; one for a path that did not exist removes P; one whose `k.old` is missing
//! although P existed was written just before a crash that came before the change, so P
//! is untouched. Only paths inside the bank are ever touched.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(serde::Serialize, serde::Deserialize)]
struct OpRecord {
    seq: u64,
    committed: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Change {
    /// Relative to the bank directory.
    path: PathBuf,
    existed: bool,
}

/// The open log of the op in flight.
pub struct UndoLog {
    bank: PathBuf,
    seq: u64,
    saved: HashSet<PathBuf>,
    next: usize,
}

/// The op a bank's undo log belongs to, and whether it ran to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedOp {
    pub seq: u64,
    pub committed: bool,
}

fn dir(bank: &Path) -> PathBuf {
    bank.join("undo")
}

fn io(what: &str, path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("{}: cannot {what}: {e}", path.display())
}

impl UndoLog {
    /// Starts the log of op `seq`, dropping the previous op's (that op is acknowledged:
    /// the supervisor only sends an op once the one before it is done).
    pub fn begin(bank: &Path, seq: u64) -> anyhow::Result<UndoLog> {
        discard(bank)?;
        let d = dir(bank);
        std::fs::create_dir_all(&d).map_err(|e| io("create the undo log", &d, e))?;
        write_op(bank, OpRecord { seq, committed: false })?;
        Ok(UndoLog { bank: bank.to_path_buf(), seq, saved: HashSet::new(), next: 0 })
    }

    /// Keeps the current version of `path` (a file or directory inside the bank) before
    /// it is overwritten or removed. Later changes to the same path in this op need no
    /// second copy: the first one is the version from before the op.
    pub fn preserve(&mut self, path: &Path) -> anyhow::Result<()> {
        let rel = path
            .strip_prefix(&self.bank)
            .map_err(|_| anyhow::anyhow!("{}: outside the memory bank", path.display()))?
            .to_path_buf();
        if !self.saved.insert(rel.clone()) {
            return Ok(());
        }
        let k = self.next;
        self.next += 1;
        let meta = std::fs::symlink_metadata(path).ok();
        let change = Change { path: rel, existed: meta.is_some() };
        let d = dir(&self.bank);
        sam2_api::util::atomic_write_unflushed(&d.join(format!("{k}.rec")), &serde_json::to_vec(&change)?)?;
        match meta {
            Some(m) if m.is_dir() => {
                // Removing a directory is moving it here: the removal and the copy are one rename.
                std::fs::rename(path, d.join(format!("{k}.old"))).map_err(|e| io("move into the undo log", path, e))?;
            }
            Some(_) => {
                std::fs::hard_link(path, d.join(format!("{k}.old"))).map_err(|e| io("keep in the undo log", path, e))?
            }
            None => {}
        }
        Ok(())
    }

    /// The op ran to its end. Its log stays until the next op begins, in case the
    /// supervisor never heard of the end and sends the op again.
    pub fn commit(self) -> anyhow::Result<()> {
        write_op(&self.bank, OpRecord { seq: self.seq, committed: true })
    }
}

fn write_op(bank: &Path, op: OpRecord) -> anyhow::Result<()> {
    sam2_api::util::atomic_write_unflushed(&dir(bank).join("op.json"), &serde_json::to_vec(&op)?)
}

/// The op whose log the bank holds, if any.
pub fn logged(bank: &Path) -> anyhow::Result<Option<LoggedOp>> {
    let p = dir(bank).join("op.json");
    match std::fs::read(&p) {
        Ok(bytes) => {
            let r: OpRecord = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: corrupt undo log: {e}", p.display()))?;
            Ok(Some(LoggedOp { seq: r.seq, committed: r.committed }))
        }
        // A log whose op.json never got written belongs to no op: nothing was changed yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", &p, e)),
    }
}

/// Drops the log without undoing anything.
pub fn discard(bank: &Path) -> anyhow::Result<()> {
    let d = dir(bank);
    match std::fs::remove_dir_all(&d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove the undo log", &d, e)),
    }
}

/// Puts every path the logged op changed back as it was before the op, then drops the log.
pub fn roll_back(bank: &Path) -> anyhow::Result<()> {
    let d = dir(bank);
    let mut records: Vec<usize> = match std::fs::read_dir(&d) {
        Ok(entries) => {
            entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".rec")?.parse().ok()).collect()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("read the undo log", &d, e)),
    };
    records.sort_unstable();
    for k in records.into_iter().rev() {
        let rec = d.join(format!("{k}.rec"));
        let change: Change = serde_json::from_slice(&std::fs::read(&rec).map_err(|e| io("read", &rec, e))?)
            .map_err(|e| anyhow::anyhow!("{}: corrupt undo record: {e}", rec.display()))?;
        anyhow::ensure!(
            change.path.is_relative()
                && !change.path.components().any(|c| matches!(c, std::path::Component::ParentDir)),
            "{}: undo record points outside the bank",
            rec.display()
        );
        let target = bank.join(&change.path);
        let old = d.join(format!("{k}.old"));
        let old_exists = std::fs::symlink_metadata(&old).is_ok();
        if change.existed && !old_exists {
            continue; // the crash came before the change
        }
        remove_any(&target)?;
        if old_exists {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
            }
            std::fs::rename(&old, &target).map_err(|e| io("restore from the undo log", &target, e))?;
        }
    }
    discard(bank)
}

fn remove_any(path: &Path) -> anyhow::Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    r.map_err(|e| io("remove", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("o1")).unwrap();
        std::fs::write(t.path().join("o1/cond-0000000.bin"), b"before").unwrap();
        std::fs::write(t.path().join("state.json"), b"[1]").unwrap();
        t
    }

    fn read(p: &Path) -> Option<Vec<u8>> {
        std::fs::read(p).ok()
    }

    #[test]
    fn rolling_back_restores_overwritten_files_and_removes_new_ones() {
        let t = bank();
        let b = t.path();
        let mut log = UndoLog::begin(b, 3).unwrap();
        for p in [b.join("o1/cond-0000000.bin"), b.join("o1/tempcond-0000005.bin"), b.join("state.json")] {
            log.preserve(&p).unwrap();
            sam2_api::util::atomic_write_unflushed(&p, b"after").unwrap();
        }
        // The same file again in the same op: the first copy (from before the op) counts.
        log.preserve(&b.join("state.json")).unwrap();
        sam2_api::util::atomic_write_unflushed(&b.join("state.json"), b"after again").unwrap();
        assert_eq!(logged(b).unwrap(), Some(LoggedOp { seq: 3, committed: false }));
        roll_back(b).unwrap();
        assert_eq!(read(&b.join("o1/cond-0000000.bin")).as_deref(), Some(&b"before"[..]));
        assert_eq!(read(&b.join("state.json")).as_deref(), Some(&b"[1]"[..]));
        assert!(!b.join("o1/tempcond-0000005.bin").exists());
        assert_eq!(logged(b).unwrap(), None);
    }

    #[test]
    fn a_removed_object_directory_comes_back_with_its_files() {
        let t = bank();
        let b = t.path();
        let mut log = UndoLog::begin(b, 0).unwrap();
        log.preserve(&b.join("o1")).unwrap();
        assert!(!b.join("o1").exists(), "preserving a directory removes it");
        // Recreated in the same op (a reset followed by nothing else would not; an add would).
        let f = b.join("o1/cond-0000009.bin");
        log.preserve(&f).unwrap();
        sam2_api::util::atomic_write_unflushed(&f, b"new").unwrap();
        log.commit().unwrap();
        assert_eq!(logged(b).unwrap(), Some(LoggedOp { seq: 0, committed: true }));
        roll_back(b).unwrap();
        assert_eq!(read(&b.join("o1/cond-0000000.bin")).as_deref(), Some(&b"before"[..]));
        assert!(!f.exists());
    }

    #[test]
    fn a_record_written_just_before_a_crash_leaves_its_path_alone() {
        let t = bank();
        let b = t.path();
        let _log = UndoLog::begin(b, 1).unwrap();
        // What `preserve` writes first; the crash comes before the hard link and the change.
        let change = Change { path: "o1/cond-0000000.bin".into(), existed: true };
        std::fs::write(dir(b).join("0.rec"), serde_json::to_vec(&change).unwrap()).unwrap();
        roll_back(b).unwrap();
        assert_eq!(read(&b.join("o1/cond-0000000.bin")).as_deref(), Some(&b"before"[..]));
    }

    #[test]
    fn beginning_the_next_op_forgets_the_last_one() {
        let t = bank();
        let b = t.path();
        let mut log = UndoLog::begin(b, 0).unwrap();
        log.preserve(&b.join("state.json")).unwrap();
        std::fs::write(b.join("state.json"), b"op 0").unwrap();
        log.commit().unwrap();
        let _next = UndoLog::begin(b, 1).unwrap();
        roll_back(b).unwrap();
        assert_eq!(read(&b.join("state.json")).as_deref(), Some(&b"op 0"[..]));
    }
}
