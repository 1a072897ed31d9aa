//! The operator view, as pure functions of `&OperatorApp`: the server and its settings,
//! the sessions table, each worker's memory, the totals, the log and the keys. Nothing
//! here changes state, so a `TestBackend` snapshot shows what the operator sees.
use super::app::{Modal, OperatorApp};
use crate::console::view::device::memory_line;
use crate::console::view::log::wrapped_tail;
use crate::console::view::panel_in;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Clear, Paragraph, Row, Table};
use ratatui::Frame;
use sam2_serve::operator::{Level, ServerStatus, SessionStatus};

/// Below this the table cannot show a session's columns.
pub const MIN_SIZE: (u16, u16) = (80, 24);

pub fn draw(f: &mut Frame, app: &OperatorApp) {
    let t = &app.theme.ui;
    let area = f.area();
    f.render_widget(
        ratatui::widgets::Block::default().style(Style::default().bg(t.background.color()).fg(t.foreground.color())),
        area,
    );
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let text = format!(
            "terminal too small: {}×{}\nthe operator view needs at least {}×{}\n(the server keeps serving)",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        f.render_widget(Paragraph::new(text).alignment(ratatui::layout::Alignment::Center), area);
        return;
    }
    let s = &app.status;
    // The table grows with the sessions, and leaves the log at least 6 rows.
    let table_h = (s.sessions.len().max(1) as u16 + 3).min(area.height.saturating_sub(14).max(4));
    let middle_h = (s.sessions.len().max(4) as u16 + 2).min(8);
    let [header, table, middle, log, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_h),
        Constraint::Length(middle_h),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(area);
    let [memory, totals] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(middle);
    draw_header(f, header, app);
    draw_sessions(f, table, app);
    draw_memory(f, memory, app);
    draw_totals(f, totals, app);
    draw_log(f, log, app);
    draw_hints(f, hints, app);
    if app.modal == Modal::Help {
        draw_help(f, area, app);
    }
}

/// "SAM 2.1 tiny" or "checkpoint's model", then device and precision.
pub fn settings_text(s: &ServerStatus) -> String {
    let model = s.settings.model.map(|m| m.to_string()).unwrap_or_else(|| "checkpoint's model".into());
    format!("{model} · {} · {}", s.settings.device, s.settings.precision)
}

