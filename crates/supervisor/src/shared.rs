//! One worker shared by several sessions (issue #18; `serve --streams`): each session a
//! stream of `streams::run_interactive`, so the sessions' propagations share the image
//! encoder's batches and one tracking step, and a click of one runs between two steps of
//! the others'. Each session gets what a supervisor of its own gives (`SupervisorHandle`):
//! its commands (an op, a cancel, its close) and its events (the worker started or died,
//! its video open, masks, each op's end), and the masks delivered so far, which survive
//! the worker's deaths. A crash replays every session of the worker (reopened, restored,
//! a propagation resumed after its last delivered frame), so it changes no mask; what a
//! shared worker lacks against one of its own is the fallback ladder and recycling, and
//! one session's fatal fault reaches the others (each then restored, as after any death).
use crate::options::SupervisorOptions;
use crate::store::{self, MaskStore, PropagationProgress};
use crate::streams::{self, StreamCommand, StreamNews};
use sam2_api::events::{EngineCommand, EngineEvent, EngineState, FrameMasks, LogLevel};
use sam2_api::session::Op;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A worker process and the driver thread that runs its streams.
pub struct SharedWorker {
    commands: UnboundedSender<StreamCommand>,
    sessions: Arc<Mutex<Sessions>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The sessions of a shared worker, as its driver thread and its callers see them.
#[derive(Default)]
struct Sessions {
    /// Streams opened so far: the next one's number (the driver numbers them in the
    /// order their `Open` arrives, which is this order: both happen under this lock).
    opened: usize,
    open: HashMap<usize, Sink>,
    /// The worker running now, said again to a session that comes later.
    worker: Option<EngineEvent>,
    restarts: u32,
    /// Why the driver ended (no worker could run), once it has.
    ended: Option<String>,
}

/// Where one session's news goes.
struct Sink {
    events: UnboundedSender<EngineEvent>,
    masks: Arc<Mutex<MaskStore>>,
    /// Its ops sent and not yet ended, in order: a stream's ops end in the order sent.
    pending: VecDeque<Op>,
    /// The video's length (once open), and how far the propagation under way got: what
    /// an operator's view shows as its state.
    frames: usize,
    progress: PropagationProgress,
}

impl Sink {
    fn new(events: UnboundedSender<EngineEvent>, masks: Arc<Mutex<MaskStore>>) -> Self {
        Sink { events, masks, pending: VecDeque::new(), frames: 0, progress: PropagationProgress::default() }
    }

    fn send(&self, e: EngineEvent) {
        let _ = self.events.send(e);
    }

    /// The op under way has ended: the session is idle again (unless more are queued).
    fn op_ended(&mut self) -> Option<Op> {
        self.progress = PropagationProgress::default();
        let op = self.pending.pop_front();
        if self.pending.is_empty() {
            self.send(EngineEvent::State(EngineState::Ready));
        }
        op
    }
}

/// A session of a shared worker: what a supervisor of its own would hand it.
pub struct SharedSession {
    pub link: SharedLink,
    pub events: UnboundedReceiver<EngineEvent>,
    /// Every finished mask (latest per (frame, object)), surviving worker deaths.
    pub masks: Arc<Mutex<MaskStore>>,
}

/// Sends one session's commands to its shared worker.
#[derive(Clone)]
pub struct SharedLink {
    stream: usize,
    commands: UnboundedSender<StreamCommand>,
    sessions: Arc<Mutex<Sessions>>,
}

fn lock(s: &Mutex<Sessions>) -> MutexGuard<'_, Sessions> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl SharedLink {
    /// A command as a session's own supervisor takes it: an op, a cancel, or `Shutdown`
    /// (the session closes: its stream is let go, and its events end once it is). A
    /// `Prefetch` is dropped: the shared worker encodes frames in batches as they are
    /// needed. Anything else (a switch, a watermark, a next item) is not a session's to
    /// ask of a shared worker: false.
    pub fn send(&self, cmd: EngineCommand) -> bool {
        let stream = self.stream;
        let command = match cmd {
            EngineCommand::Op(op) => {
                let mut s = lock(&self.sessions);
                let Some(sink) = s.open.get_mut(&stream) else { return false };
                sink.pending.push_back(op.clone());
                // Under the lock, so that its news cannot come before it is pending.
                return self.commands.send(StreamCommand::Op { stream, op }).is_ok();
            }
            EngineCommand::Cancel => StreamCommand::Cancel { stream },
            EngineCommand::Shutdown => StreamCommand::Close { stream },
            EngineCommand::Prefetch(_) => return true,
            _ => return false,
        };
        self.commands.send(command).is_ok()
    }
}

