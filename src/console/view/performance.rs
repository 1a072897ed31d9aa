//! Live FPS with a sparkline, per-stage latency, frames done/total and ETA.
use crate::console::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Sparkline};
use ratatui::Frame;

pub fn eta(secs: f32) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let block = super::panel("performance", app);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let p = &app.perf;
    let [top, spark, rest] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(2), Constraint::Min(0)]).areas(inner);
    let eta = p.eta_secs().map(|s| format!(" · ETA {}", eta(s))).unwrap_or_default();
    // Below 1 FPS (large models on a CPU) seconds per frame read better than 0.0 fps.
    let rate =
        if p.fps > 0.0 && p.fps < 1.0 { format!("{:.1} s/frame", 1.0 / p.fps) } else { format!("{:.1} fps", p.fps) };
    f.render_widget(Paragraph::new(format!("{rate} · {}/{} frames{eta}", p.done, p.total)), top);
    // The sparkline scales to its maximum: milli-FPS keep slow devices' bars visible.
    let data: Vec<u64> =
        p.fps_history.iter().rev().take(spark.width as usize).rev().map(|v| (v * 1000.0) as u64).collect();
    f.render_widget(Sparkline::default().data(&data).style(Style::default().fg(app.theme.ui.accent.color())), spark);
    let t = &p.timings;
    let dim = Style::default().fg(app.theme.ui.dim.color());
    let lines = vec![
        Line::from(format!("image encoder    {:7.1} ms", t.image_encoder_ms)),
        Line::from(format!("memory attention {:7.1} ms", t.memory_attention_ms)),
        Line::from(format!("mask decoder     {:7.1} ms", t.mask_decoder_ms)),
        Line::from(format!("memory encoder   {:7.1} ms", t.memory_encoder_ms)),
        Line::from(format!("decode {:.1} · total {:.1} ms", t.decode_ms, t.total_ms)).style(dim),
    ];
    let mut lines = lines;
    if let Some(ms) = p.click_ms {
        // Key to masks: encoder (unless prefetched) + decoder + the round trip. First, so
        // a short panel still shows it.
        let click = if ms >= 1000.0 { format!("{:.1} s", ms / 1000.0) } else { format!("{ms:.0} ms") };
        lines.insert(0, Line::from(format!("last click       {click:>7}")));
    }
    f.render_widget(Paragraph::new(lines), rest);
}
