//! Memory gauges: MPS current/driver allocated against the recommended maximum with the
//! high-watermark line, CUDA allocated/reserved against the total, worker RSS on CPU.
use super::bytes;
use crate::config::theme::UiColors;
use crate::console::app::App;
use crate::supervisor::events::WorkerStats;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// A text gauge `████░░░┃░░` of `width` cells: `used/scale` filled, a mark at `mark/scale`.
pub fn bar(width: usize, used: u64, scale: u64, mark: Option<u64>) -> String {
    if width == 0 || scale == 0 {
        return String::new();
    }
    let filled = ((used as f64 / scale as f64) * width as f64).round().clamp(0.0, width as f64) as usize;
    let mark = mark.map(|m| ((m as f64 / scale as f64) * width as f64).round() as usize).filter(|&m| m < width);
    (0..width)
        .map(|i| match (Some(i) == mark, i < filled) {
            (true, _) => '┃',
            (false, true) => '█',
            (false, false) => '░',
        })
        .collect()
}

pub fn gauge_line<'a>(ui: &UiColors, label: &str, used: u64, scale: u64, mark: Option<u64>, width: u16) -> Line<'a> {
    let pct = if scale > 0 { used as f64 / scale as f64 * 100.0 } else { 0.0 };
    // nvitop's idea: colour by how full it is.
    let color = if pct < 80.0 {
        ui.ok
    } else if pct < 95.0 {
        ui.warn
    } else {
        ui.error
    };
    let text = format!(" {} / {}", bytes(used), bytes(scale));
    let bar_w = (width as usize).saturating_sub(label.len() + text.chars().count() + 2).min(30);
    Line::from(vec![
        Span::raw(format!("{label} ")),
        Span::styled(bar(bar_w, used, scale, mark), Style::default().fg(color.color())),
        Span::raw(text),
    ])
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let dev = app.engine.device.map(|d| d.to_string()).unwrap_or_else(|| "?".into());
    let block = super::panel(&format!("device: {dev}"), app);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let lines = match &app.engine.stats {
        None => {
            vec![Line::from("waiting for the first heartbeat").style(Style::default().fg(app.theme.ui.dim.color()))]
        }
        Some(s) => memory_lines(&app.theme.ui, s, inner.width),
    };
    f.render_widget(Paragraph::new(lines), inner);
}

/// What a worker's heartbeat says of its memory, `width` cells wide: MPS current and
/// driver allocation against the cap, CUDA allocated and reserved against the card, or
/// the worker's RSS on the CPU (the console's device panel and `serve`'s operator view).
pub fn memory_lines(ui: &UiColors, s: &WorkerStats, w: u16) -> Vec<Line<'static>> {
    let mut lines = vec![];
    if let Some(m) = &s.mps {
        // Scale to the hard cap (ratio × recommended max) so the bar ends where
        // allocation fails; the mark shows the recommended max itself.
        let ratio = m.high_watermark_ratio.filter(|r| *r > 0.0).unwrap_or(1.0).max(1.0);
        let cap = (m.recommended_max as f64 * ratio as f64) as u64;
        lines.push(gauge_line(ui, "mps ", m.current_allocated, cap, Some(m.recommended_max), w));
        lines.push(gauge_line(ui, "drv ", m.driver_allocated, cap, Some(m.recommended_max), w));
        let hw = m.high_watermark_ratio.map(|r| format!("{r}")).unwrap_or_else(|| "default".into());
        lines
            .push(Line::from(format!("┃ recommended max · watermark {hw}")).style(Style::default().fg(ui.dim.color())));
    } else if let Some(c) = &s.cuda {
        lines.push(gauge_line(ui, "alloc", c.allocated, c.total, None, w));
        lines.push(gauge_line(ui, "resv ", c.reserved, c.total, None, w));
        lines.push(
            Line::from(format!("peak {} · driver used {}", bytes(c.peak_allocated), bytes(c.used)))
                .style(Style::default().fg(ui.dim.color())),
        );
    } else {
        lines.push(Line::from(format!("worker RSS {}", bytes(s.rss_bytes))));
        let name = if s.device_name.is_empty() { s.device_kind.as_str() } else { s.device_name.as_str() };
        // The worker's CPU name may already carry its thread count.
        let line = if name.contains("threads") { name.to_string() } else { format!("{name} · {} threads", s.threads) };
        lines.push(Line::from(line).style(Style::default().fg(ui.dim.color())));
    }
    lines
}

/// A worker's memory on one line after `label` (a session of `serve`'s operator view):
/// MPS or CUDA allocation against the cap, else its RSS.
pub fn memory_line(ui: &UiColors, label: &str, s: &WorkerStats, w: u16) -> Line<'static> {
    if let Some(m) = &s.mps {
        let ratio = m.high_watermark_ratio.filter(|r| *r > 0.0).unwrap_or(1.0).max(1.0);
        let cap = (m.recommended_max as f64 * ratio as f64) as u64;
        gauge_line(ui, &format!("{label} mps "), m.current_allocated, cap, Some(m.recommended_max), w)
    } else if let Some(c) = &s.cuda {
        gauge_line(ui, &format!("{label} cuda"), c.allocated, c.total, None, w)
    } else {
        Line::from(format!("{label} cpu  RSS {}", bytes(s.rss_bytes)))
    }
}
