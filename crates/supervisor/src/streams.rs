//! Several videos in one worker (issue #18): each video a stream with its own journal
//! and memory bank, the model loaded once, the streams' propagations run in lockstep
//! (`Request::PropagateStreams`). This is a driver of its own beside the single-session
//! machine (`machine`), and smaller: one worker, no fallback ladder, no recycling. Its
//! watchdog is the machine's: a worker silent for `watchdog.heartbeat_timeout` is killed
//! and replaced, and so is one whose heartbeat goes on but that answers nothing (no frame,
//! no op's end) for `watchdog.progress_timeout` (`load_timeout` while it starts and opens
//! the streams): its model thread is wedged. What it keeps is the guarantee that matters
//! for results: a worker that dies is replaced, every stream is restored from its bank and the ops it
//! completed, and each goes on from its next op, an interrupted propagation from the
//! frame after the last one it delivered (`store::resume`) — so a crash changes no mask.
//!
//! Order of work: each stream runs its ops in journal order, each op sent as soon as the
//! stream's previous one has ended. A propagation joins the worker's lockstep under way
//! (or starts one), and the worker runs other streams' opens and single ops between its
//! steps, so the streams need not wait for each other. Up to `width` streams run at once;
//! when one ends, the caller's next job is opened in its place (`run_admitting`), while
//! the others propagate. A stream that fails (its media, its op) ends alone.
//!
//! Interactive streams (`run_interactive`, a web session each: `serve --streams`) are
//! opened, fed ops, cancelled and closed by commands as they come, instead of jobs known
//! up front: a click runs between two steps of whatever propagates, a propagation joins
//! the lockstep under way, an op that fails is that op's failure (the session goes on, as
//! on a worker of its own), and a closed stream is let go (`Request::CloseStream`).
use crate::death;
use crate::machine::WorkerNews;
use crate::options::SupervisorOptions;
use crate::process::WorkerProcess;
use crate::store::{self, PropagationProgress};
use sam2_api::device::{DeviceChoice, Precision};
use sam2_api::events::{ModelLabel, ObjectMask, StageTimings, WorkerStats};
use sam2_api::protocol::{Request, Response, StreamOp, FAULT_ENV, FAULT_STATE_ENV, PROTOCOL_VERSION};
use sam2_api::session::Op;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// `SAM2_TUI_STREAMS_TRACE=1`: the driver's requests and the worker's answers (not its
/// frames), timed from the first, on stderr: where streams wait for each other.
fn trace(what: impl FnOnce() -> String) {
    static START: std::sync::OnceLock<Option<Instant>> = std::sync::OnceLock::new();
    if let Some(t0) = START.get_or_init(|| std::env::var_os("SAM2_TUI_STREAMS_TRACE").map(|_| Instant::now())) {
        eprintln!("streams {:9.3} s  {}", t0.elapsed().as_secs_f64(), what());
    }
}

/// One video and the ops to run on it.
#[derive(Clone, Debug)]
pub struct StreamJob {
    pub media: PathBuf,
    pub ops: Vec<Op>,
}

/// What a caller of `run_interactive` tells the driver, as it happens.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamCommand {
    /// A new stream, numbered in the order the streams were opened; its memory bank goes
    /// in `bank` (the caller's folder, which it removes once the stream is `Closed`).
    Open { media: PathBuf, bank: PathBuf },
    /// The stream's next op: it runs once the stream's earlier ops have ended.
    Op { stream: usize, op: Op },
    /// Stops the stream's propagation, under way or still to start (it ends cancelled).
    Cancel { stream: usize },
    /// No more ops: a propagation under way is cancelled, ops not yet sent are dropped,
    /// and once its last op has ended the worker lets the stream go (`Closed`).
    Close { stream: usize },
    /// Every stream is closed as by `Close`, and the driver ends once they are (as when
    /// the commands' senders are all gone).
    End,
}

