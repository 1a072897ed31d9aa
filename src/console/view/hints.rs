//! The key-hint bar: the keys that matter right now, labelled from the keymap.
use crate::console::action::Command;
use crate::console::app::{App, Modal};
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// (keys, what) pairs for the current context.
pub fn hints(app: &App) -> Vec<(String, String)> {
    let k = |c: Command| app.keymap.label(c);
    let mut out: Vec<(String, String)> = vec![];
    let mut add = |c: Command, what: &str| {
        let keys = k(c);
        if !keys.is_empty() {
            out.push((keys, what.to_string()));
        }
    };
    match &app.modal {
        Modal::Watermark(_)
        | Modal::ConfirmQuit
        | Modal::ConfirmDelete(_)
        | Modal::OfferSession { .. }
        | Modal::OfferDownload(_)
        | Modal::Help => {}
        Modal::None if app.box_anchor.is_some() => {
            add(Command::BoxToggle, "finish box");
            add(Command::Cancel, "cancel box");
            add(Command::CursorLeft, "move");
        }
        Modal::None if app.is_propagating() => {
            if app.cancelling.is_none() && app.replay_left > 0 {
                add(Command::Cancel, "skip the replay");
            } else if app.cancelling.is_none() {
                add(Command::Cancel, "cancel propagation");
            }
            add(Command::Save, "save");
            add(Command::Help, "help");
        }
        Modal::None => {
            add(Command::Help, "help");
            add(Command::PointPositive, "+point");
            add(Command::PointNegative, "−point");
            add(Command::BoxToggle, "box");
            add(Command::Undo, "undo");
            add(Command::NewObject, "new obj");
            add(Command::PropagateForward, "propagate");
            add(Command::Save, "save");
            add(Command::Quit, "quit");
        }
    }
    // The frame keys, as one entry after the prompt keys.
    let (next, prev) = (k(Command::NextFrame), k(Command::PrevFrame));
    if app.modal == Modal::None
        && app.box_anchor.is_none()
        && !app.is_propagating()
        && !next.is_empty()
        && !prev.is_empty()
    {
        let at = out.len().min(4);
        out.insert(at, (format!("{next} {prev}"), "frame ±1".to_string()));
    }
    out
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme.ui;
    let line = match &app.modal {
        Modal::Watermark(buf) => Line::from(vec![
            Span::styled(" MPS high watermark ratio (0–2, 0 = unlimited): ", Style::default().fg(t.accent.color())),
            Span::raw(format!("{buf}▏")),
            Span::styled("  enter ok · esc cancel", Style::default().fg(t.dim.color())),
        ]),
        Modal::ConfirmQuit => Line::from(Span::styled(
            " unsaved changes — s save and quit · y quit without saving · any other key stays",
            Style::default().fg(t.warn.color()),
        )),
        Modal::ConfirmDelete(id) => {
            let (prompts, masked) = app.object_work(*id);
            Line::from(Span::styled(
                format!(" delete object {id} ({prompts} prompt sets, masks on {masked} frames)? not undoable — y delete · other key keeps it"),
                Style::default().fg(t.warn.color()),
            ))
        }
        Modal::OfferDownload(size) => Line::from(Span::styled(
            format!(
                " no checkpoint: download the official {size} one (about {} MB) into weights/? y download · other key: not now",
                crate::weights::official::approx_megabytes(*size)
            ),
            Style::default().fg(t.accent.color()),
        )),
        Modal::OfferSession { path, journal } => Line::from(Span::styled(
            format!(" resume the saved session {} ({} ops)? y resume · other key starts fresh (it is kept)", path.display(), journal.ops.len()),
            Style::default().fg(t.accent.color()),
        )),
        Modal::Help => Line::from(Span::styled(" any key closes the help", Style::default().fg(t.dim.color()))),
        Modal::None => {
            let mut spans = vec![Span::raw(" ")];
            for (keys, what) in hints(app) {
                spans.push(Span::styled(keys, Style::default().fg(t.accent.color())));
                spans.push(Span::styled(format!(" {what}  "), Style::default().fg(t.dim.color())));
            }
            Line::from(spans)
        }
    };
    f.render_widget(Paragraph::new(line), area);
}
