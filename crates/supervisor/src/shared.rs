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
//! A shared worker that dies more often than the restart policy allows hands each of its
//! sessions to a supervisor of its own (`driver::adopt`: restored from the session's bank
//! and the ops it ran, a propagation under way resumed), which has the fallback ladder:
//! the session goes on, its masks unchanged. A session asked to switch model, device or
//! precision leaves its shared worker the same way (once its stream is let go), and its
//! own supervisor then switches it (a full replay, as for any session).
use crate::driver::{self, SupervisorHandle};
use crate::options::SupervisorOptions;
use crate::store::{self, MaskStore, PropagationProgress};
use crate::streams::{self, StreamCommand, StreamNews};
use sam2_api::events::{EngineCommand, EngineEvent, EngineState, FrameMasks, LogLevel};
use sam2_api::protocol::{FAULT_ENV, FAULT_STATE_ENV};
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
    /// Sessions handed to supervisors of their own (no longer this worker's): where
    /// their commands go now.
    handed: HashMap<usize, UnboundedSender<EngineCommand>>,
    /// What the worker was started with: what a supervisor of its own starts from.
    opts: Option<SupervisorOptions>,
}

/// Where one session's news goes.
struct Sink {
    events: UnboundedSender<EngineEvent>,
    masks: Arc<Mutex<MaskStore>>,
    /// Its video, and its folder (its stream's bank is `bank-0` there).
    media: PathBuf,
    session_dir: PathBuf,
    /// Its ops that have ended, as they ran (a cancelled propagation as the frames it
    /// delivered; an op that failed and changed nothing left out): what a supervisor of
    /// its own restores.
    journal: Vec<Op>,
    /// Its ops sent and not yet ended, in order: a stream's ops end in the order sent.
    pending: VecDeque<Op>,
    /// A cancel was asked for the op under way.
    cancel_asked: bool,
    /// Switches asked (a model, device or precision): the session leaves this worker
    /// once its stream is let go, and its own supervisor runs them.
    moving: Vec<EngineCommand>,
    /// The session has closed: it goes nowhere when its stream is let go.
    closing: bool,
    /// The video's length (once open), and how far the propagation under way got: what
    /// an operator's view shows as its state.
    frames: usize,
    progress: PropagationProgress,
}

impl Sink {
    fn new(events: UnboundedSender<EngineEvent>, masks: Arc<Mutex<MaskStore>>, media: PathBuf, dir: PathBuf) -> Self {
        Sink {
            events,
            masks,
            media,
            session_dir: dir,
            journal: vec![],
            pending: VecDeque::new(),
            cancel_asked: false,
            moving: vec![],
            closing: false,
            frames: 0,
            progress: PropagationProgress::default(),
        }
    }

    fn send(&self, e: EngineEvent) {
        let _ = self.events.send(e);
    }

    /// The op under way has ended (`ran`: as it ran, None if it changed nothing): the
    /// session is idle again (unless more are queued).
    fn op_ended(&mut self, ran: impl FnOnce(&Op, &PropagationProgress) -> Option<Op>) -> Option<Op> {
        let op = self.pending.pop_front();
        if let Some(ran) = op.as_ref().and_then(|op| ran(op, &self.progress)) {
            self.journal.push(ran);
        }
        self.progress = PropagationProgress::default();
        self.cancel_asked = false;
        if self.pending.is_empty() {
            self.send(EngineEvent::State(EngineState::Ready));
        }
        op
    }