/// What the caller hears, as it happens.
#[derive(Debug)]
pub enum StreamNews<'a> {
    /// A frame of `stream`'s op `op` (its masks are final: a crash does not redo them).
    Frame {
        stream: usize,
        op: usize,
        frame: usize,
        objects: &'a [ObjectMask],
        timings: &'a StageTimings,
    },
    OpDone {
        stream: usize,
        op: usize,
        cancelled: bool,
    },
    /// The stream has ended on an error; the others go on.
    Failed {
        stream: usize,
        message: String,
    },
    /// An interactive stream's op failed; the stream goes on (the op did not happen, or a
    /// propagation stopped at the frame that failed).
    OpFailed {
        stream: usize,
        op: usize,
        message: String,
    },
    /// The stream's video is open (said once, not again when a new worker reopens it).
    Opened {
        stream: usize,
        width: u32,
        height: u32,
        frames: usize,
        fps: f32,
    },
    /// A closed stream is gone from the worker; its bank folder may go.
    Closed {
        stream: usize,
    },
    /// The worker's heartbeat (its memory, device, threads), while interactive streams
    /// wait for commands: what an operator's view shows of a shared worker.
    Stats(WorkerStats),
    /// The worker died; a new one takes every unfinished stream over.
    WorkerDied {
        reason: String,
    },
    /// A worker has loaded the model: where it runs, and in what precision (the
    /// requested choice resolved).
    WorkerStarted {
        pid: u32,
        model: ModelLabel,
        device: DeviceChoice,
        precision: Precision,
    },
}

/// How each stream ended: `Ok` with its ops all run (a cancelled propagation counts as
/// run), or the error that ended it.
pub type StreamResults = Vec<Result<(), String>>;

/// What a stream that had not ended when `stop` said so is left with.
pub const STOPPED: &str = "stopped before it finished";

/// Runs `jobs` in one worker, all at once; see `run_admitting`.
pub fn run(
    opts: &SupervisorOptions,
    jobs: &[StreamJob],
    stop: &dyn Fn() -> bool,
    on_news: &mut dyn FnMut(StreamNews) -> Option<usize>,
) -> anyhow::Result<StreamResults> {
    let mut jobs = jobs.iter().cloned();
    run_admitting(opts, jobs.len().max(1), &mut || jobs.next(), stop, on_news)
}

/// Runs jobs in one worker, up to `width` at once: `next_job` is asked for one whenever
/// fewer than `width` streams are running (until it says none), and its job becomes the
/// next stream, numbered in the order taken. `on_news` may answer a frame with
/// `Some(stream)` to cancel that stream's propagation under way. `stop` is asked
/// whenever the worker says anything (twice a second at least, its heartbeat): once it
/// says yes, the worker is killed and every stream not yet ended ends with `STOPPED` (the
/// caller's interrupt: the worker runs in a process group of its own, so a Ctrl-C does
/// not reach it); no job is taken after that. Errors only when no worker can run at all
/// (it will not start, load or open, or dies more often than the restart policy allows);
/// the streams that had not ended then have heard nothing.
pub fn run_admitting(
    opts: &SupervisorOptions,
    width: usize,
    next_job: &mut dyn FnMut() -> Option<StreamJob>,
    stop: &dyn Fn() -> bool,
    on_news: &mut dyn FnMut(StreamNews) -> Option<usize>,
) -> anyhow::Result<StreamResults> {
    let d =
        Driver { opts, streams: vec![], generation: 0, width: width.max(1), more: true, first_live: 0, intake: None };
    d.run(next_job, stop, on_news)
}

/// Runs interactive streams in one worker (a web session each): `commands` open them,
/// feed them ops one at a time, cancel and close them (`StreamCommand`), as they come; a
/// frame's masks, an op's end or failure, a stream opened or let go are `on_news`. Runs
/// until `commands` is closed (every stream still open then is let go with the worker)
/// or `stop` says so; a crash is replayed as in `run_admitting`, every open stream
/// reopened and restored. Errors only when no worker can run at all.
pub fn run_interactive(
    opts: &SupervisorOptions,
    commands: UnboundedReceiver<StreamCommand>,
    stop: &dyn Fn() -> bool,
    on_news: &mut dyn FnMut(StreamNews) -> Option<usize>,
) -> anyhow::Result<StreamResults> {
    let d = Driver {
        opts,
        streams: vec![],
        generation: 0,
        width: usize::MAX,
        more: false,
        first_live: 0,
        intake: Some(commands),
    };
    d.run(&mut || None, stop, on_news)
}

