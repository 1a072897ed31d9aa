//! The supervisor's core as a pure state machine: `Machine::handle(input, now)` takes one
//! thing that happened (a client command, a worker's message or death, the clock passing
//! a deadline) and returns what to do about it, in order. It plays gunicorn's master for
//! the engine — spawn, watch, kill, restart, fall back — and, unlike gunicorn, replays
//! the session journal into the new worker. No I/O, no clock, no threads: `driver` does
//! what the outputs say, and asks `deadline()` when to call back with `Input::Tick`.
//!
//! A worker goes Hello → Loading → Opening → Restoring → Ready (`Phase`). While it is not
//! Ready only the load timeout judges it; when Ready, the heartbeat timeout, and the
//! progress timeout while an op runs. Ops `[..completed]` of the journal are reflected in
//! the worker's memory bank; the next one is in flight or waits. A death is a crash unless
//! the worker was retiring (asked to stop: a switch, recycling, shutdown).
use super::death;
use super::options::SupervisorOptions;
use super::policy::{CrashPolicy, Decision, Rung};
use super::store::{self, PropagationProgress};
use sam2_api::device::PrecisionChoice;
use sam2_api::events::{EngineCommand, EngineEvent, EngineState, LogLevel, ObjectMask, StageTimings};
use sam2_api::model::{ModelSize, ModelVersion};
use sam2_api::protocol::{Request, Response, PROTOCOL_VERSION};
use sam2_api::protocol::{FAULT_ENV, FAULT_STATE_ENV};
use sam2_api::session::{Journal, Op};
use sam2_api::tuning::Tuning;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// How long a worker asked to stop may take before it is killed.
pub const RETIRE_GRACE: Duration = Duration::from_secs(2);
/// Stderr lines kept for the death report.
pub const STDERR_TAIL: usize = 20;

/// What a worker process says, as its reader threads see it.
#[derive(Debug)]
pub enum WorkerNews {
    Message(Response),
    /// The stdout stream broke (garbage or a half frame): the worker is untrustworthy.
    ProtocolError(String),
    StderrLine(String),
    /// Always its last news.
    Exited(ExitStatus),
}

#[derive(Debug)]
pub enum Input {
    Command(EngineCommand),
    /// The client dropped its command sender: a shutdown.
    CommandsClosed,
    /// The answer to `Output::Spawn`: the worker's pid, or why it could not start.
    Spawned {
        generation: u64,
        pid: Result<u32, String>,
    },
    Worker {
        generation: u64,
        news: WorkerNews,
    },
    /// The deadline asked for has passed (any input checks the timers; this one only that).
    Tick,
}

/// A change to the mask store the client reads (`SupervisorHandle::masks`).
#[derive(Clone, Debug, PartialEq)]
pub enum MaskChange {
    Insert {
        frame: usize,
        objects: Vec<ObjectMask>,
    },
    /// The effect of a completed op (`MaskStore::apply_completed`).
    Completed(Op),
    Clear,
}

/// What the driver does, in order. Requests to a worker name its generation: one for an
/// older worker is dropped.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Start a worker; answer with `Input::Spawned`.
    Spawn {
        generation: u64,
        command: Vec<String>,
        env: Vec<(String, String)>,
    },
    Send {
        generation: u64,
        request: Request,
    },
    CloseStdin {
        generation: u64,
    },
    Kill {
        generation: u64,
    },
    Emit(EngineEvent),
    /// Emit `EngineEvent::Log` and trace it at its level.
    Log {
        level: LogLevel,
        message: String,
    },
    /// Trace only (the operator's log file, not the user's log pane).
    Trace(String),
    /// Write the journal (atomically) before anything that follows is sent.
    SaveJournal {
        path: PathBuf,
        journal: Journal,
    },
    Masks(MaskChange),
    /// A memory bank no worker will read again.
    RemoveDir(PathBuf),
}

/// The questions the machine asks of the machine it runs on (files and environment),
/// answered by the driver's `RealHost` and by a fake in the tests. Queries only.
pub trait Host {
    fn exists(&self, path: &Path) -> bool;
    fn is_file(&self, path: &Path) -> bool;
    /// Where the official checkpoint of `size` is (or would be put by `weights download`).
    fn official_checkpoint(&self, size: ModelSize, version: ModelVersion) -> PathBuf;
    /// Whether the supervisor's own environment sets `key` (workers inherit it).
    fn env_has(&self, key: &str) -> bool;
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Hello,
    Loading,
    Opening,
    Restoring,
    Ready,
}

/// The live worker, as the machine knows it.
struct Worker {
    generation: u64,
    /// None until the driver has reported the spawn.
    pid: Option<u32>,
    phase: Phase,
    last_heartbeat: Instant,
    last_progress: Instant,
    frames: u64,
    /// Asked to stop on purpose (switch, recycle, shutdown): its exit is not a crash.
    retiring: Option<Instant>,
    /// Why we SIGKILLed it, if we did (its death is then ours, not the device's).
    killed: Option<String>,
    load_sent: Option<Instant>,
    load_took: Duration,
    /// Its last words: the stderr lines shown when it dies.
    stderr_tail: VecDeque<String>,
}

