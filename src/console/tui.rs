//! Entering and leaving the terminal's full-screen mode, and a panic hook that leaves it
//! before the panic message is printed (and says where the log is).
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{stdout, Stdout};
use std::path::PathBuf;

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// Restores the terminal when dropped, also on an early return.
pub struct Tui {
    pub terminal: Term,
    mouse: bool,
}

pub fn enter(mouse: bool) -> anyhow::Result<Tui> {
    enable_raw_mode()
        .map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode (is stdin a terminal?): {e}"))?;
    let mut out = stdout();
    execute!(out, EnterAlternateScreen, cursor::Hide)?;
    if mouse {
        execute!(out, EnableMouseCapture)?;
    }
    let terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
    Ok(Tui { terminal, mouse })
}

/// Leaves full-screen mode. Safe to call more than once.
pub fn restore(mouse: bool) {
    let mut out = stdout();
    if mouse {
        let _ = execute!(out, DisableMouseCapture);
    }
    let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
    let _ = disable_raw_mode();
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore(self.mouse);
    }
}

/// On panic: restore the terminal first so the message is readable, then point at the log.
pub fn install_panic_hook(mouse: bool, log_path: PathBuf) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore(mouse);
        tracing::error!(target: "console", "panic: {info}");
        eprintln!("sam2-tui: the console crashed; the log is at {}", log_path.display());
        previous(info);
    }));
}