impl Driver<'_> {
    /// Worker after worker until every stream has ended.
    fn run(
        mut self,
        next_job: &mut dyn FnMut() -> Option<StreamJob>,
        stop: &dyn Fn() -> bool,
        on_news: &mut dyn FnMut(StreamNews) -> Option<usize>,
    ) -> anyhow::Result<StreamResults> {
        let d = &mut self;
        let opts = d.opts;
        // Deaths within the restart policy's window: a shared worker serves for days, and
        // its deaths days apart are not a crash loop.
        let mut deaths: VecDeque<Instant> = VecDeque::new();
        loop {
            match d.run_worker(next_job, stop, on_news) {
                Ok(()) => break,
                Err(Halt::Stopped) => {
                    for s in d.streams.iter_mut().filter(|s| s.running()) {
                        s.failed = Some(STOPPED.into());
                    }
                    break;
                }
                Err(Halt::Died(reason)) => {
                    let now = Instant::now();
                    deaths.retain(|t| now.duration_since(*t) < opts.restart.window);
                    deaths.push_back(now);
                    let n = deaths.len();
                    anyhow::ensure!(
                        n as u32 <= opts.restart.max_retries,
                        "the worker died {n} times within {} s (last: {reason})",
                        opts.restart.window.as_secs()
                    );
                    on_news(StreamNews::WorkerDied { reason });
                }
            }
        }
        Ok(self.streams.into_iter().map(|s| s.failed.map_or(Ok(()), Err)).collect())
    }
}

/// A stream's place in its journal.
struct Stream {
    ops: Vec<Op>,
    media: PathBuf,
    bank: PathBuf,
    num_frames: usize,
    /// Ops completed.
    done: usize,
    /// How far the propagation under way (op `done`) got, across workers.
    progress: PropagationProgress,
    failed: Option<String>,
    /// What this worker is doing for the stream now.
    busy: Busy,
    /// Fed ops by commands (`run_interactive`): it runs until closed, not until its ops
    /// run out, and an op that fails fails alone.
    interactive: bool,
    /// `Close` asked: no op is sent after the one under way.
    closing: bool,
    /// Let go by the worker (or never opened in it): it has ended.
    closed: bool,
    /// The propagation this index names is cancelled, also if it has not started yet or a
    /// new worker would resume it.
    cancel_at: Option<usize>,
    /// `Opened` was said.
    opened: bool,
}

/// A stream's request under way in the current worker.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Busy {
    /// Not open in this worker.
    Closed,
    /// `OpenStream` sent (a new stream: nothing to restore).
    Opening,
    /// Open, nothing under way: its next op can go.
    Idle,
    /// Op `done` sent.
    Op,
    /// `CloseStream` sent.
    Closing,
}

impl Stream {
    fn new(media: PathBuf, bank: PathBuf, ops: Vec<Op>, interactive: bool) -> Self {
        Stream {
            ops,
            media,
            bank,
            num_frames: 0,
            done: 0,
            progress: PropagationProgress::default(),
            failed: None,
            busy: Busy::Closed,
            interactive,
            closing: false,
            closed: false,
            cancel_at: None,
            opened: false,
        }
    }

    /// Not ended: ops to run, or (an interactive stream) not closed yet.
    fn running(&self) -> bool {
        self.failed.is_none() && !self.closed && (self.interactive || self.done < self.ops.len())
    }

    /// Ended, and nothing of it left in the worker (a job's stream is let go once it has
    /// ended; an interactive one, by its close).
    fn settled(&self) -> bool {
        !self.running() && (self.interactive || self.busy == Busy::Closed)
    }

    /// An op of it is still to run or under way.
    fn has_work(&self) -> bool {
        self.failed.is_none() && !self.closed && self.done < self.ops.len()
    }

    /// The next op to send: op `done`, a propagation resumed after its last delivered
    /// frame. None when that propagation had in fact finished.
    fn next_op(&self) -> Option<Op> {
        store::resume(&self.ops[self.done], &self.progress, self.num_frames)
    }

    /// Whether op `done` is a propagation.
    fn propagating(&self) -> bool {
        matches!(self.ops.get(self.done), Some(Op::Propagate { .. }))
    }

    fn op_done(&mut self) {
        self.done += 1;
        self.progress = PropagationProgress::default();
        self.cancel_at = None;
    }

    /// An interactive stream's op `done` failed: it did not happen (dropped, so that no
    /// replay repeats it), or, a propagation that delivered frames, it stopped there.
    fn op_failed(&mut self) {
        if self.propagating() && self.progress.delivered > 0 {
            self.op_done();
        } else {
            self.ops.remove(self.done);
            self.progress = PropagationProgress::default();
            self.cancel_at = None;
        }
    }
}

/// Why a worker's life ended early.
enum Halt {
    /// It died (how).
    Died(String),
    /// The caller's `stop` said so; the worker has been killed.
    Stopped,
}