    /// What a supervisor of its own takes over: its journal (the ops that ended, then
    /// those sent and not ended), how many of them are done (in the bank), and how far
    /// the first one not done got if it is a propagation under way. A propagation whose
    /// cancel was asked counts as the frames it delivered (true: dropped, nothing ran).
    fn takeover(&self) -> (Vec<Op>, usize, Option<PropagationProgress>, bool) {
        let mut ops = self.journal.clone();
        let done = ops.len();
        let mut pending = self.pending.iter().cloned();
        let mut dropped = false;
        let mut progress = None;
        if let Some(first) = pending.next() {
            let propagation = matches!(first, Op::Propagate { .. });
            if propagation && self.cancel_asked {
                // Resumed after its last delivered frame, the op as it ran ends at once.
                match store::as_ran(&first, &self.progress) {
                    Some(ran) => {
                        ops.push(ran);
                        progress = Some(self.progress.clone());
                    }
                    None => dropped = true,
                }
            } else {
                ops.push(first);
                progress = (propagation && self.progress.delivered > 0).then(|| self.progress.clone());
            }
        }
        ops.extend(pending);
        (ops, done, progress, dropped)
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
    /// needed. A switch of model, device or precision moves the session to a supervisor
    /// of its own, which runs it; send it between two ops (a running one is cancelled).
    /// Anything else (a watermark, a next item) is not a session's to ask of a shared
    /// worker: false. A session handed over takes every command as its supervisor does.
    pub fn send(&self, cmd: EngineCommand) -> bool {
        let stream = self.stream;
        // Under the lock throughout, so that an op's news cannot come before it is
        // pending, and a handover cannot come between the two.
        let mut s = lock(&self.sessions);
        if let Some(own) = s.handed.get(&stream) {
            return own.send(cmd).is_ok();
        }
        let sink = s.open.get_mut(&stream);
        let command = match cmd {
            EngineCommand::Op(op) => {
                let Some(sink) = sink else { return false };
                sink.pending.push_back(op.clone());
                let sent = self.commands.send(StreamCommand::Op { stream, op }).is_ok();
                if !sent {
                    // The worker has just given up: the op never ran.
                    sink.pending.pop_back();
                }
                return sent;
            }
            EngineCommand::Cancel => {
                if let Some(sink) = sink {
                    sink.cancel_asked = !sink.pending.is_empty();
                }
                StreamCommand::Cancel { stream }
            }
            EngineCommand::Shutdown => {
                if let Some(sink) = sink {
                    sink.closing = true;
                }
                StreamCommand::Close { stream }
            }
            EngineCommand::Prefetch(_) => return true,
            EngineCommand::SwitchModel(_) | EngineCommand::SwitchDevice(_) | EngineCommand::SwitchPrecision(_) => {
                let Some(sink) = sink else { return false };
                let first = sink.moving.is_empty();
                sink.moving.push(cmd);
                if !first {
                    return true;
                }
                StreamCommand::Close { stream }
            }
            _ => return false,
        };
        self.commands.send(command).is_ok()
    }

    /// Ops the session has run or sent while on its shared worker (what a switch
    /// replays); None once it is handed to a supervisor of its own, whose journal says.
    pub fn ops(&self) -> Option<usize> {
        // A handed-over session is no longer in `open`.
        lock(&self.sessions).open.get(&self.stream).map(|k| k.journal.len() + k.pending.len())
    }
}

impl SharedWorker {
    /// Starts the driver thread; the worker process starts with it and loads the model
    /// of `opts` (its `media` and journal are not used: sessions bring their own).
    pub fn start(opts: SupervisorOptions) -> std::io::Result<SharedWorker> {
        let (commands, intake) = unbounded_channel();
        let sessions = Arc::new(Mutex::new(Sessions { opts: Some(opts.clone()), ..Default::default() }));
        let news_to = sessions.clone();
        let thread = std::thread::Builder::new().name("shared-worker".into()).spawn(move || {
            let result = streams::run_interactive(&opts, intake, &|| false, &mut |news| {
                hear(&mut lock(&news_to), news);
                None
            });
            let mut s = lock(&news_to);
            match result {
                Ok(_) => {
                    let why = "the shared worker was stopped".to_string();
                    for (_, sink) in s.open.drain() {
                        sink.send(EngineEvent::Log { level: LogLevel::Error, message: why.clone() });
                        sink.send(EngineEvent::State(EngineState::Stopped));
                    }
                    s.ended = Some(why);
                }
                Err(e) => {
                    s.ended = Some(format!("giving up: {e:#}"));
                    let why = format!("{e:#}");
                    let streams: Vec<usize> = s.open.keys().copied().collect();
                    for stream in streams {
                        hand_over(&mut s, stream, &format!("the shared worker gave up ({why})"));
                    }
                }
            }
        })?;
        Ok(SharedWorker { commands, sessions, thread: Mutex::new(Some(thread)) })
    }

    /// A new session on `media`, its memory bank `bank-0` in `session_dir` (where a
    /// supervisor of its own would take it over). Its first events say the worker it
    /// runs on, then the video's size and `Ready`, or why it could not open.
    pub fn attach(&self, media: PathBuf, session_dir: PathBuf) -> SharedSession {
        let (tx, events) = unbounded_channel();
        let masks = Arc::new(Mutex::new(MaskStore::default()));
        let mut s = lock(&self.sessions);
        let stream = s.opened;
        s.opened += 1;
        let refused = match &s.ended {
            Some(why) => Some(why.clone()),
            None => self
                .commands
                .send(StreamCommand::Open { media: media.clone(), bank: session_dir.join("bank-0") })
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
                s.open.insert(stream, Sink::new(tx, masks.clone(), media, session_dir));
            }
        }
        drop(s);
        let link = SharedLink { stream, commands: self.commands.clone(), sessions: self.sessions.clone() };
        SharedSession { link, events, masks }
    }

