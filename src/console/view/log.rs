//! The log pane: supervisor events and errors, newest at the bottom.
use crate::console::app::App;
use crate::supervisor::events::LogLevel;
use ratatui::layout::Rect;
use ratatui::style::Style;
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
    let (n, w) = (inner.height as usize, (inner.width as usize).max(1));
    // Long lines wrap (a path or an error's cause must be readable whole); the newest rows
    // are the ones shown.
    let mut rows: Vec<Line> = vec![];
    for l in app.log.iter().rev().skip(app.log_back) {
        let (tag, c) = match l.level {
            LogLevel::Info => ("info ", t.dim),
            LogLevel::Warn => ("warn ", t.warn),
            LogLevel::Error => ("error", t.error),
        };
        let text: Vec<char> = format!("{tag} {}", l.message).chars().collect();
        let pieces: Vec<String> = text.chunks(w).map(|c| c.iter().collect()).collect();
        for p in pieces.into_iter().rev() {
            rows.push(Line::from(p).style(Style::default().fg(c.color())));
        }
        if rows.len() >= n {
            break;
        }
    }
    rows.truncate(n);
    rows.reverse();
    f.render_widget(Paragraph::new(rows), inner);
}