struct Driver<'o> {
    opts: &'o SupervisorOptions,
    /// Every stream taken so far, numbered in the order taken.
    streams: Vec<Stream>,
    generation: u64,
    /// Streams running at once, at most.
    width: usize,
    /// Whether the caller may still have jobs.
    more: bool,
    /// Every stream before this one has settled (a long batch takes thousands): the scans
    /// done on each answer of the worker look only from here.
    first_live: usize,
    /// `run_interactive`'s commands, until the caller closes them.
    intake: Option<UnboundedReceiver<StreamCommand>>,
}

/// What a worker's wait brought.
enum Heard {
    Answer(Response),
    /// A heartbeat (only while commands are listened to).
    Heartbeat(WorkerStats),
    /// A caller's command; None: the caller has closed its commands.
    Command(Option<StreamCommand>),
}

/// One live worker and its news.
struct Worker<'s> {
    process: WorkerProcess,
    news: UnboundedReceiver<(u64, WorkerNews)>,
    stderr_tail: VecDeque<String>,
    /// Waits for news with a deadline (the heartbeat watchdog).
    clock: tokio::runtime::Runtime,
    /// Silence after which the worker counts as wedged and is killed.
    quiet_limit: Duration,
    /// How long an answer to a start-up request (hello, load, open, restore) may take.
    setup_limit: Duration,
    /// Why the watchdog killed it, once it has.
    killed: Option<String>,
    /// When the answer under way is due (the progress watchdog): set by the first wait
    /// for it, kept across the heartbeats and commands heard meanwhile, cleared by an
    /// answer or an idle wait.
    answer_by: Option<Instant>,
    /// The caller's stop (`run`).
    stop: &'s dyn Fn() -> bool,
}

impl<'o> Driver<'o> {
    /// One worker's life: start it, bring every stream back, run until all have ended
    /// and the caller has no job (or command) left.
    fn run_worker(
        &mut self,
        next_job: &mut dyn FnMut() -> Option<StreamJob>,
        stop: &dyn Fn() -> bool,
        on_news: &mut dyn FnMut(StreamNews) -> Option<usize>,
    ) -> Result<(), Halt> {
        let mut w = self.spawn(stop)?;
        let pid = w
            .ask(&Request::Hello { version: PROTOCOL_VERSION }, |r| match r {
                Response::Hello { version, .. } if *version != PROTOCOL_VERSION => {
                    Some(Err(format!("worker speaks protocol {version}, supervisor {PROTOCOL_VERSION}")))
                }
                Response::Hello { pid, .. } => Some(Ok(*pid)),
                Response::Error { message, .. } => Some(Err(message.clone())),
                _ => None,
            })?
            .map_err(Halt::Died)?;
        let o = self.opts;
        let load = Request::LoadModel {
            checkpoint: o.checkpoint.clone(),
            size: o.size,
            version: o.version,
            device: o.device,
            precision: o.precision,
            image_size: o.image_size,
            device_label: o.device_label.clone(),
            tuning: o.tuning.clone(),
        };
        let (model, device, precision) = w
            .ask(&load, |r| match r {
                Response::Loaded { model, device, precision, .. } => Some(Ok((model.clone(), *device, *precision))),
                Response::Error { message, .. } => Some(Err(message.clone())),
                _ => None,
            })?
            .map_err(Halt::Died)?;
        on_news(StreamNews::WorkerStarted { pid, model, device, precision });
        // The streams an earlier worker had, brought back before anything else runs.
        for s in self.streams.iter_mut() {
            s.busy = Busy::Closed;
        }
        for i in 0..self.streams.len() {
            if self.streams[i].closing {
                // Nothing of it is in this worker: it is let go already.
                self.let_go(i, on_news);
            } else if self.streams[i].running() {
                self.reopen(&mut w, i)?;
            }
        }
        loop {
            self.admit(next_job);
            self.dispatch(&mut w, on_news);
            let in_flight = self.live().iter().any(|s| matches!(s.busy, Busy::Opening | Busy::Op | Busy::Closing));
            if !in_flight {
                if self.live().iter().any(Stream::has_work) || self.more {
                    // An op that turned out done (a propagation finished before the last
                    // worker died), or a job still to take: look again.
                    continue;
                }
                if self.intake.is_none() {
                    // A healthy worker exits once its stdin closes; its exit is its last news.
                    w.process.close_stdin();
                    while w.next(self.opts.watchdog.progress_timeout).is_ok() {}
                    return Ok(());
                }
            }
            // Idle (interactive streams waiting for their users): only the heartbeat
            // watchdog applies.
            let progress = in_flight.then_some(self.opts.watchdog.progress_timeout);
            match w.next_or_command(progress, self.intake.as_mut())? {
                Heard::Answer(answer) => self.hear(&mut w, answer, on_news),
                Heard::Heartbeat(stats) => {
                    on_news(StreamNews::Stats(stats));
                }
                Heard::Command(Some(StreamCommand::End) | None) => self.caller_gone(&mut w),
                Heard::Command(Some(command)) => self.command(&mut w, command, on_news),
            }
        }
    }

