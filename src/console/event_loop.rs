//! The console's loop: terminal events, engine events, preview results and ticks become
//! actions; actions update the `App`; effects go out; the screen is redrawn when something
//! changed, at most `max_redraw_fps` times a second. Keys are served first (`biased`
//! select) and engine events are drained in batches, so a flood of progress never delays a
//! key's redraw by more than one batch. Generic over the backend so tests drive it with
//! `TestBackend` and a channel of key events.
use super::action::Action;
use super::app::{App, Effect};
use super::preview::{protocol::Encoder, worker};
use crate::media::FrameSource;
use crate::supervisor::events::{EngineCommand, EngineEvent};
use crossterm::event::{Event, MouseButton, MouseEventKind};
use futures::{Stream, StreamExt};
use ratatui::backend::Backend;
use ratatui::layout::Rect;
use ratatui::Terminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Sent after every completed draw (tests measure key-to-frame latency with it).
#[derive(Clone, Copy, Debug)]
pub struct DrawReport {
    pub at: Instant,
    /// Key events handled before this draw.
    pub keys_seen: u64,
    /// Where the preview image goes, and the size of the image drawn there (None: the
    /// schematic was drawn instead: no image yet, or one made for another size).
    pub preview_cells: Option<Rect>,
    pub preview_image: Option<ratatui::layout::Size>,
}

pub struct LoopOptions {
    pub max_redraw_fps: f32,
    pub tick: Duration,
    /// A frame source for the preview worker, its encoder and its rate cap.
    pub preview: Option<(Box<dyn FrameSource>, Encoder, f32)>,
    pub draws: Option<mpsc::UnboundedSender<DrawReport>>,
    /// Wrap draws in DEC 2026 synchronized updates (real terminals only).
    pub synchronized: bool,
    pub export_dir: PathBuf,
}

/// At most this many engine events are folded in before the screen gets a chance to draw.
const ENGINE_BATCH: usize = 256;

pub async fn run<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut terminal_events: S,
    mut engine_events: mpsc::UnboundedReceiver<EngineEvent>,
    engine_commands: Option<mpsc::UnboundedSender<EngineCommand>>,
    opts: LoopOptions,
) -> anyhow::Result<()>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
    S: Stream<Item = std::io::Result<Event>> + Unpin,
{
    let (action_tx, mut action_rx) = mpsc::unbounded_channel::<Action>();
    let (preview_tx, preview_rx) = watch::channel(None);
    let mut preview_task = None;
    if let Some((source, encoder, fps)) = opts.preview {
        preview_task = Some(tokio::spawn(worker::run(source, encoder, fps, preview_rx, action_tx.clone())));
    } else {
        drop(preview_rx);
    }
    let min_interval = Duration::from_secs_f32(1.0 / opts.max_redraw_fps.max(1.0));
    let mut tick = tokio::time::interval(opts.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut needs_draw = true;
    let mut last_draw: Option<Instant> = None;
    // The scene and the preview's place when a preview was last asked for: either changing
    // asks again.
    let mut last_scene = (u64::MAX, None);
    let mut keys_seen = 0u64;
    let mut engine_open = true;
    let mut commands = engine_commands;
    let downloads = Downloads::default();
    let mut ctx =
        Ctx { commands: &mut commands, action_tx: &action_tx, export_dir: &opts.export_dir, downloads: &downloads };

    loop {
        if needs_draw && last_draw.is_none_or(|t| t.elapsed() >= min_interval) {
            draw(terminal, app, opts.synchronized)?;
            let at = Instant::now();
            last_draw = Some(at);
            needs_draw = false;
            if let Some(d) = &opts.draws {
                let preview_cells = worker::preview_cells(app);
                let preview_image = preview_cells
                    .and_then(|r| super::view::preview::fitting_image(app, r))
                    .map(|img| img.protocol.size());
                let _ = d.send(DrawReport { at, keys_seen, preview_cells, preview_image });
            }
        }
        let scene = (app.scene_version, worker::preview_cells(app));
        if scene != last_scene {
            last_scene = scene;
            if preview_task.is_some() {
                if let Some(req) = worker::request_for(app) {
                    preview_tx.send_replace(Some(req));
                }
            }
        }
        if app.should_quit {
            break;
        }
        let redraw_at = if needs_draw { last_draw.map(|t| t + min_interval) } else { None };
        tokio::select! {
            biased;
            ev = terminal_events.next() => match ev {
                Some(Ok(ev)) => {
                    if matches!(ev, Event::Key(_)) {
                        keys_seen += 1;
                    }
                    if let Some(a) = terminal_action(app, ev) {
                        handle(app, a, &mut ctx);
                    }
                    needs_draw = true;
                }
                Some(Err(e)) => return Err(anyhow::anyhow!("reading the terminal failed: {e}")),
                None => break,
            },
            Some(a) = action_rx.recv() => {
                handle(app, a, &mut ctx);
                needs_draw = true;
            }
            ev = engine_events.recv(), if engine_open => match ev {
                Some(ev) => {
                    handle(app, Action::Engine(ev), &mut ctx);
                    for _ in 0..ENGINE_BATCH {
                        match engine_events.try_recv() {
                            Ok(ev) => handle(app, Action::Engine(ev), &mut ctx),
                            Err(_) => break,
                        }
                    }
                    needs_draw = true;
                }
                None => {
                    engine_open = false;
                    // Not said again when the engine was never started (the log says why).
                    if app.engine.blocked.is_none() {
                        handle(app, Action::Note { error: true, message: "the supervisor stopped; no engine".into() }, &mut ctx);
                    }
                    needs_draw = true;
                }
            },
            _ = tick.tick() => {
                handle(app, Action::Tick, &mut ctx);
                needs_draw = true;
            }
            _ = sleep_until(redraw_at), if redraw_at.is_some() => {}
        }
    }
    if let Some(c) = ctx.commands.as_ref() {
        let _ = c.send(EngineCommand::Shutdown);
    }
    downloads.stop_all();
    drop(preview_tx);
    if let Some(t) = preview_task {
        t.abort();
    }
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

fn draw<B: Backend>(terminal: &mut Terminal<B>, app: &App, synchronized: bool) -> anyhow::Result<()>
where
    B::Error: Send + Sync + 'static,
{
    use crossterm::terminal::{BeginSynchronizedUpdate, EndSynchronizedUpdate};
    if synchronized {
        let _ = crossterm::execute!(std::io::stdout(), BeginSynchronizedUpdate);
    }
    let r = terminal.draw(|f| super::view::draw(f, app));
    if synchronized {
        let _ = crossterm::execute!(std::io::stdout(), EndSynchronizedUpdate);
    }
    r.map_err(|e| anyhow::anyhow!("drawing failed: {e}"))?;
    Ok(())
}

/// A terminal event as an action (keys through the keymap, given what is open).
pub fn terminal_action(app: &App, ev: Event) -> Option<Action> {
    match ev {
        Event::Key(k) => app.keymap.translate(app.mode(), &k),
        Event::Mouse(m) => match m.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                Some(Action::Click { column: m.column, row: m.row, positive: true })
            }
            MouseEventKind::Down(MouseButton::Right) => {
                Some(Action::Click { column: m.column, row: m.row, positive: false })
            }
            _ => None,
        },
        Event::Resize(width, height) => Some(Action::Resize { width, height }),
        _ => None,
    }
}

