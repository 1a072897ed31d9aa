//! The log pane: supervisor events and errors, newest at the bottom.
use crate::console::app::App;
use crate::supervisor::events::LogLevel;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let block = super::panel("log", app);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let t = &app.theme.ui;
    let n = inner.height as usize;
    let skip = app.log.len().saturating_sub(n);
    let lines: Vec<Line> = app
        .log
        .iter()
        .skip(skip)
        .map(|l| {
            let (tag, c) = match l.level {
                LogLevel::Info => ("info ", t.dim),
                LogLevel::Warn => ("warn ", t.warn),
                LogLevel::Error => ("error", t.error),
            };
            Line::from(format!("{tag} {}", l.message)).style(Style::default().fg(c.color()))
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}
