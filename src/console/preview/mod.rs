//! The preview image: compositing (frame + masks + marks), resizing to the exact cell
//! rectangle, and encoding for the terminal's graphics protocol — all off the UI thread.
//! Requests go through a latest-value channel, so a slow link drops stale frames instead of
//! queueing them, and the preview rate is capped on its own (see `worker`).
pub mod compose;
pub mod probe;
pub mod protocol;
pub mod worker;

use ratatui::layout::Rect;

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
