//! Top line: model, device, engine state, worker; a second line warns about random weights.
use crate::console::app::App;
use crate::device::DeviceChoice;
use crate::supervisor::events::EngineState;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The engine state in words, with its colour class (0 ok, 1 warn, 2 error).
pub fn state_text(app: &App) -> (String, u8) {
    let fallback = app.engine.fell_back.as_ref().map(|(from, to, _)| {
        if *to == DeviceChoice::Cpu {
            format!(" · fell back to CPU (from {from})")
        } else {
            format!(" · fell back to {to} (from {from})")
        }
    });
    let age = {
        let secs = app.clock.saturating_duration_since(app.state_since).as_secs();
        if secs >= 1 {
            format!(" · {secs} s")
        } else {
            String::new()
        }
    };
    if let Some(b) = &app.engine.blocked {
        return (format!("not started: {b}"), 2);
    }
    let (s, class) = match &app.engine.state {
        EngineState::Starting => (format!("starting{age}"), 1),
        EngineState::Loading => (format!("loading model{age}"), 1),
        EngineState::Ready => match app.busy() {
            // "ready" only when nothing the user asked for is still running.
            Some(b) => (format!("busy: {b}"), 1),
            None => ("ready".to_string(), 0),
        },
        EngineState::Propagating { .. } if app.cancelling.is_some() => (app.busy().unwrap_or_default(), 1),
        EngineState::Propagating { done, total } if app.replay_left > 0 => (
            format!(
                "replaying saved propagation ({} left) {}/{}",
                app.replay_left,
                app.perf.done.max(*done),
                app.perf.total.max(*total)
            ),
            0,
        ),
        // The state is sent once per propagation; progress events carry the live count.
        EngineState::Propagating { done, total } => {
            (format!("propagating {}/{}", app.perf.done.max(*done), app.perf.total.max(*total)), 0)
        }
        EngineState::Crashed { reason } => (format!("crashed: {reason}"), 2),
        EngineState::Restarting { attempt } => {
            let why = app.engine.last_death.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            (format!("crashed{why} → restarting, attempt {attempt}"), 2)
        }
        EngineState::Stopped => ("stopped".to_string(), 2),
    };
    match fallback {
        Some(fb) => (s + &fb, class.max(1)),
        None => (s, class),
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme.ui;
    let dim = Style::default().fg(t.dim.color());
    let sep = Span::styled(" │ ", dim);
    let model = match &app.engine.model {
        Some(m) => format!("SAM {} {}", m.version, m.size),
        None => format!("SAM {} (not loaded)", app.engine.requested_model),
    };
    let device = match (app.engine.device, app.engine.precision) {
        (Some(d), Some(p)) if app.engine.precision_choice == crate::device::PrecisionChoice::Auto => {
            format!("{d} {p} (auto)")
        }
        (Some(d), Some(p)) => format!("{d} {p}"),
        (Some(d), None) => d.to_string(),
        _ => "device ?".into(),
    };
    let (state, class) = state_text(app);
    let state_color = [t.ok, t.warn, t.error][class as usize].color();
    let worker = match app.engine.pid {
        Some(pid) => format!("worker {pid} · restarts {}", app.engine.restarts),
        None => format!("no worker · restarts {}", app.engine.restarts),
    };
    let file = app
        .input
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "no video".into());
    let dirty = if app.dirty { " [+]" } else { "" };
    let line = Line::from(vec![
        Span::styled(" sam2-tui", Style::default().fg(t.accent.color()).add_modifier(Modifier::BOLD)),
        sep.clone(),
        Span::raw(model),
        sep.clone(),
        Span::raw(device),
        sep.clone(),
        Span::styled(format!("● {state}"), Style::default().fg(state_color)),
        sep.clone(),
        Span::styled(worker, dim),
        sep,
        Span::raw(format!("{file}{dirty}")),
    ]);
    let mut lines = vec![line];
    if app.engine.model.as_ref().is_some_and(|m| m.random_init) {
        lines.push(
            Line::from(format!(
                " ⚠ random weights — masks are meaningless (the checkpoint is a random-init one; `sam2-tui weights download {}` gets the real one)",
                app.engine.model.as_ref().map(|m| m.size.name()).unwrap_or("tiny")
            ))
                .style(Style::default().fg(t.banner_fg.color()).bg(t.banner_bg.color()).add_modifier(Modifier::BOLD)),
        );
    }
    f.render_widget(Paragraph::new(lines), area);
}
