//! The objects and their prompts (on the current frame, and how many frames carry prompts).
use crate::console::app::App;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let block = super::panel("objects", app);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let t = &app.theme.ui;
    let lines: Vec<Line> = app
        .objects
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let here = app.prompts.get(&(app.frame, id));
            let pos = here.map(|s| s.points.iter().filter(|p| p.label == 1).count()).unwrap_or(0);
            let neg = here.map(|s| s.points.iter().filter(|p| p.label == 0).count()).unwrap_or(0);
            let bx = if here.is_some_and(|s| s.bbox.is_some()) { " box" } else { "" };
            let frames = app.prompts.iter().filter(|((_, o), s)| *o == id && !s.is_empty()).count();
            let tracked = app.masks.values().filter(|v| v.iter().any(|m| m.object == id && m.score > 0.0)).count();
            let sel = i == app.selected;
            let style = if sel {
                Style::default().bg(t.selection.color()).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            Line::from(vec![
                Span::raw(if sel { "▶ " } else { "  " }),
                Span::styled("■ ", Style::default().fg(app.theme.object(id).color())),
                Span::raw(format!("{id:<3} +{pos} −{neg}{bx} · prompt frames {frames} · tracked {tracked}")),
            ])
            .style(style)
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}
