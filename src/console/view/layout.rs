//! Where each panel goes. Shared by the view and by click handling (a click is mapped to
//! video pixels through the same rectangles the screen was drawn with).
use crate::console::app::App;
use ratatui::layout::{Constraint, Layout, Rect};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    pub header: Rect,
    pub preview: Rect,
    /// Inside the preview's border: where the image goes.
    pub preview_inner: Rect,
    pub device: Rect,
    pub performance: Rect,
    pub objects: Rect,
    pub timeline: Rect,
    pub log: Rect,
    pub hints: Rect,
}

pub fn areas(area: Rect, app: &App) -> Areas {
    let banner = app.engine.model.as_ref().is_some_and(|m| m.random_init);
    let header_h = if banner { 2 } else { 1 };
    let log_h = if area.height >= 40 { 9 } else { 5 };
    let [header, middle, timeline, log, hints] = Layout::vertical([
        Constraint::Length(header_h),
        Constraint::Min(6),
        Constraint::Length(4),
        Constraint::Length(log_h),
        Constraint::Length(1),
    ])
    .areas(area);
    let side_w = (area.width * 2 / 5).clamp(30.min(area.width), 64);
    let [preview, side] = Layout::horizontal([Constraint::Min(10), Constraint::Length(side_w)]).areas(middle);
    let [device, performance, objects] =
        Layout::vertical([Constraint::Length(5), Constraint::Length(9), Constraint::Min(3)]).areas(side);
    let preview_inner = Rect::new(
        preview.x + 1,
        preview.y + 1,
        preview.width.saturating_sub(2),
        preview.height.saturating_sub(2),
    );
    Areas { header, preview, preview_inner, device, performance, objects, timeline, log, hints }
}
