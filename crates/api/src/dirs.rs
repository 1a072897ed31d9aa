//! Where sam2-tui keeps what it writes for a user across runs: one data folder holding
//! the logs, the session folders (`sessions/`), serve's uploads (`serve-data/`) and
//! downloaded weights (`weights/`). `SAM2_TUI_DATA` moves all of it (a scratch disk, a
//! test's own folder); otherwise it is the platform's (`$XDG_DATA_HOME/sam2-tui`,
//! `~/.local/share/sam2-tui` on Linux, `~/Library/Application Support/sam2-tui` on macOS).
use std::path::PathBuf;

/// The data folder (not created here).
pub fn data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("SAM2_TUI_DATA").filter(|v| !v.is_empty()) {
        return PathBuf::from(x);
    }
    directories::ProjectDirs::from("", "", "sam2-tui")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join("sam2-tui"))
}