fn draw_header(f: &mut Frame, area: Rect, app: &OperatorApp) {
    let t = &app.theme.ui;
    let s = &app.status;
    let (state, color) = if app.stopping {
        ("stopping: closing every session", t.warn)
    } else if s.draining {
        ("draining: no new sessions", t.warn)
    } else if !s.serving {
        ("starting: preparing the data folder", t.warn)
    } else {
        ("serving", t.ok)
    };
    let line = Line::from(vec![
        Span::styled(" serve ", Style::default().fg(t.accent.color()).add_modifier(Modifier::BOLD)),
        Span::raw(format!("{} · ", s.address)),
        Span::styled(state, Style::default().fg(color.color()).add_modifier(Modifier::BOLD)),
        Span::styled(format!(" · new sessions: {}", settings_text(s)), Style::default().fg(t.dim.color())),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

/// `worker 1234 · cpu fp32 · tiny 2.1`, or what it waits for.
fn worker_text(r: &SessionStatus) -> String {
    match &r.worker {
        Some(w) => format!("{} {} {} {}", w.device, w.precision, w.model.size, w.model.version),
        None => "starting".into(),
    }
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

fn draw_sessions(f: &mut Frame, area: Rect, app: &OperatorApp) {
    let t = &app.theme.ui;
    let s = &app.status;
    let starting = if s.starting > 0 { format!(", {} starting", s.starting) } else { String::new() };
    let block = panel_in(&format!("sessions: {} open{starting} (at most {})", s.sessions.len(), s.max_sessions), t);
    if s.sessions.is_empty() {
        let inner = block.inner(area);
        f.render_widget(block, area);
        let text = if s.draining { "none open: the server stops now" } else { "none yet: startSession opens one" };
        f.render_widget(Paragraph::new(text).style(Style::default().fg(t.dim.color())), inner);
        return;
    }
    let dim = Style::default().fg(t.dim.color());
    let head = Row::new(["session", "video", "frames", "objs", "state", "fps", "streamed", "rst", "worker"])
        .style(Style::default().fg(t.accent.color()));
    let rows = s.sessions.iter().map(|r| {
        let state_color = match r.state() {
            "streaming" | "tracking" => t.ok,
            "restarting" | "switching" | "starting" => t.warn,
            "stopped" => t.error,
            _ => t.foreground,
        };
        let fps = r.streaming.map(|x| format!("{:.1}", x.fps)).unwrap_or_else(|| "·".into());
        let restarts = Cell::from(r.restarts.to_string()).style(if r.restarts > 0 {
            Style::default().fg(t.warn.color())
        } else {
            dim
        });
        Row::new(vec![
            Cell::from(short(&r.id)),
            Cell::from(r.video.clone()),
            Cell::from(r.frames.to_string()),
            Cell::from(r.objects.to_string()),
            Cell::from(r.state()).style(Style::default().fg(state_color.color())),
            Cell::from(fps),
            Cell::from(r.frames_streamed.to_string()),
            restarts,
            Cell::from(worker_text(r)).style(dim),
        ])
    });
    // The video and the worker share what is left; on a narrow screen the worker keeps
    // its device and precision, the first words.
    let widths = [
        Constraint::Length(8),
        Constraint::Fill(3),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Length(10),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(3),
        Constraint::Fill(2),
    ];
    f.render_widget(Table::new(rows, widths).header(head).block(block), area);
}

fn draw_memory(f: &mut Frame, area: Rect, app: &OperatorApp) {
    let t = &app.theme.ui;
    let block = panel_in("device memory (each worker's last heartbeat)", t);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let dim = Style::default().fg(t.dim.color());
    let lines: Vec<Line> = match app.status.sessions.is_empty() {
        true => vec![Line::from("no workers serving a session").style(dim)],
        false => app
            .status
            .sessions
            .iter()
            .map(|r| match &r.stats {
                Some(stats) => memory_line(t, &short(&r.id), stats, inner.width),
                None => Line::from(format!("{} waiting for the first heartbeat", short(&r.id))).style(dim),
            })
            .collect(),
    };
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_totals(f: &mut Frame, area: Rect, app: &OperatorApp) {
    let t = &app.theme.ui;
    let s = &app.status;
    let block = panel_in("totals", t);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let streaming = s.sessions.iter().filter(|r| r.streaming.is_some()).count();
    let spare = match s.spare_workers {
        0 => "no spare worker".to_string(),
        1 => "1 spare worker ready".to_string(),
        n => format!("{n} spare workers ready"),
    };
    let lines = vec![
        Line::from(vec![
            Span::styled(format!("{:.1}", s.aggregate_fps()), Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!(" frames/s · {streaming} streaming")),
        ]),
        Line::from(format!("{} frames streamed", s.frames_streamed())),
        Line::from(format!("{} worker restart{}", s.restarts(), if s.restarts() == 1 { "" } else { "s" }))
            .style(if s.restarts() > 0 { Style::default().fg(t.warn.color()) } else { Style::default() }),
        Line::from(spare).style(Style::default().fg(t.dim.color())),
    ];
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_log(f: &mut Frame, area: Rect, app: &OperatorApp) {
    let t = &app.theme.ui;
    let title = if app.log_back > 0 {
        format!("log · {} lines back", app.log_back)
    } else {
        "log: requests, restarts, errors".into()
    };
    let block = panel_in(&title, t);
    let inner = block.inner(area);
    f.render_widget(block, area);
    // Newest at the bottom, long lines wrapped, as the console's own log.
    let newest_first = app.status.log.iter().rev().skip(app.log_back).map(|l| {
        let c = match l.level {
            Level::Info => t.foreground,
            Level::Warn => t.warn,
            Level::Error => t.error,
        };
        (format!("{} {}", l.time, l.text), c.color())
    });
    f.render_widget(Paragraph::new(wrapped_tail(newest_first, inner)), inner);
}

fn draw_hints(f: &mut Frame, area: Rect, app: &OperatorApp) {
    let t = &app.theme.ui;
    let line = match app.modal {
        Modal::ConfirmStop => Line::from(Span::styled(
            format!(
                " stop the server now? its {} open session(s) are closed — y stop · {} drains instead · other key stays",
                app.status.sessions.len(),
                app.keymap.label(crate::console::action::Command::Drain)
            ),
            Style::default().fg(t.warn.color()),
        )),
        Modal::Help => Line::from(Span::styled(" any key closes the help", Style::default().fg(t.dim.color()))),
        Modal::None => {
            let mut spans = vec![Span::raw(" ")];
            for (c, what) in OperatorApp::COMMANDS {
                let keys = app.keymap.label(c);
                if keys.is_empty() {
                    continue;
                }
                spans.push(Span::styled(keys, Style::default().fg(t.accent.color())));
                spans.push(Span::styled(format!(" {what}  "), Style::default().fg(t.dim.color())));
            }
            Line::from(spans)
        }
    };
    f.render_widget(Paragraph::new(line), area);
}

/// The keys with what they do to the server.
pub fn help_lines(app: &OperatorApp) -> Vec<(String, &'static str)> {
    use crate::console::action::Command;
    let what = |c: Command| match c {
        Command::CycleModel => "next model size: new sessions get it, open ones are replayed on it",
        Command::CyclePrecision => "next precision (auto, fp32, bf16, fp16), the same way",
        Command::FallBackToCpu => "run on the CPU, the same way",
        Command::AutoDevice => "run on the best device found (CUDA, MPS, else CPU), the same way",
        Command::Drain => "drain: refuse new sessions, stop once the open ones have closed",
        Command::Quit => "stop now (asks when sessions are open)",
        Command::Help => "this help",
        _ => "scroll the log back (pagedown returns)",
    };
    OperatorApp::COMMANDS.iter().map(|(c, _)| (app.keymap.label(*c), what(*c))).filter(|(k, _)| !k.is_empty()).collect()
}

fn draw_help(f: &mut Frame, area: Rect, app: &OperatorApp) {
    let t = &app.theme.ui;
    let entries = help_lines(app);
    let key_w = entries.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let lines: Vec<Line> = entries
        .iter()
        .map(|(k, d)| {
            Line::from(vec![
                Span::styled(format!(" {k:<key_w$}  "), Style::default().fg(t.warn.color())),
                Span::raw(*d),
            ])
        })
        .collect();
    let w = (lines.iter().map(|l| l.width()).max().unwrap_or(0) as u16 + 3).min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h);
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(lines).block(panel_in("operator keys", t)), r);
}
