//! `sam2-tui serve --console`: the server's operator view, full screen in the server's
//! own process. It reads what `sam2_serve::operator::Board` publishes and sends back
//! `Control`s (switch model, device or precision; drain; stop); it never touches a
//! session.
//!
//! * `app`  — its state and `update` (keys → controls), pure.
//! * `view` — drawing, pure.
//! * `run`  — the loop: keys, status changes and the server's end in; draws out.
pub mod app;
pub mod view;

use app::{Action, OperatorApp};
use crossterm::event::Event;
use futures::{Stream, StreamExt};
use ratatui::backend::Backend;
use ratatui::Terminal;
use sam2_serve::operator::{Control, ServerStatus};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A streaming session changes the status with every frame: the screen follows at most
/// this often.
const MIN_REDRAW: Duration = Duration::from_millis(100);

/// Runs the view until `server` has finished (a drain's end, a stop asked here, a
/// signal); returns the server's outcome.
pub async fn run<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut OperatorApp,
    mut terminal_events: S,
    mut status: watch::Receiver<ServerStatus>,
    controls: mpsc::UnboundedSender<Control>,
    server: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
    S: Stream<Item = std::io::Result<Event>> + Unpin,
{
    tokio::pin!(server);
    let mut needs_draw = true;
    let mut last_draw: Option<Instant> = None;
    let mut status_open = true;
    let mut keys_open = true;
    loop {
        if needs_draw && last_draw.is_none_or(|t| t.elapsed() >= MIN_REDRAW) {
            terminal.draw(|f| view::draw(f, app)).map_err(|e| anyhow::anyhow!("drawing failed: {e}"))?;
            last_draw = Some(Instant::now());
            needs_draw = false;
        }
        let redraw_at = if needs_draw { last_draw.map(|t| t + MIN_REDRAW) } else { None };
        tokio::select! {
            biased;
            ev = terminal_events.next(), if keys_open => match ev {
                Some(Ok(Event::Key(k))) => {
                    for c in app.update(Action::Key(k)) {
                        // The server is gone when this fails: its end is on the way.
                        let _ = controls.send(c);
                    }
                    needs_draw = true;
                }
                Some(Ok(Event::Resize(width, height))) => {
                    app.update(Action::Resize { width, height });
                    needs_draw = true;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow::anyhow!("reading the terminal failed: {e}")),
                None => {
                    // No terminal to read keys from: nobody can operate it, so stop.
                    keys_open = false;
                    let _ = controls.send(Control::Stop);
                }
            },
            result = &mut server => return result,
            changed = status.changed(), if status_open => match changed {
                Ok(()) => {
                    let s = status.borrow_and_update().clone();
                    app.update(Action::Status(Box::new(s)));
                    needs_draw = true;
                }
                Err(_) => status_open = false,
            },
            _ = sleep_until(redraw_at), if redraw_at.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}
