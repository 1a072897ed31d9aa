//! The supervisor loop, on its own thread: one input channel (commands, and every worker
//! thread's news tagged by generation), a 50 ms tick for the watchdog and backoff timers.
//! It plays gunicorn's master for the engine: spawn, watch, kill, restart, fall back —
//! and, unlike gunicorn, it replays the session journal into the new worker.
use super::death;
use super::options::SupervisorOptions;
use super::policy::{CrashPolicy, Decision, Rung};
use super::process::{WorkerNews, WorkerProcess};
use super::store::{self, JournalStore, MaskStore, PropagationProgress};
use sam2_api::events::{EngineCommand, EngineEvent, EngineState, LogLevel, StageTimings};
use sam2_api::protocol::{Request, Response, PROTOCOL_VERSION};
use sam2_api::protocol::{FAULT_ENV, FAULT_STATE_ENV};
use sam2_api::session::Op;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

const TICK: Duration = Duration::from_millis(50);
/// How long a worker asked to stop may take before it is killed.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// What the console (or a headless command) holds.
pub struct SupervisorHandle {
    pub commands: UnboundedSender<EngineCommand>,
    pub events: UnboundedReceiver<EngineEvent>,
    /// Every finished mask (latest per (frame, object)), surviving worker deaths.
    pub masks: Arc<Mutex<MaskStore>>,
    /// The session journal on disk.
    pub journal_path: PathBuf,
    threads: Vec<JoinHandle<()>>,
}

impl SupervisorHandle {
    pub fn send(&self, cmd: EngineCommand) -> bool {
        self.commands.send(cmd).is_ok()
    }

    /// The next event, blocking (for non-async callers; not from inside a tokio runtime).
    pub fn recv_blocking(&mut self) -> Option<EngineEvent> {
        self.events.blocking_recv()
    }

    /// The next event within `timeout`, for non-async callers.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<EngineEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.events.try_recv() {
                Ok(e) => return Some(e),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
                Err(_) if Instant::now() >= deadline => return None,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Moves this supervisor (and its worker, model loaded) to the next item of a batch:
    /// `media` with `ops` as its journal in `session_dir`. Call it when the previous
    /// item's ops have all finished; a crash from here on replays the new journal.
    pub fn next_item(&mut self, media: PathBuf, session_dir: PathBuf, ops: Vec<Op>) -> anyhow::Result<()> {
        std::fs::create_dir_all(&session_dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create session directory: {e}", session_dir.display()))?;
        let journal_path = session_dir.join("journal.json");
        JournalStore::create(&journal_path, ops.clone())?;
        remove_stale_banks(&session_dir)?;
        self.journal_path = journal_path;
        anyhow::ensure!(self.send(EngineCommand::NextItem { media, session_dir, ops }), "the supervisor has stopped");
        Ok(())
    }

    /// Stops the worker and waits until every supervisor thread has ended.
    pub fn shutdown(self) {
        let SupervisorHandle { commands, events, threads, .. } = self;
        let _ = commands.send(EngineCommand::Shutdown);
        drop(commands);
        for t in threads {
            let _ = t.join();
        }
        drop(events);
    }
}

enum Input {
    Command(EngineCommand),
    CommandsClosed,
    Worker(u64, WorkerNews),
}

fn wrap(generation: u64, news: WorkerNews) -> Input {
    Input::Worker(generation, news)
}

/// Starts the supervisor on its own threads; the first worker starts at once.
/// Memory banks an earlier process left in the session directory. A bank holds the
/// outputs of one journal on one model; this process starts a new journal, and an old
/// bank read as its own would pass off the old run's masks (another model's, another
/// click's) as this run's, and mark frames tracked that this run never tracked.
fn remove_stale_banks(session_dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(session_dir)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("bank-") && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).map_err(|e| {
                anyhow::anyhow!("{}: cannot remove an earlier run's memory bank: {e}", entry.path().display())
            })?;
        }
    }
    Ok(())
}

