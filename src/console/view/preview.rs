//! The preview pane. With a decoded frame it shows the image the preview worker composited
//! and encoded off the UI thread. Without one (no video yet, decoder unavailable, or the
//! image still on its way) it draws a schematic: the frame outline, masks as shaded cells
//! and the marks as characters — also what the snapshot tests see.
use crate::console::app::App;
use crate::console::layout::fit_cells;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let object = app.selected_object();
    // Frame indices are 0-based everywhere (as in `segment` and the journal): "of N" counts.
    let mut title = format!("frame {} of {}", app.frame, app.frames());
    if let Some(m) = app.media {
        title += &format!(" · cursor ({}, {}) · {}×{}", app.cursor.0 as i64, app.cursor.1 as i64, m.width, m.height);
    }
    title += &format!(" · object {object}");
    if let Some(c) = app.count {
        title += &format!(" · count {c}");
    }
    let block = super::panel(&title, app);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(m) = app.media else {
        let msg = match &app.input {
            Some(p) => format!("opening {} …", p.display()),
            None => "no video: start with `sam2-tui VIDEO`".into(),
        };
        f.render_widget(Paragraph::new(msg).style(Style::default().fg(app.theme.ui.dim.color())), inner);
        return;
    };
    let rect = fit_cells(inner, m.width, m.height, app.font);
    if let Some(img) = fitting_image(app, rect) {
        f.render_widget(ratatui_image::Image::new(&img.protocol), rect);
        return;
    }
    schematic(f.buffer_mut(), rect, app);
}

/// The preview image if it was made for `rect`'s size. One made for another layout (the
/// panels moved since it was asked for) would not be drawn at all if larger, and drawn
/// off-centre if smaller: the schematic stands in until the image for this size comes.
pub fn fitting_image(app: &App, rect: Rect) -> Option<&crate::console::action::PreviewImage> {
    app.preview.as_ref().filter(|img| img.protocol.size() == rect.as_size())
}

/// Video pixel → cell inside `rect`.
fn cell_of(rect: Rect, app: &App, x: f32, y: f32) -> (u16, u16) {
    let m = app.media.unwrap();
    let cx = (x / m.width as f32 * rect.width as f32).floor().clamp(0.0, rect.width as f32 - 1.0) as u16;
    let cy = (y / m.height as f32 * rect.height as f32).floor().clamp(0.0, rect.height as f32 - 1.0) as u16;
    (rect.x + cx, rect.y + cy)
}

fn put(buf: &mut Buffer, (x, y): (u16, u16), ch: &str, fg: Color) {
    if let Some(cell) = buf.cell_mut((x, y)) {
        cell.set_symbol(ch).set_fg(fg);
    }
}

fn outline(buf: &mut Buffer, a: (u16, u16), b: (u16, u16), fg: Color) {
    let (x0, x1) = (a.0.min(b.0), a.0.max(b.0));
    let (y0, y1) = (a.1.min(b.1), a.1.max(b.1));
    for x in x0..=x1 {
        put(buf, (x, y0), "─", fg);
        put(buf, (x, y1), "─", fg);
    }
    for y in y0..=y1 {
        put(buf, (x0, y), "│", fg);
        put(buf, (x1, y), "│", fg);
    }
    put(buf, (x0, y0), "┌", fg);
    put(buf, (x1, y0), "┐", fg);
    put(buf, (x0, y1), "└", fg);
    put(buf, (x1, y1), "┘", fg);
}

fn schematic(buf: &mut Buffer, rect: Rect, app: &App) {
    if rect.width == 0 || rect.height == 0 {
        return;
    }
    let t = &app.theme.ui;
    for y in rect.top()..rect.bottom() {
        for x in rect.left()..rect.right() {
            put(buf, (x, y), "·", t.dim.color());
        }
    }
    // Masks: a cell is shaded when the pixel at its centre is in the mask.
    if let Some(masks) = app.masks.get(&app.frame) {
        for om in masks {
            if om.score <= 0.0 {
                continue;
            }
            let Ok(bits) = om.rle.decode() else { continue };
            let (h, w) = (om.rle.height(), om.rle.width());
            let color = app.theme.object(om.object).color();
            for cy in 0..rect.height {
                for cx in 0..rect.width {
                    let px = (((cx as f32 + 0.5) / rect.width as f32) * w as f32) as usize;
                    let py = (((cy as f32 + 0.5) / rect.height as f32) * h as f32) as usize;
                    if bits.get(py.min(h - 1) * w + px.min(w - 1)) == Some(&1) {
                        put(buf, (rect.x + cx, rect.y + cy), "▒", color);
                    }
                }
            }
        }
    }
    // Prompts on this frame: the selected object's in the positive/negative colours,
    // other objects' in their own colour.
    for ((frame, obj), set) in &app.prompts {
        if *frame != app.frame {
            continue;
        }
        let own = *obj == app.selected_object();
        if let Some(b) = set.bbox {
            let c = if own { t.bbox.color() } else { app.theme.object(*obj).color() };
            outline(buf, cell_of(rect, app, b[0], b[1]), cell_of(rect, app, b[2], b[3]), c);
        }
        for p in &set.points {
            let positive = p.label == 1;
            let c = match (own, positive) {
                (true, true) => t.positive.color(),
                (true, false) => t.negative.color(),
                _ => app.theme.object(*obj).color(),
            };
            put(buf, cell_of(rect, app, p.x, p.y), if positive { "+" } else { "−" }, c);
        }
    }
    if let Some((ax, ay)) = app.box_anchor {
        let a = cell_of(rect, app, ax, ay);
        let b = cell_of(rect, app, app.cursor.0, app.cursor.1);
        outline(buf, a, b, t.bbox.color());
    }
    let c = cell_of(rect, app, app.cursor.0, app.cursor.1);
    let cross = t.crosshair.color();
    for (dx, dy, ch) in [(-2i32, 0i32, "─"), (-1, 0, "─"), (1, 0, "─"), (2, 0, "─"), (0, -1, "│"), (0, 1, "│")]
    {
        let (x, y) = (c.0 as i32 + dx, c.1 as i32 + dy);
        if x >= rect.left() as i32 && x < rect.right() as i32 && y >= rect.top() as i32 && y < rect.bottom() as i32 {
            put(buf, (x as u16, y as u16), ch, cross);
        }
    }
    put(buf, c, "┼", cross);
}
