//! The `?` overlay, generated from the keymap (so remapped keys show as remapped), and the
//! quit question.
use crate::console::action::Command;
use crate::console::app::App;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h)
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme.ui;
    let entries = app.keymap.help_lines();
    let key_w = entries.iter().map(|(_, k, _)| k.chars().count()).max().unwrap_or(0).min(24);
    let rendered: Vec<Line> = entries
        .iter()
        .map(|(g, k, d)| match g {
            Some(g) => Line::from(Span::styled(
                g.to_string(),
                Style::default().fg(t.accent.color()).add_modifier(Modifier::BOLD),
            )),
            None => Line::from(vec![
                Span::styled(format!("  {k:<key_w$}  "), Style::default().fg(t.warn.color())),
                Span::raw(d.clone()),
            ]),
        })
        .collect();
    // Two columns when the screen is tall enough for half.
    let inner_h = area.height.saturating_sub(2) as usize;
    let desc_w = entries.iter().map(|(_, _, d)| d.chars().count()).max().unwrap_or(0);
    let col_w = (key_w + 4 + desc_w) as u16;
    let (cols, rows) = if rendered.len() > inner_h && area.width >= col_w * 2 + 3 {
        (2, rendered.len().div_ceil(2))
    } else {
        (1, rendered.len())
    };
    // Still too tall: one column that scrolls with the cursor keys.
    let scrolls = rows > inner_h;
    let mut rendered = rendered;
    if scrolls {
        let first = app.help_scroll.min(rendered.len().saturating_sub(inner_h));
        rendered = rendered.into_iter().skip(first).take(inner_h).collect();
    }
    let rows = rows.min(inner_h);
    let popup = centered(area, col_w * cols as u16 + 2 + (cols as u16 - 1), rows as u16 + 2);
    f.render_widget(Clear, popup);
    let title = if scrolls {
        let (down, up) = (app.keymap.label(Command::CursorDown), app.keymap.label(Command::CursorUp));
        format!("keys · {down} / {up} scroll · other keys close")
    } else {
        "keys (remap in config [keys]) · any key closes".to_string()
    };
    let block = super::panel(&title, app).style(Style::default().bg(t.background.color()).fg(t.foreground.color()));
    let inner = block.inner(popup);
    f.render_widget(block, popup);
    let mut it = rendered.into_iter();
    for c in 0..cols {
        let col: Vec<Line> = it.by_ref().take(rows).collect();
        let r = Rect::new(inner.x + c as u16 * (col_w + 1), inner.y, col_w.min(inner.width), inner.height);
        f.render_widget(Paragraph::new(col), r);
    }
}

pub fn draw_confirm_quit(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme.ui;
    let popup = centered(area, 52, 5);
    f.render_widget(Clear, popup);
    let block = super::panel("quit?", app).style(Style::default().bg(t.background.color()).fg(t.foreground.color()));
    let save = app.keymap.label(Command::Save);
    let text = vec![
        Line::from(Span::styled("The session has unsaved changes.", Style::default().fg(t.warn.color()))),
        Line::from(format!("s: save to {} and quit", short(&app.session_path.display().to_string(), 30))),
        Line::from(format!("y: quit without saving · other keys stay ({save} saves)")),
    ];
    f.render_widget(Paragraph::new(text).block(block), popup);
}

fn short(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    if c.len() <= n {
        s.to_string()
    } else {
        format!("…{}", c[c.len() - n + 1..].iter().collect::<String>())
    }
}