impl SharedWorker {
    /// Starts the driver thread; the worker process starts with it and loads the model
    /// of `opts` (its `media` and journal are not used: sessions bring their own).
    pub fn start(opts: SupervisorOptions) -> std::io::Result<SharedWorker> {
        let (commands, intake) = unbounded_channel();
        let sessions = Arc::new(Mutex::new(Sessions::default()));
        let news_to = sessions.clone();
        let thread = std::thread::Builder::new().name("shared-worker".into()).spawn(move || {
            let result = streams::run_interactive(&opts, intake, &|| false, &mut |news| {
                hear(&mut lock(&news_to), news);
                None
            });
            let mut s = lock(&news_to);
            let why = match result {
                Ok(_) => "the shared worker was stopped".to_string(),
                Err(e) => format!("giving up: {e:#}"),
            };
            for (_, sink) in s.open.drain() {
                let _ = sink.events.send(EngineEvent::Log { level: LogLevel::Error, message: why.clone() });
                let _ = sink.events.send(EngineEvent::State(EngineState::Stopped));
            }
            s.ended = Some(why);
        })?;
        Ok(SharedWorker { commands, sessions, thread: Mutex::new(Some(thread)) })
    }

    /// A new session on `media`, its memory bank in `bank`. Its first events say the
    /// worker it runs on, then the video's size and `Ready`, or why it could not open.
    pub fn attach(&self, media: PathBuf, bank: PathBuf) -> SharedSession {
        let (tx, events) = unbounded_channel();
        let masks = Arc::new(Mutex::new(MaskStore::default()));
        let mut s = lock(&self.sessions);
        let stream = s.opened;
        s.opened += 1;
        let refused = match &s.ended {
            Some(why) => Some(why.clone()),
            None => self
                .commands
                .send(StreamCommand::Open { media, bank })
                .err()
                .map(|_| "the shared worker has stopped".into()),
        };
        match refused {
            Some(why) => {
                let _ = tx.send(EngineEvent::Log { level: LogLevel::Error, message: why });
                let _ = tx.send(EngineEvent::State(EngineState::Stopped));
            }
            None => {
                if let Some(w) = &s.worker {
                    let _ = tx.send(w.clone());
                }
                s.open.insert(stream, Sink::new(tx, masks.clone()));
            }
        }
        drop(s);
        let link = SharedLink { stream, commands: self.commands.clone(), sessions: self.sessions.clone() };
        SharedSession { link, events, masks }
    }

    /// Sessions attached and not yet let go.
    pub fn sessions(&self) -> usize {
        lock(&self.sessions).open.len()
    }

    /// Whether it can take no more sessions: no worker could run.
    pub fn has_ended(&self) -> bool {
        lock(&self.sessions).ended.is_some()
    }

