//! Where each panel goes. Shared by the view and by click handling (a click is mapped to
//! video pixels through the same rectangles the screen was drawn with).
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

/// The panels in `area`; `banner` = the random-init warning line under the header.
pub fn areas(area: Rect, banner: bool) -> Areas {
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
    let preview_inner =
        Rect::new(preview.x + 1, preview.y + 1, preview.width.saturating_sub(2), preview.height.saturating_sub(2));
    Areas { header, preview, preview_inner, device, performance, objects, timeline, log, hints }
}

/// The cell rectangle, centred in `area`, that shows a `width`×`height` video at its aspect
/// ratio given the terminal's cell size in pixels. Click mapping and the image both use it.
pub fn fit_cells(area: Rect, width: u32, height: u32, font: (u16, u16)) -> Rect {
    if area.width == 0 || area.height == 0 || width == 0 || height == 0 {
        return Rect::new(area.x, area.y, 0, 0);
    }
    let (fw, fh) = (font.0.max(1) as f64, font.1.max(1) as f64);
    let avail_w = area.width as f64 * fw;
    let avail_h = area.height as f64 * fh;
    let scale = (avail_w / width as f64).min(avail_h / height as f64);
    let cw = ((width as f64 * scale / fw).round() as u16).clamp(1, area.width);
    let ch = ((height as f64 * scale / fh).round() as u16).clamp(1, area.height);
    Rect::new(area.x + (area.width - cw) / 2, area.y + (area.height - ch) / 2, cw, ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_video_fills_the_width_and_keeps_its_aspect() {
        // 16:9 into 80×40 cells of 10×20 px: 800 px wide → 450 px tall → 22.5 cells.
        let r = fit_cells(Rect::new(0, 0, 80, 40), 1920, 1080, (10, 20));
        assert_eq!((r.width, r.height), (80, 23));
        assert_eq!(r.y, (40 - 23) / 2);
    }

    #[test]
    fn a_tall_video_fills_the_height() {
        let r = fit_cells(Rect::new(5, 5, 100, 10), 100, 200, (10, 20));
        assert_eq!(r.height, 10);
        assert_eq!(r.width, 10);
    }
}