struct Ctx<'a> {
    commands: &'a mut Option<mpsc::UnboundedSender<EngineCommand>>,
    action_tx: &'a mpsc::UnboundedSender<Action>,
    export_dir: &'a PathBuf,
    downloads: &'a Downloads,
}

/// The `weights download` processes under way (`w`). Quitting stops them with SIGTERM:
/// each kills its transfer and removes its partial file (exit 130), so the console does
/// not wait for a download to finish, or stall, before it can exit.
#[derive(Clone, Default)]
struct Downloads(std::sync::Arc<std::sync::Mutex<Vec<u32>>>);

impl Downloads {
    fn started(&self, pid: u32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
    }

    fn ended(&self, pid: u32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|&p| p != pid);
    }

    fn stop_all(&self) {
        for &pid in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // SAFETY: kill(2) takes any pid. These are children of this process; one
            // may have been reaped in the instant between its wait returning and `ended`,
            // so a pid reused within that instant could be signalled: a window of a few
            // instructions, against a download left running for minutes.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
}

fn handle(app: &mut App, action: Action, ctx: &mut Ctx) {
    for effect in app.update(action) {
        match effect {
            Effect::Engine(cmd) => {
                let sent = ctx.commands.as_ref().is_some_and(|c| c.send(cmd).is_ok());
                if !sent && ctx.commands.take().is_some() {
                    app.note(
                        crate::supervisor::events::LogLevel::Error,
                        "the engine is gone; commands are not delivered".into(),
                    );
                }
            }
            Effect::Save(path) => {
                let journal = app.journal.clone();
                let tx = ctx.action_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let r = journal.save(&path).map(|_| path).map_err(|e| format!("{e:#}"));
                    let _ = tx.send(Action::Saved(r));
                });
            }
            Effect::Export => {
                let job = super::export::Job::from_app(app, ctx.export_dir.clone());
                let tx = ctx.action_tx.clone();
                match job {
                    Ok(job) => {
                        tokio::task::spawn_blocking(move || {
                            let _ = tx.send(Action::Exported(job.run().map_err(|e| format!("{e:#}"))));
                        });
                    }
                    Err(e) => app.note(crate::supervisor::events::LogLevel::Error, format!("export: {e}")),
                }
            }
            Effect::Download(size) => {
                // The same command a user would type; its outcome lands in the log. The
                // engine is not started from here: the next start finds the file.
                let tx = ctx.action_tx.clone();
                let downloads = ctx.downloads.clone();
                tokio::task::spawn_blocking(move || {
                    let out = std::env::current_exe().and_then(|exe| {
                        let child = std::process::Command::new(exe)
                            .args(["weights", "download", size.name()])
                            .stdin(std::process::Stdio::null())
                            .stdout(std::process::Stdio::piped())
                            .stderr(std::process::Stdio::piped())
                            .spawn()?;
                        let pid = child.id();
                        downloads.started(pid);
                        let out = child.wait_with_output();
                        downloads.ended(pid);
                        out
                    });
                    let message = match out {
                        Ok(o) if o.status.success() => format!(
                            "downloaded: {} — quit and start again to load it",
                            String::from_utf8_lossy(&o.stdout).trim()
                        ),
                        Ok(o) => {
                            format!("download failed: {}", String::from_utf8_lossy(&o.stderr).trim().replace('\n', " "))
                        }
                        Err(e) => format!("download failed: {e}"),
                    };
                    let _ = tx.send(Action::Note { error: message.starts_with("download failed"), message });
                });
            }
            Effect::Quit => app.should_quit = true,
        }
    }
}