    /// Sends what can go now: one open at a time, each idle stream's next op, the
    /// closes, and the propagations that are ready.
    fn dispatch(&mut self, w: &mut Worker, on_news: &mut dyn FnMut(StreamNews) -> Option<usize>) {
        let mut opening = self.live().iter().any(|s| s.busy == Busy::Opening);
        let mut passes = vec![];
        for i in self.first_live..self.streams.len() {
            let s = &mut self.streams[i];
            if !s.running() {
                if !s.interactive && s.busy == Busy::Idle {
                    // A job's stream that has ended (its ops run, or failed) is let go:
                    // the worker would otherwise hold its video, features, memory bank
                    // and graphs until it exits, one set more for each video of a long
                    // manifest.
                    s.busy = Busy::Closing;
                    w.process.send(&Request::CloseStream { stream: i as u32 });
                }
                continue;
            }
            match s.busy {
                // Asked to close before its video was opened in this worker.
                Busy::Closed if s.closing => self.let_go(i, on_news),
                // One open at a time: its answer names no stream.
                Busy::Closed if !opening => {
                    self.open(w, i);
                    opening = true;
                }
                Busy::Idle if s.closing && !s.has_work() => {
                    s.busy = Busy::Closing;
                    w.process.send(&Request::CloseStream { stream: i as u32 });
                }
                Busy::Idle if s.has_work() => match &s.ops[s.done] {
                    Op::Propagate { .. } if s.cancel_at == Some(s.done) => {
                        // Cancelled before it started: it ends as a cancelled one does.
                        let op = s.done;
                        s.op_done();
                        on_news(StreamNews::OpDone { stream: i, op, cancelled: true });
                    }
                    Op::Propagate { .. } => match s.next_op() {
                        Some(op) => passes.push((i, op)),
                        None => s.op_done(),
                    },
                    op => {
                        trace(|| format!("op {i}.{}", s.done));
                        let op = StreamOp { stream: i as u32, seq: s.done as u64, op: op.clone() };
                        s.busy = Busy::Op;
                        w.process.send(&Request::ApplyStream(op));
                    }
                },
                _ => {}
            }
        }
        // A propagation joins one under way at once. With none under way, the
        // propagations wait for every stream with an op to run to be ready for one, and
        // start together: streams started together (a group's first videos, or after a
        // crash) step together from their first frame, instead of one at a time with a
        // batch that grows step by step (each batch size a new set of CUDA graphs).
        let under_way = self.live().iter().any(|s| s.busy == Busy::Op && s.propagating());
        let all_ready = self.live().iter().filter(|s| s.has_work()).all(|s| s.busy == Busy::Idle && s.propagating());
        if !passes.is_empty() && (under_way || all_ready) {
            trace(|| format!("propagate {:?}", passes.iter().map(|p| p.0).collect::<Vec<_>>()));
            let passes = passes
                .into_iter()
                .map(|(i, op)| {
                    self.streams[i].busy = Busy::Op;
                    StreamOp { stream: i as u32, seq: self.streams[i].done as u64, op }
                })
                .collect();
            w.process.send(&Request::PropagateStreams { passes });
        }
    }

