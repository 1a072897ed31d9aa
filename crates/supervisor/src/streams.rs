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
use crate::death;
use crate::machine::WorkerNews;
use crate::options::SupervisorOptions;
use crate::process::WorkerProcess;
use crate::store::{self, PropagationProgress};
use sam2_api::device::{DeviceChoice, Precision};
use sam2_api::events::{ObjectMask, StageTimings};
use sam2_api::protocol::{Request, Response, StreamOp, FAULT_ENV, FAULT_STATE_ENV, PROTOCOL_VERSION};
use sam2_api::session::Op;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// One video and the ops to run on it.
#[derive(Clone, Debug)]
pub struct StreamJob {
    pub media: PathBuf,
    pub ops: Vec<Op>,
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
    /// The worker died; a new one takes every unfinished stream over.
    WorkerDied {
        reason: String,
    },
    /// A worker has loaded the model: where it runs, and in what precision (the
    /// requested choice resolved).
    WorkerStarted {
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
    let mut d = Driver { opts, streams: vec![], generation: 0, width: width.max(1), more: true, first_live: 0 };
    let mut restarts = 0u32;
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
                restarts += 1;
                anyhow::ensure!(
                    restarts <= opts.restart.max_retries,
                    "the worker died {restarts} times (last: {reason})"
                );
                on_news(StreamNews::WorkerDied { reason });
            }
        }
    }
    Ok(d.streams.into_iter().map(|s| s.failed.map_or(Ok(()), Err)).collect())
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
}

