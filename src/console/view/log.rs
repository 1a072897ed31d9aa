//! The log pane: supervisor events and errors, newest at the bottom.
use crate::console::app::App;
use crate::supervisor::events::LogLevel;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let title = if app.log_back > 0 {
        format!("log · {} lines back (pagedown returns)", app.log_back)
    } else {
        "log".to_string()
    };
    let block = super::panel(&title, app);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let t = &app.theme.ui;
    let newest_first = app.log.iter().rev().skip(app.log_back).map(|l| {
        let (tag, c) = match l.level {
            LogLevel::Info => ("info ", t.dim),
            LogLevel::Warn => ("warn ", t.warn),
            LogLevel::Error => ("error", t.error),
        };
        (format!("{tag} {}", l.message), c.color())
    });
    f.render_widget(Paragraph::new(wrapped_tail(newest_first, inner)), inner);
}

/// The rows that fill `area` with the newest entries (given newest first, each a text and
/// its colour), oldest at the top. Long lines wrap: a path or an error's cause must be
/// readable whole. The operator's log draws with it too.
pub fn wrapped_tail(newest_first: impl Iterator<Item = (String, Color)>, area: Rect) -> Vec<Line<'static>> {
    let (n, w) = (area.height as usize, (area.width as usize).max(1));
    let mut rows: Vec<Line> = vec![];
    for (text, color) in newest_first {
        let text: Vec<char> = text.chars().collect();
        let pieces: Vec<String> = text.chunks(w).map(|c| c.iter().collect()).collect();
        for p in pieces.into_iter().rev() {
            rows.push(Line::from(p).style(Style::default().fg(color)));
        }
        if rows.len() >= n {
            break;
        }
    }
    rows.truncate(n);
    rows.reverse();
    rows
}