    /// Lets every session go (a propagation under way is cancelled at its next frame),
    /// stops the worker and waits for it: blocking.
    pub fn shutdown(&self) {
        let _ = self.commands.send(StreamCommand::End);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The driver's news, to the session it concerns (or to all), as a supervisor of its own
/// would say it.
fn hear(s: &mut Sessions, news: StreamNews) {
    match news {
        StreamNews::WorkerStarted { pid, model, device, precision } => {
            let e = EngineEvent::WorkerStarted { pid, device, precision, model, restarts: s.restarts };
            for sink in s.open.values() {
                sink.send(e.clone());
                if s.restarts > 0 {
                    // Its streams are reopened and restored before anything else runs.
                    sink.send(EngineEvent::State(EngineState::Ready));
                }
            }
            s.worker = Some(e);
        }
        StreamNews::WorkerDied { reason } => {
            s.restarts += 1;
            for sink in s.open.values() {
                sink.send(EngineEvent::WorkerDied { reason: reason.clone(), stderr_tail: vec![] });
                sink.send(EngineEvent::State(EngineState::Crashed { reason: reason.clone() }));
            }
        }
        StreamNews::Opened { stream, width, height, frames, fps } => {
            if let Some(sink) = s.open.get_mut(&stream) {
                sink.frames = frames;
                sink.send(EngineEvent::MediaInfo { width, height, frames, fps });
                sink.send(EngineEvent::State(EngineState::Ready));
            }
        }
        StreamNews::Frame { stream, frame, objects, .. } => {
            let Some(sink) = s.open.get_mut(&stream) else { return };
            sink.masks.lock().unwrap_or_else(|p| p.into_inner()).insert(frame, objects);
            sink.send(EngineEvent::Masks(FrameMasks { frame, objects: objects.to_vec() }));
            if let Some(Op::Propagate { start, reverse, max_frames }) = sink.pending.front() {
                let (start, reverse, max_frames) = (*start, *reverse, *max_frames);
                sink.progress.record(frame);
                let from = start.or(sink.progress.first).unwrap_or(0);
                let total = store::span(from, reverse, max_frames, sink.frames);
                sink.send(EngineEvent::State(EngineState::Propagating { done: sink.progress.delivered, total }));
            }
        }
        StreamNews::OpDone { stream, op, cancelled } => {
            let Some(sink) = s.open.get_mut(&stream) else { return };
            if let Some(done) = sink.op_ended() {
                sink.masks.lock().unwrap_or_else(|p| p.into_inner()).apply_completed(&done);
            }
            sink.send(EngineEvent::OpFinished { index: op, cancelled });
        }
        StreamNews::OpFailed { stream, op, message } => {
            let Some(sink) = s.open.get_mut(&stream) else { return };
            sink.op_ended();
            sink.send(EngineEvent::OpFailed { index: op, message });
        }
        // Its video would not open: the session has ended.
        StreamNews::Failed { stream, message } => {
            if let Some(sink) = s.open.remove(&stream) {
                sink.send(EngineEvent::Log { level: LogLevel::Error, message });
                sink.send(EngineEvent::State(EngineState::Stopped));
            }
        }
        // Its events end: the session's folder may go.
        StreamNews::Closed { stream } => drop(s.open.remove(&stream)),
        StreamNews::Stats(stats) => {
            for sink in s.open.values() {
                sink.send(EngineEvent::Stats(stats.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sam2_api::events::ObjectMask;
    use sam2_api::rle::Rle;

    fn session(s: &mut Sessions, stream: usize) -> (UnboundedReceiver<EngineEvent>, Arc<Mutex<MaskStore>>) {
        let (tx, rx) = unbounded_channel();
        let masks = Arc::new(Mutex::new(MaskStore::default()));
        s.open.insert(stream, Sink::new(tx, masks.clone()));
        (rx, masks)
    }

    fn drain(rx: &mut UnboundedReceiver<EngineEvent>) -> Vec<EngineEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn mask(object: u32) -> ObjectMask {
        ObjectMask { object, rle: Rle::encode(&[1, 0, 0, 1], 2, 2), score: 1.0 }
    }

    /// A session hears its own stream's news as a supervisor of its own says it: the
    /// video's size, masks kept in its store, a propagation's progress, each op's end
    /// (a removal taking its masks away), and the end of its events once let go; never
    /// another stream's.
    #[test]
    fn each_session_hears_its_own_stream_as_its_own_supervisor_would_say_it() {
        let mut s = Sessions::default();
        let (mut rx, masks) = session(&mut s, 0);
        let (mut other, _) = session(&mut s, 1);
        hear(&mut s, StreamNews::Opened { stream: 0, width: 4, height: 2, frames: 10, fps: 24.0 });
        let propagate = Op::Propagate { start: Some(6), reverse: false, max_frames: None };
        s.open.get_mut(&0).unwrap().pending.extend([propagate, Op::RemoveObject { object: 2 }]);
        let timings = Default::default();
        for frame in [6, 7] {
            let objects = [mask(1), mask(2)];
            hear(&mut s, StreamNews::Frame { stream: 0, op: 3, frame, objects: &objects, timings: &timings });
        }
        hear(&mut s, StreamNews::OpDone { stream: 0, op: 3, cancelled: false });
        hear(&mut s, StreamNews::OpDone { stream: 0, op: 4, cancelled: false });
        let events = drain(&mut rx);
        let states: Vec<&EngineState> =
            events.iter().filter_map(|e| if let EngineEvent::State(st) = e { Some(st) } else { None }).collect();
        assert_eq!(
            states,
            [
                &EngineState::Ready,
                &EngineState::Propagating { done: 1, total: 4 },
                &EngineState::Propagating { done: 2, total: 4 },
                &EngineState::Ready,
            ],
            "{events:?}"
        );
        assert!(events.contains(&EngineEvent::MediaInfo { width: 4, height: 2, frames: 10, fps: 24.0 }));
        let ends: Vec<&EngineEvent> = events.iter().filter(|e| matches!(e, EngineEvent::OpFinished { .. })).collect();
        assert_eq!(ends.len(), 2, "{events:?}");
        let kept: Vec<(usize, u32)> = masks.lock().unwrap().iter().map(|((f, o), _)| (*f, *o)).collect();
        assert_eq!(kept, [(6, 1), (7, 1)], "the removal took object 2's masks away");
        assert!(drain(&mut other).is_empty(), "stream 1 heard none of stream 0's news");

        hear(&mut s, StreamNews::WorkerDied { reason: "SIGABRT".into() });
        assert!(drain(&mut other).iter().any(|e| matches!(e, EngineEvent::State(EngineState::Crashed { .. }))));
        hear(&mut s, StreamNews::Closed { stream: 0 });
        drain(&mut rx);
        assert!(rx.is_closed(), "a let-go stream's events end");
    }
}