pub fn start(opts: SupervisorOptions) -> anyhow::Result<SupervisorHandle> {
    std::fs::create_dir_all(&opts.session_dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create session directory: {e}", opts.session_dir.display()))?;
    let journal_path = opts.session_dir.join("journal.json");
    let journal = JournalStore::create(&journal_path, opts.initial_ops.clone())?;
    remove_stale_banks(&opts.session_dir)?;
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let (tx, rx) = mpsc::channel::<Input>();
    let masks = Arc::new(Mutex::new(MaskStore::default()));

    let fwd_tx = tx.clone();
    let forwarder = std::thread::Builder::new().name("supervisor-commands".into()).spawn(move || {
        while let Some(c) = cmd_rx.blocking_recv() {
            if fwd_tx.send(Input::Command(c)).is_err() {
                return;
            }
        }
        let _ = fwd_tx.send(Input::CommandsClosed);
    })?;

    let core = Core::new(opts, journal, masks.clone(), ev_tx, tx, rx);
    let main = std::thread::Builder::new().name("supervisor".into()).spawn(move || core.run())?;
    Ok(SupervisorHandle { commands: cmd_tx, events: ev_rx, masks, journal_path, threads: vec![main, forwarder] })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Hello,
    Loading,
    Opening,
    Restoring,
    Ready,
}

struct Live {
    proc: WorkerProcess,
    phase: Phase,
    last_heartbeat: Instant,
    last_progress: Instant,
    frames: u64,
    /// Asked to stop on purpose (switch, recycle, shutdown): its exit is not a crash.
    retiring: Option<Instant>,
    load_sent: Option<Instant>,
    load_took: Duration,
    /// The precision its model was loaded in (`auto` resolved for its rung).
    precision: sam2_api::device::Precision,
}

struct InFlight {
    index: usize,
    progress: PropagationProgress,
    user_cancel: bool,
    recycle_cancel: bool,
    started: Instant,
    frames_here: usize,
}

struct Core {
    opts: SupervisorOptions,
    journal: JournalStore,
    /// Ops `[..completed]` are done and reflected in the current bank.
    completed: usize,
    masks: Arc<Mutex<MaskStore>>,
    events: UnboundedSender<EngineEvent>,
    tx: Sender<Input>,
    rx: Receiver<Input>,
    policy: CrashPolicy,
    rung: Rung,
    bank_epoch: u32,
    worker: Option<Live>,
    generation: u64,
    restarts: u32,
    restart_at: Option<Instant>,
    stopped: bool,
    shutting_down: bool,
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
    loaded_from: std::collections::BTreeMap<sam2_api::model::ModelSize, PathBuf>,
    /// The last set-up a worker loaded: what a failed switch goes back to.
    last_good: Option<Setup>,
    /// Set while a switch's worker loads; its failure reverts to this set-up.
    switch_from: Option<Setup>,
}

/// A checkpoint on a rung: everything a worker needs to load a model.
#[derive(Clone, Debug)]
struct Setup {
    checkpoint: PathBuf,
    rung: Rung,
}

impl Core {
    fn new(
        opts: SupervisorOptions,
        journal: JournalStore,
        masks: Arc<Mutex<MaskStore>>,
        events: UnboundedSender<EngineEvent>,
        tx: Sender<Input>,
        rx: Receiver<Input>,
    ) -> Self {
        let rung = Rung { device: opts.device, label: opts.device_label.clone(), size: opts.size };
        Core {
            policy: CrashPolicy::new(opts.restart.clone()),
            opts,
            journal,
            completed: 0,
            masks,
            events,
            tx,
            rx,
            rung,
            bank_epoch: 0,
            worker: None,
            generation: 0,
            restarts: 0,
            restart_at: Some(Instant::now()),
            stopped: false,
            shutting_down: false,
            num_frames: 0,
            media_size: None,
            inflight: None,
            resume: None,
            recycle_due: false,
            crashed_at: None,
            loaded_from: Default::default(),
            last_good: None,
            switch_from: None,
        }
    }

    fn emit(&self, e: EngineEvent) {
        let _ = self.events.send(e);
    }

    fn log(&self, level: LogLevel, message: String) {
        match level {
            LogLevel::Info => tracing::info!("{message}"),
            LogLevel::Warn => tracing::warn!("{message}"),
            LogLevel::Error => tracing::error!("{message}"),
        }
        self.emit(EngineEvent::Log { level, message });
    }

    fn bank_dir(&self) -> PathBuf {
        self.opts.session_dir.join(format!("bank-{}", self.bank_epoch))
    }

    /// The bank belongs to one model on one device: a switch starts a fresh one and
    /// replays the whole journal (old masks stay shown until recomputed).
    fn fresh_bank(&mut self) {
        let old = self.bank_dir();
        self.bank_epoch += 1;
        let _ = std::fs::remove_dir_all(old);
        self.completed = 0;
        self.resume = None;
        self.inflight = None;
    }

    fn run(mut self) {
        loop {
            let wait = self.restart_at.map(|t| t.saturating_duration_since(Instant::now()).min(TICK)).unwrap_or(TICK);
            match self.rx.recv_timeout(wait) {
                Ok(Input::Command(c)) => self.on_command(c),
                Ok(Input::CommandsClosed) => self.on_command(EngineCommand::Shutdown),
                Ok(Input::Worker(g, news)) => self.on_news(g, news),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.shutting_down && self.worker.is_none() {
                break;
            }
            self.tick();
        }
        self.emit(EngineEvent::State(EngineState::Stopped));
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if let Some(at) = self.restart_at {
            if now >= at && self.worker.is_none() && !self.shutting_down {
                self.restart_at = None;
                self.spawn();
            }
        }
        let wd = self.opts.watchdog.clone();
        let busy = self.inflight.is_some();
        let Some(live) = self.worker.as_mut() else {
            return;
        };
        if live.proc.exited {
            return;
        }
        // A worker still starting (exec, libtorch's dynamic loading, the model load) is
        // judged by the load timeout alone: on a loaded machine its first heartbeat can
        // come later than the heartbeat timeout, and killing it there only restarts the
        // same slow start.
        let kill_reason = if let Some(since) = live.retiring {
            (now.duration_since(since) > RETIRE_GRACE).then(|| "did not exit when asked".to_string())
        } else if live.phase != Phase::Ready {
            (now.duration_since(live.last_progress) > wd.load_timeout)
                .then(|| format!("no answer while starting for {:.0}s", wd.load_timeout.as_secs_f32()))
        } else if now.duration_since(live.last_heartbeat) > wd.heartbeat_timeout {
            Some(format!("no heartbeat for {:.1}s", wd.heartbeat_timeout.as_secs_f32()))
        } else if live.phase == Phase::Ready && busy && now.duration_since(live.last_progress) > wd.progress_timeout {
            Some(format!("no progress for {:.1}s", wd.progress_timeout.as_secs_f32()))
        } else {
            None
        };
        if let Some(why) = kill_reason {
            let pid = live.proc.pid;
            live.proc.kill(&why);
            self.log(LogLevel::Warn, format!("watchdog: killing worker {pid}: {why}"));
        }
    }

    fn spawn(&mut self) {
        self.generation += 1;
        let mut env = self.opts.env.clone();
        let fault_set = std::env::var_os(FAULT_ENV).is_some() || env.iter().any(|(k, _)| k == FAULT_ENV);
        let state_set = std::env::var_os(FAULT_STATE_ENV).is_some() || env.iter().any(|(k, _)| k == FAULT_STATE_ENV);
        if fault_set && !state_set {
            // Faults fire once per session, not once per worker.
            env.push((FAULT_STATE_ENV.into(), self.opts.session_dir.join("fault-state.json").to_string_lossy().into()));
        }
        self.emit(EngineEvent::State(EngineState::Starting));
        match WorkerProcess::spawn(self.generation, &self.opts.worker_command, &env, self.tx.clone(), wrap) {
            Ok(mut proc) => {
                proc.send(&Request::Hello { version: PROTOCOL_VERSION });
                let now = Instant::now();
                self.worker = Some(Live {
                    proc,
                    phase: Phase::Hello,
                    last_heartbeat: now,
                    last_progress: now,
                    frames: 0,
                    retiring: None,
                    load_sent: None,
                    load_took: Duration::ZERO,
                    precision: sam2_api::device::Precision::Fp32,
                });
            }
            Err(e) => {
                let reason = format!("{e:#}");
                self.log(LogLevel::Error, reason.clone());
                let d = self.policy.on_crash(Instant::now(), &self.rung.clone(), &reason);
                self.decide(d);
            }
        }
    }

    fn send(&mut self, req: Request) {
        if let Some(live) = self.worker.as_mut() {
            live.proc.send(&req);
        }
    }

    /// Asks the live worker to stop; its replacement starts when it has exited.
    fn retire(&mut self, why: &str) {
        let Some(live) = self.worker.as_mut() else {
            return;
        };
        if live.retiring.is_none() {
            live.retiring = Some(Instant::now());
            live.proc.send(&Request::Cancel);
            live.proc.send(&Request::Shutdown);
            live.proc.close_stdin();
            let pid = live.proc.pid;
            self.log(LogLevel::Info, format!("stopping worker {pid} ({why})"));
        }
    }

    fn on_command(&mut self, c: EngineCommand) {
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
                // On disk before it is sent: a crash mid-op cannot lose the prompt.
                if let Err(e) = self.journal.push(op) {
                    self.log(LogLevel::Error, format!("{e:#}"));
                }
                if self.stopped {
                    self.log(
                        LogLevel::Warn,
                        "engine is stopped; the op is journaled and runs after a device or model switch".into(),
                    );
                }
                self.dispatch();
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
            EngineCommand::SwitchModel(size) => {
                // Checked before the working worker is stopped: a switch that cannot load
                // must not cost the user the engine they have.
                if self.last_good.as_ref().is_some_and(|g| g.rung.size == Some(size)) && live_ready(&self.worker) {
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
                        self.log(
                            LogLevel::Error,
                            format!("not switching to the {} model: {why}{staying}", size.name()),
                        );
                        return;
                    }
                };
                self.switch_from = self.last_good.clone();
                self.opts.checkpoint = checkpoint;
                self.opts.size = Some(size);
                self.rung.size = Some(size);
                self.switch(format!("switching to the {} model", size.name()));
            }
            EngineCommand::SwitchDevice(device) => {
                self.switch_from = self.last_good.clone();
                self.opts.device = device;
                self.rung = Rung { device, label: None, size: self.rung.size };
                self.switch(format!("switching to {device}"));
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
                self.recycle(&format!("high watermark ratio set to {ratio}"));
            }
            EngineCommand::Prefetch(frame) => {
                if self.worker.as_ref().is_some_and(|l| l.phase == Phase::Ready && l.retiring.is_none()) {
                    self.send(Request::Prefetch { frame });
                }
            }
            EngineCommand::NextItem { media, session_dir, ops } => self.next_item(media, session_dir, ops),
            EngineCommand::Shutdown => {
                self.shutting_down = true;
                self.restart_at = None;
                if self.worker.is_some() {
                    self.retire("shutdown");
                }
            }
        }
    }

    /// The checkpoint for `size`: the one it was last loaded from, else the official file
    /// where `weights download` puts it; an error says what is missing and how to get it.
    fn checkpoint_for(&self, size: sam2_api::model::ModelSize) -> Result<PathBuf, String> {
        if let Some(p) = self.loaded_from.get(&size).filter(|p| p.is_file()) {
            return Ok(p.clone());
        }
        let version = self.opts.version.unwrap_or(sam2_api::model::ModelVersion::V2_1);
        let official = sam2_api::catalog::default_checkpoint(size, version);
        if official.is_file() {
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
    /// answer for the new one.
    fn next_item(&mut self, media: PathBuf, session_dir: PathBuf, ops: Vec<Op>) {
        let idle = self.inflight.is_none()
            && self.worker.as_ref().is_some_and(|l| l.phase == Phase::Ready && l.retiring.is_none());
        self.fresh_bank();
        self.journal = JournalStore {
            journal: sam2_api::session::Journal { version: sam2_api::session::Journal::VERSION, ops },
            path: session_dir.join("journal.json"),
        };
        self.opts.session_dir = session_dir;
        self.opts.media = Some(media.clone());
        *self.masks.lock().unwrap_or_else(|p| p.into_inner()) = store::MaskStore::default();
        self.num_frames = 0;
        self.crashed_at = None;
        if idle {
            if let Some(l) = self.worker.as_mut() {
                l.phase = Phase::Opening;
                l.last_progress = Instant::now();
            }
            let bank_dir = Some(self.bank_dir());
            self.send(Request::OpenMedia { path: media, bank_dir, fill_holes: self.opts.fill_holes });
        } else if self.worker.is_some() {
            self.retire("moving to the next item");
        }
        // No worker: the one being restarted opens the new media when it has loaded.
    }

    /// A model or device switch: fresh bank, full replay, crash history forgotten.
    fn switch(&mut self, why: String) {
        self.policy = CrashPolicy::new(self.opts.restart.clone());
        self.stopped = false;
        if let Some((i, p)) = self.resume.take() {
            // The old model's partial propagation is redone in full by the replay.
            let _ = (i, p);
        }
        self.fresh_bank();
        self.log(LogLevel::Info, why.clone());
        if self.worker.is_some() {
            self.retire(&why);
        } else {
            self.restart_at = Some(Instant::now());
        }
    }

    /// Restart a healthy worker at a frame boundary, keeping its bank (same model/device).
    fn recycle(&mut self, why: &str) {
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
            self.retire(why);
        }
    }

    fn dispatch(&mut self) {
        loop {
            let Some(live) = self.worker.as_ref() else {
                return;
            };
            if live.phase != Phase::Ready || live.retiring.is_some() || self.inflight.is_some() || self.stopped {
                return;
            }
            if self.recycle_due {
                self.recycle_due = false;
                self.retire("recycling");
                return;
            }
            let index = self.completed;
            let Some(op) = self.journal.journal.ops.get(index).cloned() else {
                return;
            };
            let mut progress = PropagationProgress::default();
            let mut to_send = op.clone();
            if let Some((ri, rp)) = self.resume.take() {
                if ri == index {
                    match store::resume(&op, &rp, self.num_frames) {
                        Some(r) => {
                            self.log(
                                LogLevel::Info,
                                format!(
                                    "resuming the propagation after {} frames{}",
                                    rp.delivered,
                                    match &r {
                                        Op::Propagate { start: Some(s), reverse, .. } => format!(
                                            ", from frame {s} {}",
                                            if *reverse { "backwards" } else { "forwards" }
                                        ),
                                        _ => String::new(),
                                    }
                                ),
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
                self.emit(EngineEvent::State(EngineState::Propagating {
                    done: progress.delivered,
                    total: self.total_of(&op, &progress),
                }));
            }
            self.inflight = Some(InFlight {
                index,
                progress,
                user_cancel: false,
                recycle_cancel: false,
                started: Instant::now(),
                frames_here: 0,
            });
            if let Some(live) = self.worker.as_mut() {
                live.last_progress = Instant::now();
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
        let op = self.journal.journal.ops[index].clone();
        let is_prop = matches!(op, Op::Propagate { .. });
        if is_prop && cancelled {
            let ran = store::as_ran(&op, &progress);
            let kept = ran.is_some();
            if let Err(e) = self.journal.replace(index, ran) {
                self.log(LogLevel::Error, format!("{e:#}"));
            }
            if kept {
                self.completed += 1;
            }
        } else {
            self.masks.lock().unwrap_or_else(|p| p.into_inner()).apply_completed(&op);
            self.completed += 1;
        }
        if is_prop {
            self.emit(EngineEvent::PropagationFinished { cancelled });
        }
        self.emit(EngineEvent::OpFinished { index, cancelled });
        if self.completed >= self.journal.journal.ops.len() {
            self.emit(EngineEvent::State(EngineState::Ready));
        }
    }

    fn on_news(&mut self, generation: u64, news: WorkerNews) {
        let current = self.worker.as_ref().is_some_and(|l| l.proc.generation == generation);
        if !current {
            return; // a dead worker's last words
        }
        match news {
            WorkerNews::Exited(status) => self.on_exit(status),
            WorkerNews::StderrLine(line) => {
                tracing::debug!(target: "worker", "{line}");
                self.emit(EngineEvent::Log { level: LogLevel::Info, message: format!("worker: {line}") });
            }
            WorkerNews::ProtocolError(e) => {
                let why = format!("protocol error: {e}");
                self.log(LogLevel::Error, format!("worker sent garbage ({e}); killing it"));
                if let Some(l) = self.worker.as_mut() {
                    l.proc.kill(&why);
                }
            }
            WorkerNews::Message(m) => self.on_message(m),
        }
    }

    fn on_message(&mut self, m: Response) {
        let now = Instant::now();
        let Some(live) = self.worker.as_mut() else {
            return;
        };
        live.last_heartbeat = now;
        if live.retiring.is_some() {
            return; // nothing from a worker on its way out changes the session
        }
        if !matches!(m, Response::Heartbeat { .. }) {
            live.last_progress = now;
        }
        let pid = live.proc.pid;
        let load_took = live.load_sent.map(|t| now.duration_since(t)).unwrap_or_default();
        match m {
            Response::Hello { version, pid, torch_version } => {
                if version != PROTOCOL_VERSION {
                    self.log(
                        LogLevel::Error,
                        format!("worker speaks protocol {version}, supervisor {PROTOCOL_VERSION}; wrong binary?"),
                    );
                    self.stop_engine("protocol version mismatch");
                    return;
                }
                tracing::info!("worker {pid} up (libtorch {torch_version})");
                let req = Request::LoadModel {
                    checkpoint: self.opts.checkpoint.clone(),
                    size: self.rung.size,
                    version: self.opts.version,
                    device: self.rung.device,
                    precision: self.opts.precision,
                    image_size: self.opts.image_size,
                    device_label: self.rung.label.clone(),
                    tuning: self.opts.tuning.clone(),
                };
                if let Some(l) = self.worker.as_mut() {
                    l.phase = Phase::Loading;
                    l.load_sent = Some(now);
                }
                self.emit(EngineEvent::State(EngineState::Loading));
                self.send(req);
            }
            Response::Loaded { model, device, precision, device_label } => {
                if let Some(l) = self.worker.as_mut() {
                    l.load_took = load_took;
                    l.precision = precision;
                }
                if self.rung.device == sam2_api::device::DeviceChoice::Auto {
                    self.rung.device = device;
                }
                self.rung.size.get_or_insert(model.size);
                self.loaded_from.insert(model.size, self.opts.checkpoint.clone());
                self.last_good = Some(Setup { checkpoint: self.opts.checkpoint.clone(), rung: self.rung.clone() });
                self.switch_from = None;
                self.emit(EngineEvent::WorkerStarted { pid, device, precision, model, restarts: self.restarts });
                self.log(LogLevel::Info, format!("worker {pid} loaded the model on {device_label}"));
                match self.opts.media.clone() {
                    Some(path) => {
                        if let Some(l) = self.worker.as_mut() {
                            l.phase = Phase::Opening;
                        }
                        let bank_dir = Some(self.bank_dir());
                        self.send(Request::OpenMedia { path, bank_dir, fill_holes: self.opts.fill_holes });
                    }
                    None => self.ready(),
                }
            }
            Response::MediaInfo { width, height, frames, fps } => {
                self.num_frames = frames;
                self.media_size = Some((width, height));
                self.emit(EngineEvent::MediaInfo { width, height, frames, fps });
                // Also with nothing completed: the bank may hold an op the dead worker
                // finished without the news reaching us, which the worker takes back.
                if let Some(l) = self.worker.as_mut() {
                    l.phase = Phase::Restoring;
                }
                let ops = self.journal.journal.ops[..self.completed].to_vec();
                self.send(Request::Restore { ops });
            }
            Response::Restored { ops } => {
                self.log(LogLevel::Info, format!("restored the state of {ops} ops from the memory bank"));
                self.ready();
            }
            Response::Error { seq: None, message } => self.on_setup_error(message),
            Response::Error { seq: Some(seq), message } => {
                let Some(f) = self.inflight.take().filter(|f| f.index as u64 == seq) else {
                    return;
                };
                self.log(LogLevel::Error, format!("op {} failed: {message}", f.index));
                self.emit(EngineEvent::OpFailed { index: f.index, message: message.clone() });
                // It did not happen: drop it so no replay repeats the failure.
                if f.progress.delivered == 0 {
                    if let Err(e) = self.journal.replace(f.index, None) {
                        self.log(LogLevel::Error, format!("{e:#}"));
                    }
                } else {
                    self.finish(f.index, f.progress, true);
                }
                if self.completed >= self.journal.journal.ops.len() {
                    self.emit(EngineEvent::State(EngineState::Ready));
                }
                self.dispatch();
            }
            Response::Frame { seq, frame, objects, timings } => self.on_frame(seq, frame, objects, timings),
            Response::OpDone { seq, cancelled } => {
                let Some(f) = self.inflight.take().filter(|f| f.index as u64 == seq) else {
                    return;
                };
                if cancelled && f.recycle_cancel && !f.user_cancel {
                    // Stopped for recycling, not by the user: continue in the next worker.
                    self.resume = Some((f.index, f.progress));
                    self.recycle_due = false;
                    self.retire("recycling");
                    return;
                }
                self.finish(f.index, f.progress, cancelled);
                self.dispatch();
            }
            Response::Heartbeat { stats } => {
                let over = match (&stats.mps, self.opts.recycling.mps_driver_share) {
                    (Some(m), Some(share)) if m.recommended_max > 0 => {
                        (m.driver_allocated as f64) > share * m.recommended_max as f64
                    }
                    _ => false,
                };
                self.emit(EngineEvent::Stats(stats));
                if over && !self.recycle_due && live_ready(&self.worker) {
                    self.recycle("MPS driver memory above the recycling share");
                }
            }
            Response::Prefetched { .. } | Response::Bye => {}
        }
    }

    fn ready(&mut self) {
        let Some(live) = self.worker.as_mut() else {
            return;
        };
        live.phase = Phase::Ready;
        let load = live.load_took;
        if let Some(t) = self.crashed_at.take() {
            let total = t.elapsed();
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
        self.dispatch();
    }

    fn on_setup_error(&mut self, message: String) {
        let phase = self.worker.as_ref().map(|l| l.phase);
        match phase {
            Some(Phase::Loading) | Some(Phase::Hello) if self.switch_from.is_some() => {
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
                self.rung = back.rung;
                self.fresh_bank();
                if let Some(l) = self.worker.as_mut() {
                    l.retiring = Some(Instant::now());
                    l.proc.send(&Request::Shutdown);
                    l.proc.close_stdin();
                }
            }
            Some(Phase::Loading) | Some(Phase::Hello)
                if message.contains(&self.opts.checkpoint.display().to_string()) =>
            {
                // A checkpoint problem is the same on every device: falling back to the
                // CPU or retrying cannot help. One message, with how to get the file.
                let hint = if self.opts.checkpoint.exists() {
                    String::new()
                } else {
                    let size = self.rung.size.unwrap_or(sam2_api::model::ModelSize::Tiny);
                    format!(
                        " — `sam2-tui weights download {}` fetches the official file (about {} MB) into weights/, or pass --checkpoint FILE",
                        size.name(),
                        sam2_api::catalog::approx_megabytes(size)
                    )
                };
                self.log(LogLevel::Error, format!("{message}{hint}"));
                self.stop_engine("no usable checkpoint");
            }
            Some(Phase::Loading) | Some(Phase::Hello) => {
                self.log(LogLevel::Error, format!("{} worker: {message}", self.rung.label()));
                let d = self.policy.next_rung(&self.rung.clone(), &message);
                if let Some(l) = self.worker.as_mut() {
                    l.retiring = Some(Instant::now());
                    l.proc.send(&Request::Shutdown);
                    l.proc.close_stdin();
                }
                self.decide(d);
            }
            Some(Phase::Restoring) => {
                self.log(LogLevel::Warn, format!("{message}; replaying the journal from scratch on a fresh bank"));
                self.fresh_bank();
                if let Some(l) = self.worker.as_mut() {
                    l.phase = Phase::Opening;
                }
                if let Some(path) = self.opts.media.clone() {
                    let bank_dir = Some(self.bank_dir());
                    self.send(Request::OpenMedia { path, bank_dir, fill_holes: self.opts.fill_holes });
                }
            }
            Some(Phase::Opening) => {
                self.log(LogLevel::Error, message.clone());
                self.stop_engine(&message);
            }
            _ => self.log(LogLevel::Warn, format!("worker: {message}")),
        }
    }

    /// Nothing sensible to retry: stop the worker and wait for the user.
    fn stop_engine(&mut self, reason: &str) {
        self.stopped = true;
        self.restart_at = None;
        self.emit(EngineEvent::State(EngineState::Crashed { reason: reason.to_string() }));
        self.retire(reason);
        self.emit(EngineEvent::State(EngineState::Stopped));
    }

    fn on_frame(&mut self, seq: u64, frame: usize, objects: Vec<super::events::ObjectMask>, timings: StageTimings) {
        let num_frames = self.num_frames;
        let Some(f) = self.inflight.as_mut().filter(|f| f.index as u64 == seq) else {
            return;
        };
        self.masks.lock().unwrap_or_else(|p| p.into_inner()).insert(frame, &objects);
        let op = self.journal.journal.ops[f.index].clone();
        let is_prop = matches!(op, Op::Propagate { .. });
        if is_prop {
            f.progress.record(frame);
        }
        f.frames_here += 1;
        let fps = f.frames_here as f32 / f.started.elapsed().as_secs_f32().max(1e-3);
        let progress = f.progress.clone();
        self.emit(EngineEvent::Masks(super::events::FrameMasks { frame, objects }));
        if is_prop {
            let total = match &op {
                Op::Propagate { start, reverse, max_frames } => {
                    store::span(start.or(progress.first).unwrap_or(0), *reverse, *max_frames, num_frames)
                }
                _ => 1,
            };
            self.emit(EngineEvent::Progress { frame, done: progress.delivered, total, fps, timings });
        }
        let Some(live) = self.worker.as_mut() else {
            return;
        };
        live.frames += 1;
        if self.opts.recycling.after_frames.is_some_and(|n| live.frames >= n) && !self.recycle_due {
            self.recycle(&format!("{} frames processed", self.opts.recycling.after_frames.unwrap_or(0)));
        }
    }

    fn on_exit(&mut self, status: std::process::ExitStatus) {
        let Some(mut live) = self.worker.take() else {
            return;
        };
        live.proc.exited = true;
        let retiring = live.retiring.is_some();
        let reason = death::describe(status, live.proc.killed_by_us.as_deref());
        let tail = live.proc.stderr_tail();
        let pid = live.proc.pid;
        live.proc.join();
        if self.shutting_down {
            return;
        }
        if retiring {
            if !self.stopped && self.restart_at.is_none() {
                self.restart_at = Some(Instant::now());
            }
            return;
        }
        // A crash.
        self.crashed_at = Some(Instant::now());
        self.emit(EngineEvent::WorkerDied { reason: reason.clone(), stderr_tail: tail });
        self.emit(EngineEvent::State(EngineState::Crashed { reason: reason.clone() }));
        self.log(LogLevel::Error, format!("worker {pid} on {} died: {reason}", self.rung.label()));
        if let Some(f) = self.inflight.take() {
            if matches!(self.journal.journal.ops[f.index], Op::Propagate { .. }) && !f.user_cancel {
                self.resume = Some((f.index, f.progress));
            } else if f.user_cancel {
                self.finish(f.index, f.progress, true);
            }
            // Other ops are simply re-sent: they are journaled and not completed.
        }
        let d = self.policy.on_crash(Instant::now(), &self.rung.clone(), &reason);
        self.decide(d);
    }

    fn decide(&mut self, d: Decision) {
        match d {
            Decision::Retry { attempt, delay } => {
                self.restarts += 1;
                self.emit(EngineEvent::State(EngineState::Restarting { attempt }));
                self.log(
                    LogLevel::Warn,
                    format!(
                        "restarting the {} worker in {} ms (attempt {attempt} of {})",
                        self.rung.label(),
                        delay.as_millis(),
                        self.opts.restart.max_retries
                    ),
                );
                self.restart_at = Some(Instant::now() + delay);
            }
            Decision::FallBack { to, reason } => {
                self.restarts += 1;
                let from = self.rung.clone();
                self.emit(EngineEvent::FellBack { from: from.device, to: to.device, reason: reason.clone() });
                self.log(LogLevel::Warn, format!("falling back from {} to {}: {reason}", from.label(), to.label()));
                self.rung = to;
                self.fresh_bank();
                self.restart_at = Some(Instant::now());
            }
            Decision::GiveUp { reason } => {
                self.log(LogLevel::Error, format!("giving up: {reason}"));
                self.stopped = true;
                self.restart_at = None;
                self.emit(EngineEvent::State(EngineState::Stopped));
            }
        }
    }
}

fn live_ready(w: &Option<Live>) -> bool {
    w.as_ref().is_some_and(|l| l.phase == Phase::Ready && l.retiring.is_none())
}