    /// Sessions attached and not yet let go or handed over.
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

/// Session `stream` leaves this worker for a supervisor of its own (`why`), restored from
/// its bank and its ops, a propagation under way resumed after its last delivered frame,
/// and the switches it asked for sent on; one that cannot be handed over stops.
fn hand_over(s: &mut Sessions, stream: usize, why: &str) {
    let Some(sink) = s.open.remove(&stream) else { return };
    let Some(opts) = &s.opts else { return stop(sink, format!("giving up: {why}")) };
    let (ops, done, progress, dropped) = sink.takeover();
    let mut own = opts.clone();
    own.media = Some(sink.media.clone());
    own.session_dir = sink.session_dir.clone();
    own.initial_ops = ops;
    let env_has = |k: &str| std::env::var_os(k).is_some() || own.env.iter().any(|(n, _)| n == k);
    if env_has(FAULT_ENV) && !env_has(FAULT_STATE_ENV) {
        // A fault fires once per run: the shared worker's and its successors'.
        let state = opts.session_dir.join("fault-state.json");
        own.set_env(FAULT_STATE_ENV, &state.to_string_lossy());
    }
    let handle = match driver::adopt(own, done, progress, sink.masks.clone()) {
        Ok(h) => h,
        Err(e) => return stop(sink, format!("giving up: {why}; a worker of its own could not take over: {e:#}")),
    };
    sink.send(EngineEvent::Log { level: LogLevel::Warn, message: format!("handed to a worker of its own: {why}") });
    if dropped {
        // Cancelled before it delivered a frame: it ends here, as it would have.
        sink.send(EngineEvent::OpFinished { index: done, cancelled: true });
        sink.send(EngineEvent::State(EngineState::Ready));
    }
    for c in &sink.moving {
        handle.send(c.clone());
    }
    let commands = handle.commands.clone();
    let events = sink.events.clone();
    let passing = std::thread::Builder::new().name("shared-handed".into()).spawn(move || pass_on(handle, events));
    match passing {
        Ok(_) => drop(s.handed.insert(stream, commands)),
        Err(e) => stop(sink, format!("giving up: {why}; cannot hand the session over: {e}")),
    }
}

/// Ends a session that cannot go on: why, then `Stopped`; its events end.
fn stop(sink: Sink, why: String) {
    sink.send(EngineEvent::Log { level: LogLevel::Error, message: why });
    sink.send(EngineEvent::State(EngineState::Stopped));
}

/// Passes a handed-over session's news on from its own supervisor until that ends (the
/// session's close); then the session's events end.
fn pass_on(mut handle: SupervisorHandle, events: UnboundedSender<EngineEvent>) {
    while let Some(e) = handle.recv_blocking() {
        let _ = events.send(e);
    }
    handle.shutdown();
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
            let ran =
                |op: &Op, p: &PropagationProgress| if cancelled { store::as_ran(op, p) } else { Some(op.clone()) };
            if let Some(done) = sink.op_ended(ran) {
                sink.masks.lock().unwrap_or_else(|p| p.into_inner()).apply_completed(&done);
            }
            sink.send(EngineEvent::OpFinished { index: op, cancelled });
        }
        StreamNews::OpFailed { stream, op, message } => {
            let Some(sink) = s.open.get_mut(&stream) else { return };
            // A propagation stopped at the frame that failed; any other op did not happen.
            let ran = |op: &Op, p: &PropagationProgress| {
                if matches!(op, Op::Propagate { .. }) {
                    store::as_ran(op, p)
                } else {
                    None
                }
            };
            sink.op_ended(ran);
            sink.send(EngineEvent::OpFailed { index: op, message });
        }
        // Its video would not open: the session has ended.
        StreamNews::Failed { stream, message } => {
            if let Some(sink) = s.open.remove(&stream) {
                sink.send(EngineEvent::Log { level: LogLevel::Error, message });
                sink.send(EngineEvent::State(EngineState::Stopped));
            }
        }
        // Let go to move to a supervisor of its own (a switch), or closed: its events
        // end, and the session's folder may go.
        StreamNews::Closed { stream } => match s.open.get(&stream) {
            Some(sink) if !sink.moving.is_empty() && !sink.closing => hand_over(s, stream, "asked to switch"),
            _ => drop(s.open.remove(&stream)),
        },
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
        s.open.insert(stream, Sink::new(tx, masks.clone(), PathBuf::new(), PathBuf::new()));
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

