//! The headless log: one line per request and per worker event, on stderr, with the
//! local wall-clock time (UTC, no dependency for time zones).
use std::io::Write;

/// Writes one line: `HH:MM:SS.mmm serve: <text>`.
pub fn line(text: String) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let text = text.replace('\n', " ");
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{h:02}:{m:02}:{s:02}.{:03} serve: {text}", now.subsec_millis());
}
