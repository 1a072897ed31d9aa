//! The headless log's lines: one per request and per worker event, on stderr, with the
//! wall-clock time (UTC, no dependency for time zones). Written through
//! `operator::Board::log`, which also keeps them for an operator view.
use std::io::Write;

/// `HH:MM:SS.mmm` now (UTC).
pub fn clock() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", now.subsec_millis())
}

/// Writes one line: `HH:MM:SS.mmm serve: <text>`.
pub fn line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{} serve: {text}", clock());
}