    /// A switch lets the session's stream go before it moves to a supervisor of its own;
    /// a session that closes meanwhile is let go, not moved (nothing would stop it).
    #[test]
    fn a_session_closed_while_it_moves_is_let_go_not_handed_over() {
        let sessions = Arc::new(Mutex::new(Sessions::default()));
        let (commands, mut intake) = unbounded_channel();
        let (mut rx, _) = session(&mut lock(&sessions), 0);
        let link = SharedLink { stream: 0, commands, sessions: sessions.clone() };
        assert!(link.send(EngineCommand::SwitchPrecision(sam2_api::device::PrecisionChoice::Bf16)));
        assert_eq!(intake.try_recv().ok(), Some(StreamCommand::Close { stream: 0 }), "its stream is let go first");
        assert_eq!(link.ops(), Some(0), "on its shared worker still");
        assert!(link.send(EngineCommand::Shutdown));
        hear(&mut lock(&sessions), StreamNews::Closed { stream: 0 });
        assert!(drain(&mut rx).is_empty(), "no handover, no stop: it just ends");
        assert!(rx.is_closed());
        assert!(lock(&sessions).handed.is_empty());
    }

    fn click(frame: usize) -> Op {
        Op::AddPrompt { frame, object: 1, points: vec![], bbox: Some([0.0, 0.0, 1.0, 1.0]) }
    }

    fn frames(s: &mut Sessions, stream: usize, frames: std::ops::RangeInclusive<usize>) {
        let timings = Default::default();
        for frame in frames {
            hear(s, StreamNews::Frame { stream, op: 0, frame, objects: &[mask(1)], timings: &timings });
        }
    }

    /// What a worker of its own takes over when the shared one gives up: the ops that
    /// ended as they ran (a cancelled propagation as the frames it delivered, a failed
    /// click not at all), then the op under way, resumed after its last delivered frame.
    #[test]
    fn a_session_is_handed_over_with_its_ops_as_they_ran() {
        let mut s = Sessions::default();
        let _events = session(&mut s, 0);
        hear(&mut s, StreamNews::Opened { stream: 0, width: 4, height: 2, frames: 20, fps: 24.0 });
        let forward = Op::Propagate { start: None, reverse: false, max_frames: None };
        let pend = |s: &mut Sessions, op: &Op| s.open.get_mut(&0).unwrap().pending.push_back(op.clone());

        pend(&mut s, &click(2));
        hear(&mut s, StreamNews::OpDone { stream: 0, op: 0, cancelled: false });
        pend(&mut s, &click(99));
        hear(&mut s, StreamNews::OpFailed { stream: 0, op: 1, message: "no frame 99".into() });
        pend(&mut s, &forward);
        frames(&mut s, 0, 2..=6);
        hear(&mut s, StreamNews::OpDone { stream: 0, op: 1, cancelled: true });
        let as_ran = Op::Propagate { start: Some(2), reverse: false, max_frames: Some(4) };
        assert_eq!(s.open[&0].journal, [click(2), as_ran.clone()]);

        // Under way, 3 frames delivered: resumed after them.
        pend(&mut s, &forward);
        frames(&mut s, 0, 2..=4);
        let (ops, done, progress, dropped) = s.open[&0].takeover();
        assert_eq!(ops, [click(2), as_ran.clone(), forward.clone()]);
        assert_eq!((done, progress.map(|p| p.delivered), dropped), (2, Some(3), false));

        // Its cancel asked: it ends as the frames it delivered.
        s.open.get_mut(&0).unwrap().cancel_asked = true;
        let (ops, done, progress, dropped) = s.open[&0].takeover();
        let three = Op::Propagate { start: Some(2), reverse: false, max_frames: Some(2) };
        assert_eq!(ops, [click(2), as_ran.clone(), three.clone()]);
        assert_eq!(store::resume(&three, &progress.clone().unwrap(), 20), None, "nothing of it is left to run");
        assert_eq!((done, dropped), (2, false));

        // Cancelled before its first frame: dropped, nothing left to run.
        let sink = s.open.get_mut(&0).unwrap();
        sink.progress = PropagationProgress::default();
        let (ops, _, progress, dropped) = sink.takeover();
        assert_eq!((ops, progress, dropped), (vec![click(2), as_ran], None, true));
    }
}
