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
//! Order of work: each stream runs its ops in journal order. Ops other than propagations
//! run stream after stream; whenever every unfinished stream has a propagation next,
//! those propagations run together. A stream that fails (its media, its op) ends alone.
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

/// Runs `jobs` in one worker; `on_news` may answer a frame with `Some(stream)` to cancel
/// that stream's propagation under way. `stop` is asked whenever the worker says
/// anything (twice a second at least, its heartbeat): once it says yes, the worker is
/// killed and every stream not yet ended ends with `STOPPED` (the caller's interrupt:
/// the worker runs in a process group of its own, so a Ctrl-C does not reach it).
/// Errors only when no worker can run at all (it will not start, load or open, or dies
/// more often than the restart policy allows).
pub fn run(
    opts: &SupervisorOptions,
    jobs: &[StreamJob],
    stop: &dyn Fn() -> bool,
    on_news: &mut dyn FnMut(StreamNews) -> Option<usize>,
) -> anyhow::Result<StreamResults> {
    let mut d = Driver::new(opts, jobs);
    let mut restarts = 0u32;
    loop {
        match d.run_worker(stop, on_news) {
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
    streams: Vec<Stream>,
    generation: u64,
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
    fn new(opts: &'o SupervisorOptions, jobs: &[StreamJob]) -> Self {
        let streams = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| Stream {
                ops: j.ops.clone(),
                media: j.media.clone(),
                bank: opts.session_dir.join(format!("stream-{i}")).join("bank"),
                num_frames: 0,
                done: 0,
                progress: PropagationProgress::default(),
                failed: None,
            })
            .collect();
        Driver { opts, streams, generation: 0 }
    }

    /// One worker's life: start it, bring every stream back, run until all have ended.
    fn run_worker(
        &mut self,
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
        for i in 0..self.streams.len() {
            if self.streams[i].running() {
                self.reopen(&mut w, i)?;
            }
        }
        loop {
            // Single ops first, stream after stream, up to each one's next propagation.
            for i in 0..self.streams.len() {
                while self.streams[i].running()
                    && !matches!(self.streams[i].ops[self.streams[i].done], Op::Propagate { .. })
                {
                    let op = self.streams[i].ops[self.streams[i].done].clone();
                    self.apply(&mut w, vec![(i, op)], on_news)?;
                }
            }
            // Then every stream's propagation together.
            let mut passes = vec![];
            for (i, s) in self.streams.iter_mut().enumerate() {
                if s.running() {
                    match s.next_op() {
                        Some(op) => passes.push((i, op)),
                        None => s.op_done(),
                    }
                }
            }
            if passes.is_empty() {
                if self.streams.iter().any(Stream::running) {
                    continue;
                }
                // A healthy worker exits once its stdin closes; its exit is its last news.
                w.process.close_stdin();
                while w.next(self.opts.watchdog.progress_timeout).is_ok() {}
                return Ok(());
            }
            self.apply(&mut w, passes, on_news)?;
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
            Ok(frames) => s.num_frames = frames,
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

    /// Sends `ops` (one single op, or propagations to run together) and follows them to
    /// their ends: one `StreamDone` or `StreamError` per stream.
    fn apply(
        &mut self,
        w: &mut Worker,
        ops: Vec<(usize, Op)>,
        on_news: &mut dyn FnMut(StreamNews) -> Option<usize>,
    ) -> Result<(), Halt> {
        let seq = |i: usize| self.streams[i].done as u64;
        let mut passes: Vec<StreamOp> =
            ops.into_iter().map(|(i, op)| StreamOp { stream: i as u32, seq: seq(i), op }).collect();
        let req = if passes.len() == 1 && !matches!(passes[0].op, Op::Propagate { .. }) {
            Request::ApplyStream(passes.pop().expect("one op"))
        } else {
            Request::PropagateStreams { passes: passes.clone() }
        };
        let mut open: Vec<usize> = match &req {
            Request::ApplyStream(op) => vec![op.stream as usize],
            _ => passes.iter().map(|p| p.stream as usize).collect(),
        };
        w.process.send(&req);
        while !open.is_empty() {
            match w.next(self.opts.watchdog.progress_timeout)? {
                Response::StreamFrame { stream, frame, objects, timings, .. } => {
                    let i = stream as usize;
                    let Some(s) = self.streams.get_mut(i) else { continue };
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
                    open.retain(|&o| o != i);
                    let op = self.streams[i].done;
                    self.streams[i].op_done();
                    on_news(StreamNews::OpDone { stream: i, op, cancelled });
                }
                Response::StreamError { stream, message, .. } => {
                    let i = stream as usize;
                    open.retain(|&o| o != i);
                    self.streams[i].failed = Some(message.clone());
                    on_news(StreamNews::Failed { stream: i, message });
                }
                _ => {}
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
