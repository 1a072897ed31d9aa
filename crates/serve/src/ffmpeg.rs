//! Running the `ffmpeg` CLI (uploads are transcoded and sessions' frames extracted with it,
//! as the official backend does): no stdin, killed with the request that started it, and
//! its last line of complaint as the error a user reads.
use std::path::Path;
use std::process::Stdio;

/// Runs `command` (an `ffmpeg` invocation of `program`) to its end. Errors read
/// `cannot run …` when it could not start, `{failure}: <ffmpeg's last stderr line>` when it
/// failed.
pub async fn run(program: &Path, mut command: tokio::process::Command, failure: &str) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr);
    let last = why.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    Err(format!("{failure}: {last}"))
}
