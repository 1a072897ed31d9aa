//! The I/O edge around `machine`: worker processes, the journal and banks on disk, the
//! shared mask store, the event channel and the real clock. One thread runs it (a
//! current-thread tokio runtime: no threads of its own); it waits for the next input (a
//! client command, a worker's news) or the machine's next deadline, whichever comes
//! first, hands it to `Machine::handle` and does what comes back. It decides nothing.
use super::machine::{Host, Input, Machine, MaskChange, Output, WorkerNews};
use super::options::SupervisorOptions;
use super::process::WorkerProcess;
use super::store::{self, MaskStore, PropagationProgress};
use sam2_api::events::{EngineCommand, EngineEvent, LogLevel};
use sam2_api::model::{ModelSize, ModelVersion};
use sam2_api::session::Op;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// What the console (or a headless command) holds.
pub struct SupervisorHandle {
    pub commands: UnboundedSender<EngineCommand>,
    pub events: UnboundedReceiver<EngineEvent>,
    /// Every finished mask (latest per (frame, object)), surviving worker deaths.
    pub masks: Arc<Mutex<MaskStore>>,
    /// The session journal on disk.
    pub journal_path: PathBuf,
    thread: Option<JoinHandle<()>>,
    /// Lets `recv_timeout` wait on `events` outside async code (made on first use).
    waiter: Option<tokio::runtime::Runtime>,
}

impl SupervisorHandle {
    pub fn send(&self, cmd: EngineCommand) -> bool {
        self.commands.send(cmd).is_ok()
    }

    /// The next event, blocking (for non-async callers; not from inside a tokio runtime).
    pub fn recv_blocking(&mut self) -> Option<EngineEvent> {
        self.events.blocking_recv()
    }

    /// The next event within `timeout`, for non-async callers (not from inside a tokio
    /// runtime); None when none came or the supervisor has ended.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<EngineEvent> {
        if let Ok(e) = self.events.try_recv() {
            return Some(e);
        }
        if self.waiter.is_none() {
            // A current-thread runtime with a timer: no threads, no file descriptors.
            self.waiter = tokio::runtime::Builder::new_current_thread().enable_time().build().ok();
        }
        let waiter = self.waiter.as_ref()?;
        waiter.block_on(async { tokio::time::timeout(timeout, self.events.recv()).await.ok().flatten() })
    }

    /// Whether the supervisor has ended and every event it sent has been read: a
    /// `recv_timeout` of None then means no event will ever come.
    pub fn has_ended(&self) -> bool {
        self.events.is_closed() && self.events.is_empty()
    }

    /// Moves this supervisor (and its worker, model loaded) to the next item of a batch:
    /// `media` with `ops` as its journal in `session_dir`. Call it when the previous
    /// item's ops have all finished; a crash from here on replays the new journal.
    pub fn next_item(&mut self, media: PathBuf, session_dir: PathBuf, ops: Vec<Op>) -> anyhow::Result<()> {
        std::fs::create_dir_all(&session_dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create session directory: {e}", session_dir.display()))?;
        let journal_path = session_dir.join("journal.json");
        store::create_journal(&journal_path, ops.clone())?;
        remove_stale_banks(&session_dir)?;
        self.journal_path = journal_path;
        anyhow::ensure!(self.send(EngineCommand::NextItem { media, session_dir, ops }), "the supervisor has stopped");
        Ok(())
    }

    /// Stops the worker and waits until the supervisor thread has ended.
    pub fn shutdown(self) {
        let SupervisorHandle { commands, events, thread, .. } = self;
        let _ = commands.send(EngineCommand::Shutdown);
        drop(commands);
        if let Some(t) = thread {
            let _ = t.join();
        }
        drop(events);
    }
}

/// Memory banks an earlier process left in the session directory. A bank holds the
/// outputs of one journal on one model; this process starts a new journal, and an old
/// bank read as its own would pass off the old run's masks (another model's, another
/// click's) as this run's, and mark frames tracked that this run never tracked.
fn remove_stale_banks(session_dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(session_dir)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("bank-") && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).map_err(|e| {
                anyhow::anyhow!("{}: cannot remove an earlier run's memory bank: {e}", entry.path().display())
            })?;
        }
    }
    Ok(())
}