    /// A caller's command (`run_interactive`).
    fn command(
        &mut self,
        w: &mut Worker,
        command: StreamCommand,
        on_news: &mut dyn FnMut(StreamNews) -> Option<usize>,
    ) {
        match command {
            StreamCommand::Open { media, bank } => self.streams.push(Stream::new(media, bank, vec![], true)),
            StreamCommand::Op { stream, op } => match self.streams.get_mut(stream) {
                Some(s) if s.running() && !s.closing => s.ops.push(op),
                Some(s) => {
                    // Ended: the op is answered at once, as failed.
                    let message = match &s.failed {
                        Some(why) => format!("the stream has failed: {why}"),
                        None => "the stream is closed".to_string(),
                    };
                    on_news(StreamNews::OpFailed { stream, op: s.ops.len(), message });
                }
                None => {}
            },
            StreamCommand::Cancel { stream } => {
                if let Some(s) = self.streams.get_mut(stream).filter(|s| s.has_work() && s.propagating()) {
                    s.cancel_at = Some(s.done);
                    if s.busy == Busy::Op {
                        w.process.send(&Request::CancelStream { stream: stream as u32 });
                    }
                }
            }
            StreamCommand::Close { stream } => self.close(w, stream),
            StreamCommand::End => self.caller_gone(w),
        }
    }

    /// Stream `stream` takes no more ops; what it runs is cancelled if it is a
    /// propagation, and `dispatch` lets it go once that has ended.
    fn close(&mut self, w: &mut Worker, stream: usize) {
        let Some(s) = self.streams.get_mut(stream).filter(|s| s.interactive && s.running() && !s.closing) else {
            return;
        };
        s.closing = true;
        let under_way = usize::from(s.busy == Busy::Op);
        s.ops.truncate(s.done + under_way);
        if s.busy == Busy::Op && s.propagating() {
            s.cancel_at = Some(s.done);
            w.process.send(&Request::CancelStream { stream: stream as u32 });
        }
    }

    /// The caller is done (`End`, or its commands' senders are gone): every stream is
    /// closed, and the worker goes once they are.
    fn caller_gone(&mut self, w: &mut Worker) {
        self.intake = None;
        for i in self.first_live..self.streams.len() {
            self.close(w, i);
        }
    }

    /// Stream `i` has ended by its caller's close.
    fn let_go(&mut self, i: usize, on_news: &mut dyn FnMut(StreamNews) -> Option<usize>) {
        let s = &mut self.streams[i];
        s.closed = true;
        s.busy = Busy::Closed;
        on_news(StreamNews::Closed { stream: i });
    }

    /// The streams from the first that has not settled (an ended stream has nothing under
    /// way but its close: it is never `Opening` or `Op`).
    fn live(&self) -> &[Stream] {
        &self.streams[self.first_live..]
    }

    /// Takes the caller's next jobs while fewer than `width` streams run.
    fn admit(&mut self, next_job: &mut dyn FnMut() -> Option<StreamJob>) {
        while self.first_live < self.streams.len() && self.streams[self.first_live].settled() {
            self.first_live += 1;
        }
        while self.more && self.live().iter().filter(|s| s.running()).count() < self.width {
            match next_job() {
                Some(job) => {
                    let bank = self.opts.session_dir.join(format!("stream-{}", self.streams.len())).join("bank");
                    self.streams.push(Stream::new(job.media, bank, job.ops, false));
                }
                None => self.more = false,
            }
        }
    }

    /// Sends a new stream's `OpenStream` (answered by `hear`).
    fn open(&mut self, w: &mut Worker, i: usize) {
        let s = &mut self.streams[i];
        if let Err(e) = std::fs::create_dir_all(&s.bank) {
            s.failed = Some(format!("{}: {e}", s.bank.display()));
            return;
        }
        s.busy = Busy::Opening;
        trace(|| format!("open {i}"));
        let fill_holes = self.opts.fill_holes;
        w.process.send(&Request::OpenStream {
            stream: i as u32,
            path: s.media.clone(),
            bank_dir: s.bank.clone(),
            fill_holes,
        });
    }