impl Stream {
    fn running(&self) -> bool {
        self.failed.is_none() && self.done < self.ops.len()
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
    /// Every stream before this one has ended (a long batch takes thousands): the scans
    /// done on each answer of the worker look only from here.
    first_live: usize,
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
    /// The caller's stop (`run`).
    stop: &'s dyn Fn() -> bool,
}

impl<'o> Driver<'o> {
    /// One worker's life: start it, bring every stream back, run until all have ended
    /// and the caller has no job left.
    fn run_worker(
        &mut self,
        next_job: &mut dyn FnMut() -> Option<StreamJob>,
        stop: &dyn Fn() -> bool,
        on_news: &mut dyn FnMut(StreamNews) -> Option<usize>,
    ) -> Result<(), Halt> {
        let mut w = self.spawn(stop)?;
        w.ask(&Request::Hello { version: PROTOCOL_VERSION }, |r| match r {
            Response::Hello { version, .. } if *version != PROTOCOL_VERSION => {
                Some(Err(format!("worker speaks protocol {version}, supervisor {PROTOCOL_VERSION}")))
            }
            Response::Hello { .. } => Some(Ok(())),
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
        let (device, precision) = w
            .ask(&load, |r| match r {
                Response::Loaded { device, precision, .. } => Some(Ok((*device, *precision))),
                Response::Error { message, .. } => Some(Err(message.clone())),
                _ => None,
            })?
            .map_err(Halt::Died)?;
        on_news(StreamNews::WorkerStarted { device, precision });
        // The streams an earlier worker had, brought back before anything else runs.
        for s in self.streams.iter_mut() {
            s.busy = Busy::Closed;
        }
        for i in 0..self.streams.len() {
            if self.streams[i].running() {
                self.reopen(&mut w, i)?;
            }
        }
        loop {
            self.admit(next_job);
            let mut opening = self.live().iter().any(|s| s.busy == Busy::Opening);
            let mut passes = vec![];
            for i in self.first_live..self.streams.len() {
                let s = &mut self.streams[i];
                if !s.running() {
                    continue;
                }
                match s.busy {
                    // One open at a time: its answer names no stream.
                    Busy::Closed if !opening => {
                        self.open(&mut w, i);
                        opening = true;
                    }
                    Busy::Idle => match &s.ops[s.done] {
                        Op::Propagate { .. } => match s.next_op() {
                            Some(op) => passes.push((i, op)),
                            None => s.op_done(),
                        },
                        op => {
                            let op = StreamOp { stream: i as u32, seq: s.done as u64, op: op.clone() };
                            s.busy = Busy::Op;
                            w.process.send(&Request::ApplyStream(op));
                        }
                    },
                    _ => {}
                }
            }
            // A propagation joins one under way at once. With none under way, the
            // propagations wait for every running stream to be ready for one, and start
            // together: streams started together (a group's first videos, or after a
            // crash) step together from their first frame, instead of one at a time with
            // a batch that grows step by step (each batch size a new set of CUDA graphs).
            let under_way = self.live().iter().any(|s| s.busy == Busy::Op && s.propagating());
            let all_ready = self.live().iter().filter(|s| s.running()).all(|s| s.busy == Busy::Idle && s.propagating());
            if !passes.is_empty() && (under_way || all_ready) {
                let passes = passes
                    .into_iter()
                    .map(|(i, op)| {
                        self.streams[i].busy = Busy::Op;
                        StreamOp { stream: i as u32, seq: self.streams[i].done as u64, op }
                    })
                    .collect();
                w.process.send(&Request::PropagateStreams { passes });
            }
            let waiting = self.live().iter().any(|s| matches!(s.busy, Busy::Opening | Busy::Op));
            if !waiting {
                if self.live().iter().any(|s| s.running()) || self.more {
                    // An op that turned out done (a propagation finished before the last
                    // worker died), or a job still to take: look again.
                    continue;
                }
                // A healthy worker exits once its stdin closes; its exit is its last news.
                w.process.close_stdin();
                while w.next(self.opts.watchdog.progress_timeout).is_ok() {}
                return Ok(());
            }
            let answer = w.next(self.opts.watchdog.progress_timeout)?;
            self.hear(&mut w, answer, on_news);
        }
    }

    /// The streams from the first that has not ended (an ended stream has nothing under
    /// way: it is never `Opening` or `Op`).
    fn live(&self) -> &[Stream] {
        &self.streams[self.first_live..]
    }

    /// Takes the caller's next jobs while fewer than `width` streams run.
    fn admit(&mut self, next_job: &mut dyn FnMut() -> Option<StreamJob>) {
        while self.first_live < self.streams.len() && !self.streams[self.first_live].running() {
            self.first_live += 1;
        }
        while self.more && self.live().iter().filter(|s| s.running()).count() < self.width {
            match next_job() {
                Some(job) => {
                    let i = self.streams.len();
                    self.streams.push(Stream {
                        ops: job.ops,
                        media: job.media,
                        bank: self.opts.session_dir.join(format!("stream-{i}")).join("bank"),
                        num_frames: 0,
                        done: 0,
                        progress: PropagationProgress::default(),
                        failed: None,
                        busy: Busy::Closed,
                    });
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
            Response::MediaInfo { frames, .. } => {
                if let Some(i) = opening {
                    let s = &mut self.streams[i];
                    s.num_frames = frames;
                    s.busy = Busy::Idle;
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
                s.op_done();
                s.busy = Busy::Idle;
                on_news(StreamNews::OpDone { stream: i, op, cancelled });
            }
            Response::StreamError { stream, message, .. } => {
                let i = stream as usize;
                let Some(s) = self.streams.get_mut(i) else { return };
                s.busy = Busy::Idle;
                s.failed = Some(message.clone());
                on_news(StreamNews::Failed { stream: i, message });
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
        let answer_by = Instant::now() + progress_limit;
        loop {
            let limit = match self.killed {
                // Killed: only its exit news is still to come.
                Some(_) => self.quiet_limit,
                None => self.quiet_limit.min(answer_by.saturating_duration_since(Instant::now())),
            };
            let news = &mut self.news;
            // The timer is made inside the runtime (it needs its clock).
            let news = match self.clock.block_on(async move { tokio::time::timeout(limit, news.recv()).await }) {
                Ok(Some((_, news))) => news,
                Ok(None) => return Err(Halt::Died("the worker's news stopped".into())),
                Err(_) => {
                    // Heartbeats come twice a second from their own thread, also during a
                    // long op: silence means a wedged process. Heartbeats with no answer
                    // mean a wedged model thread. Its exit news follows.
                    if self.killed.is_none() {
                        self.killed = Some(if Instant::now() >= answer_by {
                            format!("no progress for {:.1}s", progress_limit.as_secs_f32())
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
                WorkerNews::Message(Response::Heartbeat { .. }) => {}
                WorkerNews::Message(r) => return Ok(r),
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
