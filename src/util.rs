//! Small helpers shared by every layer.
use std::io::Write;
use std::path::Path;

/// Writes a file so that readers never see it half-written: temp file in the same
/// directory, fsync, rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_and_rename(path, bytes, true)
}

/// As `atomic_write`, without flushing to the disk: the file is whole after a crash of
/// this process (the page cache has it), only an OS crash or power loss can lose it. For
/// per-frame state whose flush would otherwise cost a disk round trip every frame.
pub fn atomic_write_unflushed(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_and_rename(path, bytes, false)
}

fn write_and_rename(path: &Path, bytes: &[u8], flush: bool) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: cannot create directory: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create temp file: {e}", dir.display()))?;
    tmp.write_all(bytes).map_err(|e| anyhow::anyhow!("{}: write failed: {e}", path.display()))?;
    if flush {
        tmp.as_file().sync_all().ok();
    }
    tmp.persist(path).map_err(|e| anyhow::anyhow!("{}: cannot rename into place: {e}", path.display()))?;
    Ok(())
}

/// "no such file" rather than "No such file or directory (os error 2)".
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// What the user gave (a file, a flag, a prompt) is wrong, as opposed to a run that
/// failed. Every command exits 2 for these and 1 for a failed run (README, "Exit codes");
/// wrap the one-line message with `bad_input` where the input is judged.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// An error that makes the command exit 2 (bad input or usage).
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(message.into()))
}

/// Marks an error as bad input, keeping its one-line message (for errors judged at a
/// boundary such as opening the input, where every failure is the input's).
pub fn as_bad_input(e: anyhow::Error) -> anyhow::Error {
    if exit::code_of(&e) == exit::BAD_INPUT {
        e
    } else {
        bad_input(format!("{e:#}"))
    }
}

/// Exit codes, one scheme for every command.
pub mod exit {
    pub const OK: i32 = 0;
    /// The run failed (the engine gave up, an output could not be written, …).
    pub const FAILED: i32 = 1;
    /// Bad input or usage: nothing was run, nothing was written.
    pub const BAD_INPUT: i32 = 2;
    /// Stopped by SIGINT / SIGTERM (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: i32 = 130;

    /// The code for an error that ended a command.
    pub fn code_of(e: &anyhow::Error) -> i32 {
        if e.chain().any(|c| c.is::<super::Interrupted>()) {
            INTERRUPTED
        } else if e.chain().any(|c| c.is::<super::BadInput>()) {
            BAD_INPUT
        } else {
            FAILED
        }
    }
}

/// The command was stopped by SIGINT, SIGTERM or SIGHUP (exit code 130); what it had
/// started writing is gone.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted; nothing was written")
    }
}

impl std::error::Error for Interrupted {}

/// Whether process `pid` exists (for telling a live run's files from a dead one's).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