/// Starts the supervisor on its own thread; the first worker starts at once.
pub fn start(opts: SupervisorOptions) -> anyhow::Result<SupervisorHandle> {
    std::fs::create_dir_all(&opts.session_dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create session directory: {e}", opts.session_dir.display()))?;
    remove_stale_banks(&opts.session_dir)?;
    launch(opts, Arc::new(Mutex::new(MaskStore::default())), |_| {})
}

/// Starts a supervisor that takes over a session another worker ran (one leaving a
/// shared worker, `shared`): `opts.initial_ops` is its journal, whose ops `[..completed]`
/// are done and in the bank `bank-0` of `opts.session_dir` (restored, not recomputed);
/// op `completed`, a propagation that delivered `progress`, goes on after its last
/// delivered frame. `masks` are the session's masks so far, kept up to date from here.
pub fn adopt(
    opts: SupervisorOptions,
    completed: usize,
    progress: Option<PropagationProgress>,
    masks: Arc<Mutex<MaskStore>>,
) -> anyhow::Result<SupervisorHandle> {
    launch(opts, masks, |m| m.adopt(completed, progress))
}

fn launch(
    opts: SupervisorOptions,
    masks: Arc<Mutex<MaskStore>>,
    set_up: impl FnOnce(&mut Machine),
) -> anyhow::Result<SupervisorHandle> {
    let journal_path = opts.session_dir.join("journal.json");
    let journal = store::create_journal(&journal_path, opts.initial_ops.clone())?;
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut machine = Machine::new(opts, journal, Box::new(RealHost), Instant::now());
    set_up(&mut machine);
    let (inputs_tx, inputs_rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = Driver { machine, worker: None, inputs: inputs_tx, events: ev_tx, masks: masks.clone() };
    // Built here so that a failure is the caller's error, not a dead thread.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let thread = std::thread::Builder::new()
        .name("supervisor".into())
        .spawn(move || rt.block_on(driver.run(cmd_rx, inputs_rx)))?;
    Ok(SupervisorHandle { commands: cmd_tx, events: ev_rx, masks, journal_path, thread: Some(thread), waiter: None })
}

/// The files and environment of this machine, for the state machine's questions.
struct RealHost;

impl Host for RealHost {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn official_checkpoint(&self, size: ModelSize, version: ModelVersion) -> PathBuf {
        sam2_api::catalog::default_checkpoint(size, version)
    }

    fn env_has(&self, key: &str) -> bool {
        std::env::var_os(key).is_some()
    }
}

/// A worker's news as its reader threads send it: already the machine's input.
fn worker_input(generation: u64, news: WorkerNews) -> Input {
    Input::Worker { generation, news }
}

struct Driver {
    machine: Machine,
    /// The live worker process (the machine's current generation), if any.
    worker: Option<WorkerProcess>,
    /// Where worker threads send their news (`worker_input`).
    inputs: UnboundedSender<Input>,
    events: UnboundedSender<EngineEvent>,
    masks: Arc<Mutex<MaskStore>>,
}

impl Driver {
    /// Until the machine has finished: the next input — a client command, a worker's
    /// news, or the machine's deadline passing, whichever comes first — into the machine.
    /// Nothing polls: it sleeps until one of the three.
    async fn run(mut self, mut commands: UnboundedReceiver<EngineCommand>, mut inputs: UnboundedReceiver<Input>) {
        let mut commands_open = true;
        while !self.machine.is_finished() {
            let deadline = self.machine.deadline();
            let input = tokio::select! {
                c = commands.recv(), if commands_open => match c {
                    Some(c) => Input::Command(c),
                    None => {
                        commands_open = false;
                        Input::CommandsClosed
                    }
                },
                // Never `None`: this driver holds a sender of its own.
                Some(input) = inputs.recv() => input,
                () = sleep_until(deadline), if deadline.is_some() => Input::Tick,
            };
            self.feed(input);
        }
    }

    /// Hands `input` to the machine and does what it says; inputs that doing it produces
    /// (a spawn's outcome) go in right after.
    fn feed(&mut self, input: Input) {
        let mut pending = VecDeque::from([input]);
        while let Some(input) = pending.pop_front() {
            if let Input::Worker { news: WorkerNews::StderrLine(line), .. } = &input {
                tracing::debug!(target: "worker", "{line}");
            }
            if let Input::Worker { generation, news: WorkerNews::Exited(_) } = &input {
                // Its last news: the reaper has joined the readers, so this returns at once.
                if let Some(p) = self.worker.take_if(|p| p.generation == *generation) {
                    p.join();
                }
            }
            for output in self.machine.handle(input, Instant::now()) {
                if let Some(next) = self.execute(output) {
                    pending.push_back(next);
                }
            }
        }
    }

    fn execute(&mut self, output: Output) -> Option<Input> {
        match output {
            Output::Spawn { generation, command, env } => {
                // The machine starts a worker only after the last one's exit.
                drop(self.worker.take());
                let pid = match WorkerProcess::spawn(generation, &command, &env, self.inputs.clone(), worker_input) {
                    Ok(p) => {
                        let pid = p.pid;
                        self.worker = Some(p);
                        Ok(pid)
                    }
                    Err(e) => Err(format!("{e:#}")),
                };
                return Some(Input::Spawned { generation, pid });
            }
            Output::Send { generation, request } => {
                if let Some(p) = self.live(generation) {
                    p.send(&request);
                }
            }
            Output::CloseStdin { generation } => {
                if let Some(p) = self.live(generation) {
                    p.close_stdin();
                }
            }
            Output::Kill { generation } => {
                if let Some(p) = self.live(generation) {
                    p.kill();
                }
            }
            Output::Emit(e) => {
                let _ = self.events.send(e);
            }
            Output::Log { level, message } => self.log(level, message),
            Output::Trace(message) => tracing::info!("{message}"),
            Output::SaveJournal { path, journal } => {
                if let Err(e) = journal.save(&path) {
                    self.log(LogLevel::Error, format!("{e:#}"));
                }
            }
            Output::Masks(change) => {
                let mut masks = self.masks.lock().unwrap_or_else(|p| p.into_inner());
                match change {
                    MaskChange::Insert { frame, objects } => masks.insert(frame, &objects),
                    MaskChange::Completed(op) => masks.apply_completed(&op),
                    MaskChange::Clear => *masks = MaskStore::default(),
                }
            }
            Output::RemoveDir(path) => {
                let _ = std::fs::remove_dir_all(path);
            }
        }
        None
    }

    fn live(&mut self, generation: u64) -> Option<&mut WorkerProcess> {
        self.worker.as_mut().filter(|p| p.generation == generation)
    }

    fn log(&self, level: LogLevel, message: String) {
        match level {
            LogLevel::Info => tracing::info!("{message}"),
            LogLevel::Warn => tracing::warn!("{message}"),
            LogLevel::Error => tracing::error!("{message}"),
        }
        let _ = self.events.send(EngineEvent::Log { level, message });
    }
}

/// Sleeps until `deadline` (forever for None: the branch is disabled then anyway).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