impl Worker {
    fn pid(&self) -> u32 {
        self.pid.unwrap_or(0)
    }

    fn ready(&self) -> bool {
        self.phase == Phase::Ready && self.retiring.is_none()
    }
}

struct InFlight {
    index: usize,
    progress: PropagationProgress,
    user_cancel: bool,
    recycle_cancel: bool,
    started: Instant,
    frames_here: usize,
}

/// A checkpoint on a rung: everything a worker needs to load a model.
#[derive(Clone, Debug)]
struct Setup {
    checkpoint: PathBuf,
    rung: Rung,
    precision: PrecisionChoice,
}

pub struct Machine {
    opts: SupervisorOptions,
    host: Box<dyn Host + Send>,
    journal: Journal,
    /// Ops `[..completed]` are done and reflected in the current bank.
    completed: usize,
    policy: CrashPolicy,
    rung: Rung,
    bank_epoch: u32,
    worker: Option<Worker>,
    generation: u64,
    restarts: u32,
    /// When the next worker starts (once no worker is alive).
    restart_at: Option<Instant>,
    /// Nothing sensible to retry: no worker starts until a switch.
    stopped: bool,
    shutting_down: bool,
    finished: bool,
    num_frames: usize,
    /// (width, height) of the media, once a worker has opened it: ops are checked
    /// against it before they are journaled.
    media_size: Option<(u32, u32)>,
    inflight: Option<InFlight>,
    /// An interrupted propagation (index, how far it got) to continue in the next worker.
    resume: Option<(usize, PropagationProgress)>,
    recycle_due: bool,
    crashed_at: Option<Instant>,
    /// The checkpoint each model size was last loaded from (where a switch back finds it).
    loaded_from: BTreeMap<ModelSize, PathBuf>,
    /// The last set-up a worker loaded: what a failed switch goes back to.
    last_good: Option<Setup>,
    /// Set while a switch's worker loads; its failure reverts to this set-up.
    switch_from: Option<Setup>,
    out: Vec<Output>,
}

impl Machine {
    /// A machine for `opts` whose journal (`session_dir/journal.json`) holds `journal`;
    /// the first worker starts at the first input (`Input::Tick` at `now` will do).
    pub fn new(opts: SupervisorOptions, journal: Journal, host: Box<dyn Host + Send>, now: Instant) -> Machine {
        let rung = Rung { device: opts.device, label: opts.device_label.clone(), size: opts.size };
        Machine {
            policy: CrashPolicy::new(opts.restart.clone()),
            opts,
            host,
            journal,
            completed: 0,
            rung,
            bank_epoch: 0,
            worker: None,
            generation: 0,
            restarts: 0,
            restart_at: Some(now),
            stopped: false,
            shutting_down: false,
            finished: false,
            num_frames: 0,
            media_size: None,
            inflight: None,
            resume: None,
            recycle_due: false,
            crashed_at: None,
            loaded_from: Default::default(),
            last_good: None,
            switch_from: None,
            out: vec![],
        }
    }

    /// Takes over a session another worker ran (`driver::adopt`): ops `[..completed]` of
    /// its journal are done and in the bank `bank-0` of the session folder, which the
    /// first worker restores as after a crash; op `completed` (a propagation that got
    /// `progress` far) goes on after its last delivered frame, the ops after it follow.
    pub fn adopt(&mut self, completed: usize, progress: Option<PropagationProgress>) {
        self.completed = completed.min(self.journal.ops.len());
        self.resume = progress.map(|p| (self.completed, p));
    }

