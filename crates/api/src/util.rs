//! Small helpers shared by every layer.
use std::io::Write;
use std::path::Path;

/// Writes a file so that readers never see it half-written: temp file in the same
/// directory, fsync, rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_and_rename(path, &[bytes], true)
}

/// As `atomic_write`, without flushing to the disk: the file is whole after a crash of
/// this process (the page cache has it), only an OS crash or power loss can lose it. For
/// per-frame state whose flush would otherwise cost a disk round trip every frame.
pub fn atomic_write_unflushed(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_and_rename(path, &[bytes], false)
}

/// As `atomic_write_unflushed` for a file made of several parts, written one after
/// another (no buffer joins them first).
pub fn atomic_write_parts_unflushed(path: &Path, parts: &[&[u8]]) -> anyhow::Result<()> {
    write_and_rename(path, parts, false)
}

fn write_and_rename(path: &Path, parts: &[&[u8]], flush: bool) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: cannot create directory: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create temp file: {e}", dir.display()))?;
    for bytes in parts {
        tmp.write_all(bytes).map_err(|e| anyhow::anyhow!("{}: write failed: {e}", path.display()))?;
    }
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

/// Who owns a run's temporary files: `<pid>@<host>`. Folders next to `--out` and session
/// folders may sit on a file system that several machines share (a cluster's array tasks
/// writing into one `--out`); a pid says nothing about a process on another host.
pub fn owner_tag() -> String {
    format!("{}@{}", std::process::id(), this_host())
}

/// This machine's name, with anything but letters, digits and '_' made '_' (it goes into
/// file names that are split on '-').
pub fn this_host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = if ok { String::from_utf8_lossy(&buf[..end]).into_owned() } else { String::new() };
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Whether the owner named by `tag` (`<pid>@<host>`, or a bare `<pid>` from before hosts
/// were recorded) is known to be gone: its pid no longer runs on this host. An owner on
/// another host is never taken for gone.
pub fn owner_gone(tag: &str) -> bool {
    let (pid, host) = match tag.split_once('@') {
        Some((p, h)) => (p, Some(h)),
        None => (tag, None),
    };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    if host.is_some_and(|h| h != this_host()) || pid <= 0 || pid == std::process::id() as i32 {
        return false;
    }
    !process_alive(pid)
}

#[cfg(test)]
mod owner_tests {
    use super::*;

    #[test]
    fn a_dead_pid_here_is_gone_and_the_same_pid_on_another_host_is_not() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(owner_gone(&dead.to_string()));
        assert!(owner_gone(&format!("{dead}@{}", this_host())));
        assert!(!owner_gone(&format!("{dead}@another_node")), "a process on another node may well be running");
        assert!(!owner_gone(&owner_tag()), "this process is not gone");
        assert!(!owner_gone("1"), "pid 1 runs");
        assert!(!this_host().contains('-') && !this_host().contains('@'));
    }
}