    /// One answer of the worker, to the stream it concerns.
    fn hear(&mut self, w: &mut Worker, answer: Response, on_news: &mut dyn FnMut(StreamNews) -> Option<usize>) {
        let opening = self.live().iter().position(|s| s.busy == Busy::Opening).map(|i| self.first_live + i);
        match answer {
            Response::MediaInfo { width, height, frames, fps } => {
                if let Some(i) = opening {
                    trace(|| format!("opened {i}"));
                    let s = &mut self.streams[i];
                    s.num_frames = frames;
                    s.busy = Busy::Idle;
                    if !std::mem::replace(&mut s.opened, true) {
                        on_news(StreamNews::Opened { stream: i, width, height, frames, fps });
                    }
                }
            }
            Response::Error { message, .. } => {
                if let Some(i) = opening {
                    self.streams[i].busy = Busy::Idle;
                    self.streams[i].failed = Some(message.clone());
                    on_news(StreamNews::Failed { stream: i, message });
                }
            }
            Response::StreamFrame { stream, frame, objects, timings, .. } => {
                let i = stream as usize;
                let Some(s) = self.streams.get_mut(i) else { return };
                if matches!(s.ops[s.done], Op::Propagate { .. }) {
                    s.progress.record(frame);
                }
                let news = StreamNews::Frame { stream: i, op: s.done, frame, objects: &objects, timings: &timings };
                if let Some(c) = on_news(news) {
                    w.process.send(&Request::CancelStream { stream: c as u32 });
                }
            }
            Response::StreamDone { stream, cancelled, .. } => {
                let i = stream as usize;
                let Some(s) = self.streams.get_mut(i) else { return };
                let op = s.done;
                trace(|| format!("done {i}.{op} after {} frames", s.progress.delivered));
                s.op_done();
                s.busy = Busy::Idle;
                on_news(StreamNews::OpDone { stream: i, op, cancelled });
            }
            Response::StreamError { stream, message, .. } => {
                let i = stream as usize;
                let Some(s) = self.streams.get_mut(i) else { return };
                s.busy = Busy::Idle;
                if s.interactive {
                    let op = s.done;
                    s.op_failed();
                    on_news(StreamNews::OpFailed { stream: i, op, message });
                } else {
                    s.failed = Some(message.clone());
                    on_news(StreamNews::Failed { stream: i, message });
                }
            }
            Response::StreamClosed { stream }
                if self.streams.get(stream as usize).is_some_and(|s| s.busy == Busy::Closing) =>
            {
                self.let_go(stream as usize, on_news);
            }
            _ => {}
        }
    }

    fn spawn<'s>(&mut self, stop: &'s dyn Fn() -> bool) -> Result<Worker<'s>, Halt> {
        self.generation += 1;
        let mut env = self.opts.env.clone();
        let has = |k: &str| std::env::var_os(k).is_some() || env.iter().any(|(n, _)| n == k);
        if has(FAULT_ENV) && !has(FAULT_STATE_ENV) {
            // Faults fire once per run, not once per worker.
            let state = self.opts.session_dir.join("fault-state.json");
            env.push((FAULT_STATE_ENV.into(), state.to_string_lossy().into()));
        }
        let (tx, news) = unbounded_channel();
        let process = WorkerProcess::spawn(self.generation, &self.opts.worker_command, &env, tx, |g, n| (g, n))
            .map_err(|e| Halt::Died(format!("{e:#}")))?;
        let clock = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Halt::Died(format!("cannot start a timer: {e}")))?;
        let quiet_limit = self.opts.watchdog.heartbeat_timeout;
        Ok(Worker {
            process,
            news,
            stderr_tail: VecDeque::new(),
            clock,
            quiet_limit,
            setup_limit: self.opts.watchdog.load_timeout,
            killed: None,
            answer_by: None,
            stop,
        })
    }

    /// Opens stream `i` in a new worker and restores what earlier workers completed.
    fn reopen(&mut self, w: &mut Worker, i: usize) -> Result<(), Halt> {
        let s = &mut self.streams[i];
        let stream = i as u32;
        std::fs::create_dir_all(&s.bank).map_err(|e| Halt::Died(format!("{}: {e}", s.bank.display())))?;
        let open = Request::OpenStream {
            stream,
            path: s.media.clone(),
            bank_dir: s.bank.clone(),
            fill_holes: self.opts.fill_holes,
        };
        let opened = w.ask(&open, |r| match r {
            Response::MediaInfo { frames, .. } => Some(Ok(*frames)),
            Response::Error { message, .. } => Some(Err(message.clone())),
            _ => None,
        })?;
        match opened {
            Ok(frames) => {
                s.num_frames = frames;
                s.busy = Busy::Idle;
            }
            Err(message) => {
                s.failed = Some(message);
                return Ok(());
            }
        }
        if s.done > 0 || s.progress.delivered > 0 {
            let restore = Request::RestoreStream { stream, ops: s.ops[..s.done].to_vec() };
            let restored = w.ask(&restore, |r| match r {
                Response::Restored { .. } => Some(Ok(())),
                Response::Error { message, .. } => Some(Err(message.clone())),
                _ => None,
            })?;
            if let Err(message) = restored {
                s.failed = Some(message);
            }
        }
        Ok(())
    }
}

