//! Logs go to a file in the data directory: nothing may print to the terminal while the
//! dashboard owns it.
use std::path::{Path, PathBuf};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

pub const LOG_FILE: &str = "sam2-tui.log";

/// Starts file logging under `dir`; keep the guard alive until exit (it flushes on drop).
/// `RUST_LOG` wins over `level`. Returns the log file's path.
pub fn init(dir: &Path, level: &str) -> anyhow::Result<(WorkerGuard, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: cannot create log directory: {e}", dir.display()))?;
    let appender = tracing_appender::rolling::never(dir, LOG_FILE);
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .map_err(|e| anyhow::anyhow!("bad log level '{level}': {e}"))?;
    // A second init (tests, or a library user that set one up) keeps the existing one.
    let _ = tracing_subscriber::fmt().with_writer(writer).with_ansi(false).with_env_filter(filter).try_init();
    Ok((guard, dir.join(LOG_FILE)))
}