    /// One input at `now`; what to do about it, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Output> {
        if !self.finished {
            match input {
                Input::Command(c) => self.on_command(c, now),
                Input::CommandsClosed => self.on_command(EngineCommand::Shutdown, now),
                Input::Spawned { generation, pid } => self.on_spawned(generation, pid, now),
                Input::Worker { generation, news } => self.on_news(generation, news, now),
                Input::Tick => {}
            }
            if self.shutting_down && self.worker.is_none() {
                self.finished = true;
                self.emit(EngineEvent::State(EngineState::Stopped));
            } else {
                self.on_timers(now);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// When to call back with `Input::Tick` if nothing else happens first; None: never.
    pub fn deadline(&self) -> Option<Instant> {
        let restart = self.restart_at.filter(|_| self.worker.is_none() && !self.shutting_down);
        let watchdog = self.watchdog().map(|(at, _)| at);
        [restart, watchdog].into_iter().flatten().min()
    }

    /// The shutdown is complete: no worker, nothing more will happen.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    // ---- outputs ----

    fn emit(&mut self, e: EngineEvent) {
        self.out.push(Output::Emit(e));
    }

    fn log(&mut self, level: LogLevel, message: String) {
        self.out.push(Output::Log { level, message });
    }

    fn send(&mut self, request: Request) {
        if let Some(w) = self.worker.as_ref() {
            self.out.push(Output::Send { generation: w.generation, request });
        }
    }

    fn masks(&mut self, change: MaskChange) {
        self.out.push(Output::Masks(change));
    }

    fn save_journal(&mut self) {
        let path = self.opts.session_dir.join("journal.json");
        self.out.push(Output::SaveJournal { path, journal: self.journal.clone() });
    }

    /// On disk before it is sent: a crash mid-op cannot lose the prompt.
    fn journal_push(&mut self, op: Op) {
        self.journal.ops.push(op);
        self.save_journal();
    }

    fn journal_replace(&mut self, index: usize, op: Option<Op>) {
        match op {
            Some(op) => self.journal.ops[index] = op,
            None => {
                self.journal.ops.remove(index);
            }
        }
        self.save_journal();
    }

    fn bank_dir(&self) -> PathBuf {
        self.opts.session_dir.join(format!("bank-{}", self.bank_epoch))
    }

    /// The bank belongs to one model on one device and one journal: a switch starts a
    /// fresh one and replays the whole journal (old masks stay shown until recomputed).
    fn fresh_bank(&mut self) {
        let old = self.bank_dir();
        self.out.push(Output::RemoveDir(old));
        self.bank_epoch += 1;
        self.completed = 0;
        self.resume = None;
        self.inflight = None;
    }

    fn open_media(&mut self, path: PathBuf) {
        let bank_dir = Some(self.bank_dir());
        self.send(Request::OpenMedia { path, bank_dir, fill_holes: self.opts.fill_holes });
    }

    // ---- timers ----

    /// The watchdog's next deadline for the live worker, and what passing it means.
    fn watchdog(&self) -> Option<(Instant, String)> {
        let w = self.worker.as_ref()?;
        if w.killed.is_some() {
            return None; // its exit is on the way
        }
        let wd = &self.opts.watchdog;
        let after = |t: Instant, d: Duration, why: String| t.checked_add(d).map(|at| (at, why));
        if let Some(since) = w.retiring {
            return after(since, RETIRE_GRACE, "did not exit when asked".into());
        }
        // A worker still starting (exec, libtorch's dynamic loading, the model load) is
        // judged by the load timeout alone: on a loaded machine its first heartbeat can
        // come later than the heartbeat timeout, and killing it there only restarts the
        // same slow start.
        if w.phase != Phase::Ready {
            let why = format!("no answer while starting for {:.0}s", wd.load_timeout.as_secs_f32());
            return after(w.last_progress, wd.load_timeout, why);
        }
        let heartbeat = after(
            w.last_heartbeat,
            wd.heartbeat_timeout,
            format!("no heartbeat for {:.1}s", wd.heartbeat_timeout.as_secs_f32()),
        );
        let progress = self.inflight.as_ref().and_then(|_| {
            after(
                w.last_progress,
                wd.progress_timeout,
                format!("no progress for {:.1}s", wd.progress_timeout.as_secs_f32()),
            )
        });
        // The earlier one; on a tie the missing heartbeat is the reason given.
        [heartbeat, progress].into_iter().flatten().reduce(|a, b| if b.0 < a.0 { b } else { a })
    }

    fn on_timers(&mut self, now: Instant) {
        if let Some(at) = self.restart_at {
            if now >= at && self.worker.is_none() && !self.shutting_down {
                self.restart_at = None;
                self.spawn(now);
            }
        }
        if let Some((at, why)) = self.watchdog() {
            if now >= at {
                let pid = self.worker.as_ref().map(Worker::pid).unwrap_or(0);
                self.kill(why.clone());
                self.log(LogLevel::Warn, format!("watchdog: killing worker {pid}: {why}"));
            }
        }
    }

    // ---- the worker's lifecycle ----

    fn spawn(&mut self, now: Instant) {
        self.generation += 1;
        let mut env = self.opts.env.clone();
        let fault_set = self.host.env_has(FAULT_ENV) || env.iter().any(|(k, _)| k == FAULT_ENV);
        let state_set = self.host.env_has(FAULT_STATE_ENV) || env.iter().any(|(k, _)| k == FAULT_STATE_ENV);
        if fault_set && !state_set {
            // Faults fire once per session, not once per worker.
            env.push((FAULT_STATE_ENV.into(), self.opts.session_dir.join("fault-state.json").to_string_lossy().into()));
        }
        self.emit(EngineEvent::State(EngineState::Starting));
        self.out.push(Output::Spawn { generation: self.generation, command: self.opts.worker_command.clone(), env });
        self.worker = Some(Worker {
            generation: self.generation,
            pid: None,
            phase: Phase::Hello,
            last_heartbeat: now,
            last_progress: now,
            frames: 0,
            retiring: None,
            killed: None,
            load_sent: None,
            load_took: Duration::ZERO,
            stderr_tail: VecDeque::with_capacity(STDERR_TAIL),
        });
    }

    /// Whether `generation` is the live worker's (news from an older one is stale).
    fn is_current(&self, generation: u64) -> bool {
        self.worker.as_ref().is_some_and(|w| w.generation == generation)
    }

    fn on_spawned(&mut self, generation: u64, pid: Result<u32, String>, now: Instant) {
        if !self.is_current(generation) {
            return;
        }
        match pid {
            Ok(pid) => {
                if let Some(w) = self.worker.as_mut() {
                    w.pid = Some(pid);
                }
                self.send(Request::Hello { version: PROTOCOL_VERSION });
            }
            Err(reason) => {
                self.worker = None;
                self.log(LogLevel::Error, reason.clone());
                let d = self.policy.on_crash(now, &self.rung.clone(), &reason);
                self.decide(d, now);
            }
        }
    }

    fn kill(&mut self, why: String) {
        if let Some(w) = self.worker.as_mut() {
            if w.killed.is_none() {
                w.killed = Some(why);
                self.out.push(Output::Kill { generation: w.generation });
            }
        }
    }

    /// Asks the live worker to stop; its replacement starts when it has exited.
    fn retire(&mut self, why: &str, now: Instant) {
        let Some(w) = self.worker.as_mut() else {
            return;
        };
        if w.retiring.is_none() {
            w.retiring = Some(now);
            let (generation, pid) = (w.generation, w.pid());
            self.send(Request::Cancel);
            self.send(Request::Shutdown);
            self.out.push(Output::CloseStdin { generation });
            self.log(LogLevel::Info, format!("stopping worker {pid} ({why})"));
        }
    }

    /// Like `retire`, quietly and without a cancel: the worker failed to set up and has
    /// nothing running.
    fn dismiss(&mut self, now: Instant) {
        if let Some(w) = self.worker.as_mut() {
            w.retiring = Some(now);
            let generation = w.generation;
            self.send(Request::Shutdown);
            self.out.push(Output::CloseStdin { generation });
        }
    }

    fn on_news(&mut self, generation: u64, news: WorkerNews, now: Instant) {
        if !self.is_current(generation) {
            return; // a dead worker's last words
        }
        match news {
            WorkerNews::Exited(status) => self.on_exit(status, now),
            WorkerNews::StderrLine(line) => {
                // Rust's backtrace hint follows every panic: as the last line it would hide
                // the panic message just above it. It is logged, not kept.
                if death::is_last_words(&line) {
                    if let Some(w) = self.worker.as_mut() {
                        if w.stderr_tail.len() == STDERR_TAIL {
                            w.stderr_tail.pop_front();
                        }
                        w.stderr_tail.push_back(line.clone());
                    }
                }
                self.emit(EngineEvent::Log { level: LogLevel::Info, message: format!("worker: {line}") });
            }
            WorkerNews::ProtocolError(e) => {
                self.log(LogLevel::Error, format!("worker sent garbage ({e}); killing it"));
                self.kill(format!("protocol error: {e}"));
            }
            WorkerNews::Message(m) => self.on_message(m, now),
        }
    }

    fn on_exit(&mut self, status: ExitStatus, now: Instant) {
        let Some(w) = self.worker.take() else {
            return;
        };
        if self.shutting_down {
            return;
        }
        if w.retiring.is_some() {
            if !self.stopped && self.restart_at.is_none() {
                self.restart_at = Some(now);
            }
            return;
        }
        // A crash.
        let reason = death::describe(status, w.killed.as_deref());
        self.crashed_at = Some(now);
        self.emit(EngineEvent::WorkerDied { reason: reason.clone(), stderr_tail: w.stderr_tail.into() });
        self.emit(EngineEvent::State(EngineState::Crashed { reason: reason.clone() }));
        self.log(LogLevel::Error, format!("worker {} on {} died: {reason}", w.pid.unwrap_or(0), self.rung.label()));
        if let Some(f) = self.inflight.take() {
            if f.user_cancel {
                self.finish(f.index, f.progress, true);
            } else if matches!(self.journal.ops[f.index], Op::Propagate { .. }) {
                self.resume = Some((f.index, f.progress));
            }
            // Other ops are simply re-sent: they are journaled and not completed.
        }
        let d = self.policy.on_crash(now, &self.rung.clone(), &reason);
        self.decide(d, now);
    }

    fn decide(&mut self, d: Decision, now: Instant) {
        match d {
            Decision::Retry { attempt, delay } => {
                self.restarts += 1;
                self.emit(EngineEvent::State(EngineState::Restarting { attempt }));
                let message = format!(
                    "restarting the {} worker in {} ms (attempt {attempt} of {})",
                    self.rung.label(),
                    delay.as_millis(),
                    self.opts.restart.max_retries
                );
                self.log(LogLevel::Warn, message);
                self.restart_at = Some(now.checked_add(delay).unwrap_or(now));
            }
            Decision::FallBack { to, reason } => {
                self.restarts += 1;
                let from = self.rung.clone();
                self.emit(EngineEvent::FellBack { from: from.device, to: to.device, reason: reason.clone() });
                self.log(LogLevel::Warn, format!("falling back from {} to {}: {reason}", from.label(), to.label()));
                self.rung = to;
                self.fresh_bank();
                self.restart_at = Some(now);
            }
            Decision::GiveUp { reason } => {
                self.log(LogLevel::Error, format!("giving up: {reason}"));
                self.stopped = true;
                self.restart_at = None;
                self.emit(EngineEvent::State(EngineState::Stopped));
            }
        }
    }

    /// Nothing sensible to retry: stop the worker and wait for the user.
    fn stop_engine(&mut self, reason: &str, now: Instant) {
        self.stopped = true;
        self.restart_at = None;
        self.emit(EngineEvent::State(EngineState::Crashed { reason: reason.to_string() }));
        self.retire(reason, now);
        self.emit(EngineEvent::State(EngineState::Stopped));
    }

    // ---- the start-up handshake and the worker's answers ----

    fn on_message(&mut self, m: Response, now: Instant) {
        let Some(w) = self.worker.as_mut() else {
            return;
        };
        w.last_heartbeat = now;
        if w.retiring.is_some() {
            return; // nothing from a worker on its way out changes the session
        }
        if !matches!(m, Response::Heartbeat { .. }) {
            w.last_progress = now;
        }
        let pid = w.pid();
        let load_took = w.load_sent.map(|t| now.duration_since(t)).unwrap_or_default();
        match m {
            Response::Hello { version, pid: remote_pid, torch_version } => {
                if version != PROTOCOL_VERSION {
                    self.log(
                        LogLevel::Error,
                        format!("worker speaks protocol {version}, supervisor {PROTOCOL_VERSION}; wrong binary?"),
                    );
                    self.stop_engine("protocol version mismatch", now);
                    return;
                }
                self.out.push(Output::Trace(format!("worker {remote_pid} up (libtorch {torch_version})")));
                let req = Request::LoadModel {
                    checkpoint: self.opts.checkpoint.clone(),
                    size: self.rung.size,
                    version: self.opts.version,
                    device: self.rung.device,
                    precision: self.opts.precision,
                    image_size: self.opts.image_size,
                    device_label: self.rung.label.clone(),
                    // A worker restarted after a death resumes a session at once: its
                    // first frames would capture the graphs anyway, and a warm-up first
                    // would only make the pause the user sees longer.
                    tuning: Tuning {
                        warm_up: self.opts.tuning.warm_up && self.restarts == 0,
                        ..self.opts.tuning.clone()
                    },
                };
                if let Some(w) = self.worker.as_mut() {
                    w.phase = Phase::Loading;
                    w.load_sent = Some(now);
                }
                self.emit(EngineEvent::State(EngineState::Loading));
                self.send(req);
            }
            Response::Loaded { model, device, precision, device_label } => {
                if let Some(w) = self.worker.as_mut() {
                    w.load_took = load_took;
                }
                if self.rung.device == sam2_api::device::DeviceChoice::Auto {
                    self.rung.device = device;
                }
                self.rung.size.get_or_insert(model.size);
                self.loaded_from.insert(model.size, self.opts.checkpoint.clone());
                self.last_good = Some(Setup {
                    checkpoint: self.opts.checkpoint.clone(),
                    rung: self.rung.clone(),
                    precision: self.opts.precision,
                });
                self.switch_from = None;
                self.emit(EngineEvent::WorkerStarted { pid, device, precision, model, restarts: self.restarts });
                self.log(LogLevel::Info, format!("worker {pid} loaded the model on {device_label}"));
                match self.opts.media.clone() {
                    Some(path) => {
                        if let Some(w) = self.worker.as_mut() {
                            w.phase = Phase::Opening;
                        }
                        self.open_media(path);
                    }
                    None => self.ready(now),
                }
            }
            Response::MediaInfo { width, height, frames, fps } => {
                self.num_frames = frames;
                self.media_size = Some((width, height));
                self.emit(EngineEvent::MediaInfo { width, height, frames, fps });
                // Also with nothing completed: the bank may hold an op the dead worker
                // finished without the news reaching us, which the worker takes back.
                if let Some(w) = self.worker.as_mut() {
                    w.phase = Phase::Restoring;
                }
                let ops = self.journal.ops[..self.completed].to_vec();
                self.send(Request::Restore { ops });
            }
            Response::Restored { ops } => {
                self.log(LogLevel::Info, format!("restored the state of {ops} ops from the memory bank"));
                self.ready(now);
            }
            Response::Error { seq: None, message } => self.on_setup_error(message, now),
            Response::Error { seq: Some(seq), message } => self.on_op_error(seq, message, now),
            Response::Frame { seq, frame, objects, timings } => self.on_frame(seq, frame, objects, timings, now),
            Response::OpDone { seq, cancelled } => {
                let Some(f) = self.inflight.take_if(|f| f.index as u64 == seq) else {
                    return;
                };
                if cancelled && f.recycle_cancel && !f.user_cancel {
                    // Stopped for recycling, not by the user: continue in the next worker.
                    self.resume = Some((f.index, f.progress));
                    self.recycle_due = false;
                    self.retire("recycling", now);
                    return;
                }
                self.finish(f.index, f.progress, cancelled);
                self.dispatch(now);
            }
            Response::Heartbeat { stats } => {
                let over = match (&stats.mps, self.opts.recycling.mps_driver_share) {
                    (Some(m), Some(share)) if m.recommended_max > 0 => {
                        (m.driver_allocated as f64) > share * m.recommended_max as f64
                    }
                    _ => false,
                };
                self.emit(EngineEvent::Stats(stats));
                if over && !self.recycle_due && self.worker.as_ref().is_some_and(Worker::ready) {
                    self.recycle("MPS driver memory above the recycling share", now);
                }
            }
            Response::Prefetched { .. } | Response::Bye => {}
            // The streams of several videos are `streams::run`'s, not this session's.
            Response::StreamFrame { .. }
            | Response::StreamDone { .. }
            | Response::StreamError { .. }
            | Response::StreamClosed { .. } => {}
        }
    }

    fn ready(&mut self, now: Instant) {
        let Some(w) = self.worker.as_mut() else {
            return;
        };
        w.phase = Phase::Ready;
        let load = w.load_took;
        if let Some(t) = self.crashed_at.take() {
            let total = now.duration_since(t);
            self.log(
                LogLevel::Info,
                format!(
                    "recovered {} ms after the crash, excluding {} ms of model load",
                    total.saturating_sub(load).as_millis(),
                    load.as_millis()
                ),
            );
        }
        self.emit(EngineEvent::State(EngineState::Ready));
        self.dispatch(now);
    }

    fn on_setup_error(&mut self, message: String, now: Instant) {
        let phase = self.worker.as_ref().map(|w| w.phase);
        match phase {
            Some(Phase::Loading | Phase::Hello) if self.switch_from.is_some() => {
                // A switch that does not load goes back to what worked, saying why.
                let back = self.switch_from.take().expect("checked");
                self.log(
                    LogLevel::Error,
                    format!(
                        "the switch failed ({message}); going back to {} on {}",
                        back.checkpoint.display(),
                        back.rung.label()
                    ),
                );
                self.opts.checkpoint = back.checkpoint;
                self.opts.size = back.rung.size;
                self.opts.device = back.rung.device;
                self.opts.precision = back.precision;
                self.rung = back.rung;
                self.fresh_bank();
                self.dismiss(now);
            }
            Some(Phase::Loading | Phase::Hello) if message.contains(&self.opts.checkpoint.display().to_string()) => {
                // A checkpoint problem is the same on every device: falling back to the
                // CPU or retrying cannot help. One message, with how to get the file.
                let hint = if self.host.exists(&self.opts.checkpoint) {
                    String::new()
                } else {
                    let size = self.rung.size.unwrap_or(ModelSize::Tiny);
                    format!(
                        " — `sam2-tui weights download {}` fetches the official file (about {} MB) into weights/, or pass --checkpoint FILE",
                        size.name(),
                        sam2_api::catalog::approx_megabytes(size)
                    )
                };
                self.log(LogLevel::Error, format!("{message}{hint}"));
                self.stop_engine("no usable checkpoint", now);
            }
            Some(Phase::Loading | Phase::Hello) => {
                self.log(LogLevel::Error, format!("{} worker: {message}", self.rung.label()));
                let d = self.policy.next_rung(&self.rung.clone(), &message);
                self.dismiss(now);
                self.decide(d, now);
            }
            Some(Phase::Restoring) => {
                self.log(LogLevel::Warn, format!("{message}; replaying the journal from scratch on a fresh bank"));
                self.fresh_bank();
                if let Some(w) = self.worker.as_mut() {
                    w.phase = Phase::Opening;
                }
                if let Some(path) = self.opts.media.clone() {
                    self.open_media(path);
                }
            }
            Some(Phase::Opening) => {
                self.log(LogLevel::Error, message.clone());
                self.stop_engine(&message, now);
            }
            _ => self.log(LogLevel::Warn, format!("worker: {message}")),
        }
    }

    fn on_op_error(&mut self, seq: u64, message: String, now: Instant) {
        let Some(f) = self.inflight.take_if(|f| f.index as u64 == seq) else {
            return;
        };
        self.log(LogLevel::Error, format!("op {} failed: {message}", f.index));
        self.emit(EngineEvent::OpFailed { index: f.index, message });
        // It did not happen: drop it so no replay repeats the failure.
        if f.progress.delivered == 0 {
            self.journal_replace(f.index, None);
        } else {
            self.finish(f.index, f.progress, true);
        }
        if self.completed >= self.journal.ops.len() {
            self.emit(EngineEvent::State(EngineState::Ready));
        }
        self.dispatch(now);
    }

    fn on_frame(&mut self, seq: u64, frame: usize, objects: Vec<ObjectMask>, timings: StageTimings, now: Instant) {
        let num_frames = self.num_frames;
        let Some(f) = self.inflight.as_mut().filter(|f| f.index as u64 == seq) else {
            return;
        };
        let op = self.journal.ops[f.index].clone();
        let is_prop = matches!(op, Op::Propagate { .. });
        if is_prop {
            f.progress.record(frame);
        }
        f.frames_here += 1;
        let fps = f.frames_here as f32 / now.duration_since(f.started).as_secs_f32().max(1e-3);
        let progress = f.progress.clone();
        self.masks(MaskChange::Insert { frame, objects: objects.clone() });
        self.emit(EngineEvent::Masks(sam2_api::events::FrameMasks { frame, objects }));
        if let Op::Propagate { start, reverse, max_frames } = op {
            let total = store::span(start.or(progress.first).unwrap_or(0), reverse, max_frames, num_frames);
            self.emit(EngineEvent::Progress { frame, done: progress.delivered, total, fps, timings });
        }
        let Some(w) = self.worker.as_mut() else {
            return;
        };
        w.frames += 1;
        let frames = w.frames;
        if let Some(n) = self.opts.recycling.after_frames.filter(|&n| frames >= n) {
            if !self.recycle_due {
                self.recycle(&format!("{n} frames processed"), now);
            }
        }
    }

    // ---- the client's commands ----

    fn on_command(&mut self, c: EngineCommand, now: Instant) {
        match c {
            EngineCommand::Op(op) => {
                let fits = match self.media_size {
                    Some((w, h)) => op.check_against(self.num_frames, w, h),
                    None => Ok(()),
                };
                if let Err(e) = op.validate().and(fits) {
                    self.log(LogLevel::Error, format!("refused op: {e}"));
                    return;
                }
                self.journal_push(op);
                if self.stopped {
                    self.log(
                        LogLevel::Warn,
                        "engine is stopped; the op is journaled and runs after a device or model switch".into(),
                    );
                }
                self.dispatch(now);
            }
            EngineCommand::Cancel => {
                if let Some(f) = self.inflight.as_mut() {
                    f.user_cancel = true;
                    self.send(Request::Cancel);
                } else if let Some((index, progress)) = self.resume.take() {
                    // Cancelled while its worker was being replaced.
                    self.finish(index, progress, true);
                }
            }
            EngineCommand::SwitchModel(size) => self.switch_model(size, now),
            EngineCommand::SwitchDevice(device) => {
                self.switch_from = self.last_good.clone();
                self.opts.device = device;
                self.rung = Rung { device, label: None, size: self.rung.size };
                self.switch(format!("switching to {device}"), now);
            }
            EngineCommand::SwitchPrecision(precision) => {
                self.switch_from = self.last_good.clone();
                self.opts.precision = precision;
                self.switch(format!("switching to {precision} precision"), now);
            }
            EngineCommand::SetWatermark(ratio) => {
                if !(0.0..=2.0).contains(&ratio) {
                    self.log(LogLevel::Error, format!("watermark ratio {ratio} is outside 0.0..=2.0"));
                    return;
                }
                // Read once when the MPS allocator is created: it takes a new process.
                self.opts.set_env("PYTORCH_MPS_HIGH_WATERMARK_RATIO", &ratio.to_string());
                let low: Option<f32> = self
                    .opts
                    .env
                    .iter()
                    .find(|(k, _)| k == "PYTORCH_MPS_LOW_WATERMARK_RATIO")
                    .and_then(|(_, v)| v.parse().ok());
                if low.is_some_and(|l| l > ratio) {
                    self.opts.set_env("PYTORCH_MPS_LOW_WATERMARK_RATIO", &ratio.to_string());
                }
                self.recycle(&format!("high watermark ratio set to {ratio}"), now);
            }
            EngineCommand::Prefetch(frame) => {
                if self.worker.as_ref().is_some_and(Worker::ready) {
                    self.send(Request::Prefetch { frame });
                }
            }
            EngineCommand::NextItem { media, session_dir, ops } => self.next_item(media, session_dir, ops, now),
            EngineCommand::Shutdown => {
                self.shutting_down = true;
                self.restart_at = None;
                self.retire("shutdown", now);
            }
        }
    }

    fn switch_model(&mut self, size: ModelSize, now: Instant) {
        // Checked before the working worker is stopped: a switch that cannot load must
        // not cost the user the engine they have.
        if self.last_good.as_ref().is_some_and(|g| g.rung.size == Some(size))
            && self.worker.as_ref().is_some_and(Worker::ready)
        {
            self.log(LogLevel::Info, format!("already running the {} model", size.name()));
            return;
        }
        let checkpoint = match self.checkpoint_for(size) {
            Ok(c) => c,
            Err(why) => {
                let staying = self
                    .last_good
                    .as_ref()
                    .and_then(|g| g.rung.size)
                    .map(|s| format!("; staying on {}", s.name()))
                    .unwrap_or_default();
                self.log(LogLevel::Error, format!("not switching to the {} model: {why}{staying}", size.name()));
                return;
            }
        };
        self.switch_from = self.last_good.clone();
        self.opts.checkpoint = checkpoint;
        self.opts.size = Some(size);
        self.rung.size = Some(size);
        self.switch(format!("switching to the {} model", size.name()), now);
    }

    /// The checkpoint for `size`: the one it was last loaded from, else the official file
    /// where `weights download` puts it; an error says what is missing and how to get it.
    fn checkpoint_for(&self, size: ModelSize) -> Result<PathBuf, String> {
        if let Some(p) = self.loaded_from.get(&size).filter(|p| self.host.is_file(p)) {
            return Ok(p.clone());
        }
        let version = self.opts.version.unwrap_or(ModelVersion::V2_1);
        let official = self.host.official_checkpoint(size, version);
        if self.host.is_file(&official) {
            return Ok(official);
        }
        let given = self
            .last_good
            .as_ref()
            .map(|g| format!("{} holds another size; ", g.checkpoint.display()))
            .unwrap_or_default();
        Err(format!(
            "no checkpoint for it ({given}{} does not exist: `sam2-tui weights download {}` fetches it, about {} MB)",
            official.display(),
            size.name(),
            sam2_api::catalog::approx_megabytes(size)
        ))
    }

    /// The next batch item on the same model: everything of the session changes, the
    /// worker stays when it is idle (it opens the new media on a fresh bank); one caught
    /// mid-way (an op running, media opening) is replaced, so nothing of the old item can
    /// answer for the new one. The journal is on disk already (`SupervisorHandle::next_item`).
    fn next_item(&mut self, media: PathBuf, session_dir: PathBuf, ops: Vec<Op>, now: Instant) {
        let idle = self.inflight.is_none() && self.worker.as_ref().is_some_and(Worker::ready);
        self.fresh_bank();
        self.journal = Journal { version: Journal::VERSION, ops };
        self.opts.session_dir = session_dir;
        self.opts.media = Some(media.clone());
        self.masks(MaskChange::Clear);
        self.num_frames = 0;
        self.crashed_at = None;
        if idle {
            if let Some(w) = self.worker.as_mut() {
                w.phase = Phase::Opening;
                w.last_progress = now;
            }
            self.open_media(media);
        } else {
            self.retire("moving to the next item", now);
        }
        // No worker: the one being restarted opens the new media when it has loaded.
    }

    /// A model or device switch: fresh bank, full replay, crash history forgotten. The
    /// old model's partial propagation is redone in full by the replay.
    fn switch(&mut self, why: String, now: Instant) {
        self.policy = CrashPolicy::new(self.opts.restart.clone());
        self.stopped = false;
        self.fresh_bank();
        self.log(LogLevel::Info, why.clone());
        if self.worker.is_some() {
            self.retire(&why, now);
        } else {
            self.restart_at = Some(now);
        }
    }

    /// Restart a healthy worker at a frame boundary, keeping its bank (same model/device).
    fn recycle(&mut self, why: &str, now: Instant) {
        if self.worker.is_none() {
            return;
        }
        if let Some(f) = self.inflight.as_mut() {
            f.recycle_cancel = true;
            self.recycle_due = true;
            self.send(Request::Cancel);
            self.log(LogLevel::Info, format!("recycling the worker at the next frame boundary ({why})"));
        } else {
            self.recycle_due = false;
            self.retire(why, now);
        }
    }

    // ---- dispatching journal ops ----

    /// Sends the next journal op to a ready, idle worker.
    fn dispatch(&mut self, now: Instant) {
        loop {
            let Some(w) = self.worker.as_ref() else {
                return;
            };
            if !w.ready() || self.inflight.is_some() || self.stopped {
                return;
            }
            if self.recycle_due {
                self.recycle_due = false;
                self.retire("recycling", now);
                return;
            }
            let index = self.completed;
            let Some(op) = self.journal.ops.get(index).cloned() else {
                return;
            };
            let mut progress = PropagationProgress::default();
            let mut to_send = op.clone();
            if let Some((ri, rp)) = self.resume.take() {
                if ri == index {
                    match store::resume(&op, &rp, self.num_frames) {
                        Some(r) => {
                            let from = match &r {
                                Op::Propagate { start: Some(s), reverse, .. } => {
                                    format!(", from frame {s} {}", if *reverse { "backwards" } else { "forwards" })
                                }
                                _ => String::new(),
                            };
                            self.log(
                                LogLevel::Info,
                                format!("resuming the propagation after {} frames{from}", rp.delivered),
                            );
                            to_send = r;
                            progress = rp;
                        }
                        None => {
                            self.finish(index, rp, false);
                            continue;
                        }
                    }
                }
            }
            if let Op::Propagate { .. } = op {
                let total = self.total_of(&op, &progress);
                self.emit(EngineEvent::State(EngineState::Propagating { done: progress.delivered, total }));
            }
            self.inflight = Some(InFlight {
                index,
                progress,
                user_cancel: false,
                recycle_cancel: false,
                started: now,
                frames_here: 0,
            });
            if let Some(w) = self.worker.as_mut() {
                w.last_progress = now;
            }
            self.send(Request::Apply { seq: index as u64, op: to_send });
            return;
        }
    }

    fn total_of(&self, op: &Op, p: &PropagationProgress) -> usize {
        match op {
            Op::Propagate { start, reverse, max_frames } => match start.or(p.first) {
                Some(s) => store::span(s, *reverse, *max_frames, self.num_frames),
                None => self.num_frames,
            },
            _ => 1,
        }
    }

    /// Op `index` is done (or cancelled after `progress`): journal it as it ran.
    fn finish(&mut self, index: usize, progress: PropagationProgress, cancelled: bool) {
        let op = self.journal.ops[index].clone();
        let is_prop = matches!(op, Op::Propagate { .. });
        if is_prop && cancelled {
            let ran = store::as_ran(&op, &progress);
            let kept = ran.is_some();
            self.journal_replace(index, ran);
            if kept {
                self.completed += 1;
            }
        } else {
            self.masks(MaskChange::Completed(op));
            self.completed += 1;
        }
        if is_prop {
            self.emit(EngineEvent::PropagationFinished { cancelled });
        }
        self.emit(EngineEvent::OpFinished { index, cancelled });
        if self.completed >= self.journal.ops.len() {
            self.emit(EngineEvent::State(EngineState::Ready));
        }
    }
}