impl Worker<'_> {
    /// The worker's next answer (heartbeats and stderr are kept aside), or how it died.
    /// An answer must come within `progress_limit`, heartbeats or not.
    fn next(&mut self, progress_limit: Duration) -> Result<Response, Halt> {
        match self.next_or_command(Some(progress_limit), None)? {
            Heard::Answer(r) => Ok(r),
            Heard::Command(_) | Heard::Heartbeat(_) => unreachable!("no commands were listened to"),
        }
    }

    /// `next`, or a caller's command or the worker's heartbeat if one comes first (only
    /// with an `intake`); with no `progress_limit` (nothing is under way) only the
    /// heartbeat must keep coming.
    fn next_or_command(
        &mut self,
        progress_limit: Option<Duration>,
        mut intake: Option<&mut UnboundedReceiver<StreamCommand>>,
    ) -> Result<Heard, Halt> {
        self.answer_by = progress_limit.map(|l| *self.answer_by.get_or_insert_with(|| Instant::now() + l));
        let answer_by = self.answer_by;
        loop {
            let limit = match (&self.killed, answer_by) {
                // Killed: only its exit news is still to come.
                (Some(_), _) | (None, None) => self.quiet_limit,
                (None, Some(by)) => self.quiet_limit.min(by.saturating_duration_since(Instant::now())),
            };
            let news = &mut self.news;
            let listening = intake.is_some();
            let commands = if self.killed.is_none() { intake.as_deref_mut() } else { None };
            // The timer is made inside the runtime (it needs its clock).
            let heard = self.clock.block_on(async move {
                tokio::time::timeout(limit, async move {
                    match commands {
                        Some(commands) => tokio::select! {
                            biased;
                            n = news.recv() => Ok(n),
                            c = commands.recv() => Err(c),
                        },
                        None => Ok(news.recv().await),
                    }
                })
                .await
            });
            let news = match heard {
                Ok(Err(command)) => return Ok(Heard::Command(command)),
                Ok(Ok(Some((_, news)))) => news,
                Ok(Ok(None)) => return Err(Halt::Died("the worker's news stopped".into())),
                Err(_) => {
                    // Heartbeats come twice a second from their own thread, also during a
                    // long op: silence means a wedged process. Heartbeats with no answer
                    // mean a wedged model thread. Its exit news follows.
                    if self.killed.is_none() {
                        self.killed = Some(if answer_by.is_some_and(|by| Instant::now() >= by) {
                            format!("no progress for {:.1}s", progress_limit.unwrap_or_default().as_secs_f32())
                        } else {
                            format!("no heartbeat for {:.1}s", self.quiet_limit.as_secs_f32())
                        });
                    }
                    self.process.kill();
                    continue;
                }
            };
            if self.killed.is_none() && (self.stop)() {
                self.process.kill();
                return Err(Halt::Stopped);
            }
            match news {
                WorkerNews::Message(Response::Heartbeat { stats }) if listening => return Ok(Heard::Heartbeat(stats)),
                WorkerNews::Message(Response::Heartbeat { .. }) => {}
                WorkerNews::Message(r) => {
                    self.answer_by = None;
                    return Ok(Heard::Answer(r));
                }
                WorkerNews::StderrLine(line) => {
                    if self.stderr_tail.len() == 20 {
                        self.stderr_tail.pop_front();
                    }
                    self.stderr_tail.push_back(line);
                }
                WorkerNews::ProtocolError(e) => {
                    self.process.kill();
                    return Err(self.died(format!("protocol: {e}")));
                }
                WorkerNews::Exited(status) => {
                    self.process.exited = true;
                    let reason = death::describe(status, self.killed.as_deref());
                    return Err(self.died(reason));
                }
            }
        }
    }

    /// The reason a worker died, with its last words when it left some.
    fn died(&mut self, reason: String) -> Halt {
        let words = self.stderr_tail.iter().rev().find(|l| death::is_last_words(l));
        Halt::Died(match words {
            Some(w) => format!("{reason}: {w}"),
            None => reason,
        })
    }

    /// Sends `req` and waits for the answer `pick` recognises.
    fn ask<T>(&mut self, req: &Request, pick: impl Fn(&Response) -> Option<T>) -> Result<T, Halt> {
        self.process.send(req);
        loop {
            if let Some(t) = pick(&self.next(self.setup_limit)?) {
                return Ok(t);
            }
        }
    }
}
