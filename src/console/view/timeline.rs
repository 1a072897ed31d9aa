//! The video as one row of cells: prompted frames, tracked frames and the current frame.
use crate::console::app::App;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The timeline row: one character per cell (`◆` prompted, `━` tracked, `─` untouched) and
/// the cell of the current frame.
pub fn cells(app: &App, width: usize) -> (Vec<(char, u8)>, usize) {
    let n = app.frames();
    let width = width.max(1);
    let cell = |frame: usize| (frame * width / n).min(width - 1);
    let mut row = vec![('─', 0u8); width];
    for (&f, masks) in &app.masks {
        if f < n && masks.iter().any(|m| m.score > 0.0) {
            row[cell(f)] = ('━', 1);
        }
    }
    for f in app.prompted_frames() {
        if f < n {
            row[cell(f)] = ('◆', 2);
        }
    }
    (row, cell(app.frame))
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let block = super::panel("timeline", app);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let t = &app.theme.ui;
    let (row, current) = cells(app, inner.width as usize);
    let buf: &mut Buffer = f.buffer_mut();
    for (i, (ch, class)) in row.iter().enumerate() {
        let color = [t.dim, t.tracked, t.prompted][*class as usize].color();
        if let Some(c) = buf.cell_mut((inner.x + i as u16, inner.y)) {
            c.set_char(*ch).set_fg(color);
        }
    }
    if inner.height > 1 {
        let tracked = app.masks.values().filter(|v| v.iter().any(|m| m.score > 0.0)).count();
        let label = format!(
            "▲ {} · prompted {} · tracked {}/{}",
            app.frame,
            app.prompted_frames().len(),
            tracked,
            app.frames()
        );
        let x = (current as u16).min(inner.width.saturating_sub(label.chars().count() as u16));
        let r = Rect::new(inner.x + x, inner.y + 1, inner.width - x, 1);
        f.render_widget(Paragraph::new(Line::from(label)).style(Style::default().fg(t.current.color())), r);
    }
}
