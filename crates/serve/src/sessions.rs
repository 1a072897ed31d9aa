//! Sessions: one supervisor, so one engine worker process, per session. A worker that
//! crashes, hangs or runs out of memory is restarted by its own supervisor, which replays
//! that session's journal; no other session notices. The official backend keeps every
//! session in one process under one lock. With `--streams K` sessions share workers
//! instead, K to a worker (`shared_workers`): a crash then replays every session of that
//! worker, each as it was, and no mask changes.
//!
//! Over the engine's ops this module keeps what the demo's API has and the engine's
//! journal does not: the demo's object ids (0, 1, 2 … here, 1, 2, 3 … in the engine),
//! the order objects were first seen in (every answer lists every object in it), and the
//! points kept per (frame, object) so that `clearOldPoints: false` can append. Every
//! argument is judged here, before the engine is touched.
use crate::operator::{Board, SessionStatus, Settings, Switch, WorkerInfo};
use sam2_api::events::{EngineCommand, EngineEvent, EngineState, FrameMasks, LogLevel};
use sam2_api::limits::{MAX_OBJECT_ID, MAX_POINTS_PER_PROMPT};
use sam2_api::model::{ModelSize, ModelVersion};
use sam2_api::rle::Rle;
use sam2_api::session::{Journal, Op, Point};
use sam2_supervisor::shared::SharedLink;
use sam2_supervisor::{SupervisorHandle, SupervisorOptions};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// The largest object id of the demo's API (ours is one more, at most `MAX_OBJECT_ID`).
pub const MAX_DEMO_OBJECT_ID: i32 = MAX_OBJECT_ID as i32 - 1;

pub struct SessionsConfig {
    pub base: SupervisorOptions,
    /// Session folders go here, one per session, removed when it closes.
    pub root: PathBuf,
    pub max_sessions: usize,
    pub idle_timeout: Duration,
    /// Video files are decoded as the official does (see `frames`), or by the engine.
    pub official_decode: bool,
    /// The workers' engine can scale video files' frames as decord does itself (it is
    /// built with FFmpeg: the `decord_video` knob); then `official_decode` needs no frame
    /// extraction: the worker opens the video and its masks are the official's.
    pub engine_decord: bool,
    /// Workers kept started, model loaded, for the next sessions (video files, decoded
    /// as the official does): a session then starts without a process start and a model
    /// load. Where the engine decodes the video itself, a session's worker goes back to
    /// the spares when the session closes, and the sessions' workers count towards this
    /// number (see `refill`).
    pub warm_workers: usize,
    /// Sessions that share one worker (`shared_workers`); 1: a worker per session. Only
    /// where the engine reads the videos itself (no frames extracted per session).
    pub streams: usize,
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

/// The masks of every object of a session on one frame, in the order objects were first
/// seen, with the demo's object ids.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameResult {
    pub frame: usize,
    pub objects: Vec<(i32, Rle)>,
}

pub struct Sessions {
    cfg: SessionsConfig,
    /// What a new session's supervisor starts from: `cfg.base` with the operator's
    /// switches applied (`settings`).
    base: Mutex<SupervisorOptions>,
    /// Bumped by each switch: spare workers of an older one are not used.
    generation: AtomicU64,
    registry: Mutex<Registry>,
    warm: Mutex<Vec<Warm>>,
    warming: AtomicUsize,
    /// Closed sessions' workers on their way back to the spares.
    recycling: AtomicUsize,
    /// Sessions starting that wait for one of those (`take_spare`).
    awaiting_spare: AtomicUsize,
    /// Told when a worker has come back to the spares, or will not.
    spare_changed: tokio::sync::Notify,
    /// Closed sessions whose worker is being stopped or made a spare again, in the
    /// background: `closeSession` answers at once, the server's stop waits for these.
    retiring: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    closing: AtomicBool,
    /// New sessions are refused; the server stops when the last one has closed.
    draining: AtomicBool,
    /// Told when a session closes or draining begins.
    changed: tokio::sync::Notify,
    /// The workers sessions share (`--streams`), if they do.
    shared: Option<crate::shared_workers::SharedWorkers>,
    board: Arc<Board>,
}

/// A started worker with its model loaded and no video yet, waiting for a session.
struct Warm {
    handle: SupervisorHandle,
    session_dir: PathBuf,
    logits: PathBuf,
    worker: String,
    info: Option<WorkerInfo>,
    /// The settings' generation it was started with, and those settings.
    generation: u64,
    settings: Settings,
}

#[derive(Default)]
struct Registry {
    open: HashMap<String, Arc<Session>>,
    starting: usize,
}

pub fn unknown_session(id: &str) -> String {
    // The official's words (the front end shows them), so the same case reads the same.
    format!("Cannot find session {id}; it might have expired")
}

impl Sessions {
    /// `board` gets the sessions' news; its settings and limits are the caller's to set
    /// (`serve_on` does, before the gallery is scanned).
    pub fn new(cfg: SessionsConfig, board: Arc<Board>) -> Arc<Sessions> {
        let base = cfg.base.clone();
        let shares = cfg.streams > 1 && (cfg.engine_decord || !cfg.official_decode);
        let shared = shares.then(|| crate::shared_workers::SharedWorkers::new(cfg.streams, cfg.root.clone()));
        Arc::new(Sessions {
            cfg,
            base: Mutex::new(base),
            generation: AtomicU64::new(0),
            registry: Mutex::new(Registry::default()),
            warm: Mutex::new(vec![]),
            warming: AtomicUsize::new(0),
            recycling: AtomicUsize::new(0),
            awaiting_spare: AtomicUsize::new(0),
            spare_changed: tokio::sync::Notify::new(),
            retiring: Mutex::new(vec![]),
            closing: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            shared,
            board,
        })
    }

    fn base(&self) -> SupervisorOptions {
        self.base.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish_counts(&self) {
        let starting = self.registry().starting;
        let spare = match &self.shared {
            Some(shared) => shared.counts().1,
            None => self.warm.lock().unwrap_or_else(|p| p.into_inner()).len(),
        };
        self.board.update(|s| {
            s.starting = starting;
            s.spare_workers = spare;
        });
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Result<Arc<Session>, String> {
        let s = self.registry().open.get(id).cloned().ok_or_else(|| unknown_session(id))?;
        s.touch();
        Ok(s)
    }

    pub fn len(&self) -> usize {
        self.registry().open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a worker on `media` (an absolute path inside the data folder; `shown` is the
    /// client's name for it) and waits until it has the video open.
    pub async fn start(self: &Arc<Self>, media: PathBuf, shown: &str) -> Result<String, String> {
        // On a task of its own, as the ops are (`detached`): a client that goes away while
        // its session starts drops the request's future, and dropped mid-start the place it
        // reserved (`starting`) would never be given back: a draining server would wait
        // for it forever, and --max-sessions would count it for good. Run to its end, the
        // session opens and the idle reaper closes it.
        let (this, shown) = (self.clone(), shown.to_string());
        detached(async move { this.start_here(media, &shown).await }).await
    }

    async fn start_here(self: &Arc<Self>, media: PathBuf, shown: &str) -> Result<String, String> {
        if self.draining.load(Ordering::SeqCst) {
            let open = self.len();
            return Err(format!(
                "this server is draining: it starts no new sessions and stops once its {open} open session{} {} closed; start yours on another server",
                if open == 1 { "" } else { "s" },
                if open == 1 { "has" } else { "have" }
            ));
        }
        {
            let mut r = self.registry();
            if r.open.len() + r.starting >= self.cfg.max_sessions {
                return Err(format!(
                    "too many sessions: {} are open or starting, the most this server runs at once (--max-sessions {}); close one (closeSession) or wait for an idle one to expire",
                    r.open.len() + r.starting,
                    self.cfg.max_sessions
                ));
            }
            r.starting += 1;
        }
        self.publish_counts();
        let result = self.start_reserved(media, shown).await;
        let id = {
            let mut r = self.registry();
            r.starting -= 1;
            result.map(|session| {
                let id = session.id.clone();
                r.open.insert(id.clone(), session.clone());
                (id, session)
            })
        };
        self.publish_counts();
        self.changed.notify_waiters();
        // Counted once it is open: its worker will come back (`refill`).
        self.refill();
        let (id, session) = id?;
        // Settings switched while it started (the switch replayed the sessions open then):
        // it catches up the same way before startSession answers (a reload, no ops yet).
        let now = settings_of(&self.base());
        let was = session.started_with;
        if was != now {
            let load_wait = self.start_wait();
            let mut switches = vec![];
            if let Some(size) = now.model.filter(|m| was.model != Some(*m)) {
                switches.push(EngineCommand::SwitchModel(size));
            }
            if now.device != was.device {
                switches.push(EngineCommand::SwitchDevice(now.device));
            }
            if now.precision != was.precision {
                switches.push(EngineCommand::SwitchPrecision(now.precision));
            }
            for c in switches {
                session.clone().switch(c, load_wait).await;
            }
        }
        Ok(id)
    }

    /// A spare worker for a new session: one that waits, else one a closed session is
    /// handing back, if there are as many coming back as sessions waiting for one. That
    /// takes the rest of the closed session's op and a reopening of its video (tens of
    /// milliseconds), where a worker of its own would take a process start and a model
    /// load: the demo's front end closes one session and starts the next when its user
    /// picks another video. None: start one.
    async fn take_spare(&self) -> Option<Warm> {
        let wait = self.start_wait();
        let give_up_at = tokio::time::Instant::now() + wait;
        self.awaiting_spare.fetch_add(1, Ordering::SeqCst);
        let spare = loop {
            // Made before the checks, so a worker coming back in between is not missed.
            let changed = self.spare_changed.notified();
            if let Some(w) = self.warm.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                break Some(w);
            }
            if self.recycling.load(Ordering::SeqCst) < self.awaiting_spare.load(Ordering::SeqCst)
                || tokio::time::timeout_at(give_up_at, changed).await.is_err()
            {
                break None;
            }
        };
        self.awaiting_spare.fetch_sub(1, Ordering::SeqCst);
        spare
    }

    /// Keeps `warm_workers` workers started and loaded (in the background): the spares,
    /// plus the workers of open sessions that will come back as spares when they close
    /// (`retire`). Those are counted so that a burst of sessions does not start as many
    /// new workers while it streams: their start, model load and warm-up would take the
    /// GPU from the streams (and their memory would double the workers'), and the
    /// burst's own workers come back when it ends.
    pub fn refill(self: &Arc<Self>) {
        if let Some(shared) = &self.shared {
            if !self.closing.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst) {
                shared.tidy(self.current(), || self.shared_options());
            }
            return;
        }
        if !self.cfg.official_decode {
            return;
        }
        loop {
            let generation = self.generation.load(Ordering::SeqCst);
            let coming_back = self.registry().open.values().filter(|s| s.will_recycle(generation)).count()
                + self.recycling.load(Ordering::SeqCst);
            let have = self.warm.lock().unwrap_or_else(|p| p.into_inner()).len()
                + self.warming.load(Ordering::SeqCst)
                + coming_back;
            if have >= self.cfg.warm_workers
                || self.closing.load(Ordering::SeqCst)
                || self.draining.load(Ordering::SeqCst)
            {
                return;
            }
            self.warming.fetch_add(1, Ordering::SeqCst);
            let me = self.clone();
            tokio::spawn(async move {
                let w = me.warm_up().await;
                me.warming.fetch_sub(1, Ordering::SeqCst);
                match w {
                    Ok(w) if me.closing.load(Ordering::SeqCst) || me.draining.load(Ordering::SeqCst) => {
                        discard(w).await
                    }
                    Ok(w) if w.generation != me.generation.load(Ordering::SeqCst) => {
                        // Loaded with settings switched since: make one with the new ones.
                        discard(w).await;
                        me.refill();
                    }
                    Ok(w) => {
                        let label = w.worker.clone();
                        let waiting = {
                            let mut warm = me.warm.lock().unwrap_or_else(|p| p.into_inner());
                            warm.push(w);
                            warm.len()
                        };
                        me.board.info(format!("{label} is ready as a spare ({waiting} waiting)"));
                    }
                    Err(e) => me.board.error(format!("could not start a spare worker: {e}")),
                }
                me.spare_changed.notify_waiters();
                me.publish_counts();
            });
        }
    }

    async fn warm_up(&self) -> Result<Warm, String> {
        let id = uuid::Uuid::new_v4().to_string();
        let session_dir = self.cfg.root.join(format!("serve-{id}"));
        sam2_supervisor::session_dirs::mark_one_shot(&session_dir).map_err(|e| format!("{e:#}"))?;
        let logits = session_dir.join("logits");
        let generation = self.generation.load(Ordering::SeqCst);
        let mut opts = self.base();
        let settings = settings_of(&opts);
        opts.session_dir = session_dir.clone();
        opts.media = None;
        opts.initial_ops = vec![];
        // A spare worker has the time: its first session then starts on captured graphs
        // (`warm_up`; on CUDA only).
        opts.tuning.warm_up = true;
        if self.cfg.engine_decord {
            scale_like_decord(&mut opts);
        } else {
            opts.tuning.logits_dir = Some(logits.clone());
            opts.set_env("SAM2_TUI_LOGITS_DIR", &logits.to_string_lossy());
        }
        let wait = start_wait(&opts);
        let mut handle = sam2_supervisor::start(opts).map_err(|e| {
            sam2_supervisor::session_dirs::remove_one_shot(&session_dir);
            format!("cannot start an engine worker: {e:#}")
        })?;
        let mut worker = String::from("worker");
        let mut info = None;
        let mut last_error = None;
        let ready = tokio::time::timeout(wait, async {
            while let Some(e) = handle.events.recv().await {
                match e {
                    EngineEvent::WorkerStarted { pid, device, precision, model, .. } => {
                        worker = format!("worker {pid} on {device} {precision}");
                        info = Some(WorkerInfo { pid, device, precision, model });
                    }
                    EngineEvent::State(EngineState::Ready) => return true,
                    EngineEvent::Log { level: LogLevel::Error, message } => last_error = Some(message),
                    EngineEvent::State(EngineState::Stopped) => return false,
                    _ => {}
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            shutdown_handle(handle, None).await;
            sam2_supervisor::session_dirs::remove_one_shot(&session_dir);
            return Err(last_error.unwrap_or_else(|| "it did not load the model".into()));
        }
        Ok(Warm { handle, session_dir, logits, worker, info, generation, settings })
    }

    async fn start_reserved(self: &Arc<Self>, media: PathBuf, shown: &str) -> Result<Arc<Session>, String> {
        if self.shared.is_some() {
            return self.start_shared(media, shown).await;
        }
        let started = Instant::now();
        let id = uuid::Uuid::new_v4().to_string();
        // As the official reads it: through extracted frames, or by the engine itself.
        let official = self.cfg.official_decode && media.is_file();
        let decode = official && !self.cfg.engine_decord;
        let generation = self.generation.load(Ordering::SeqCst);
        let warm = if official { self.take_spare().await } else { None };
        // One loaded before a switch is not what this session must get.
        let warm = match warm {
            Some(w) if w.generation != generation => {
                discard(w).await;
                None
            }
            w => w,
        };
        let session_dir = match &warm {
            Some(w) => w.session_dir.clone(),
            None => {
                let d = self.cfg.root.join(format!("serve-{id}"));
                sam2_supervisor::session_dirs::mark_one_shot(&d).map_err(|e| format!("{e:#}"))?;
                d
            }
        };
        let cleanup_dir = session_dir.clone();
        let give_up = move |warm: Option<Warm>, why: String| {
            let dir = cleanup_dir.clone();
            async move {
                if let Some(w) = warm {
                    shutdown_handle(w.handle, None).await;
                }
                sam2_supervisor::session_dirs::remove_one_shot(&dir);
                Err(why)
            }
        };
        let mut opts = self.base();
        let started_with = warm.as_ref().map(|w| w.settings).unwrap_or_else(|| settings_of(&opts));
        opts.session_dir = session_dir.clone();
        let mut decoded = None;
        if decode {
            let side = opts.image_size.max(16) as u32;
            let Some((w, h)) = crate::data::probe_size(&self.cfg.ffprobe, &media) else {
                return give_up(warm, format!("cannot start a session on {shown}: not a video ffprobe can read")).await;
            };
            let frames_dir = session_dir.join("frames");
            if let Err(e) = crate::frames::extract(&self.cfg.ffmpeg, &media, &frames_dir, side).await {
                return give_up(warm, format!("cannot start a session on {shown}: {e}")).await;
            }
            let logits = session_dir.join("logits");
            // The knob and the worker's environment (which goes on top of the knobs).
            opts.tuning.logits_dir = Some(logits.clone());
            opts.set_env("SAM2_TUI_LOGITS_DIR", &logits.to_string_lossy());
            opts.media = Some(frames_dir);
            decoded = Some(crate::frames::Decoded { logits, width: w as u32, height: h as u32, side });
        } else if official {
            scale_like_decord(&mut opts);
            opts.media = Some(media);
        } else {
            // No logits wanted: an inherited SAM2_TUI_LOGITS_DIR must not make the worker
            // write them (an empty value is no directory, as for `segment`).
            opts.tuning.logits_dir = None;
            opts.set_env("SAM2_TUI_LOGITS_DIR", "");
            opts.media = Some(media);
        }
        opts.initial_ops = vec![];
        let media_open = opts.media.clone().unwrap_or_default();
        let wait = start_wait(&opts);
        let mut worker: Option<String> = None;
        let mut worker_info: Option<WorkerInfo> = None;
        let mut handle = match warm {
            Some(mut w) => {
                // The spare worker opens this video on a fresh bank, its model loaded.
                let frames = opts.media.clone().unwrap_or_default();
                if let Some(d) = decoded.as_mut() {
                    d.logits = w.logits.clone();
                }
                worker = Some(std::mem::take(&mut w.worker));
                worker_info = w.info.take();
                if let Err(e) = w.handle.next_item(frames, session_dir.clone(), vec![]) {
                    return give_up(Some(w), format!("cannot start a session on {shown}: {e:#}")).await;
                }
                w.handle
            }
            None => match sam2_supervisor::start(opts) {
                Ok(h) => h,
                Err(e) => return give_up(None, format!("cannot start an engine worker: {e:#}")).await,
            },
        };
        let short = short_id(&id);
        let opened = opened(&mut handle.events, wait, &self.board, &short, &mut worker, &mut worker_info).await;
        let (width, height, frames) = match opened {
            Ok((w, h, n)) => match &decoded {
                Some(d) => (d.width, d.height, n),
                None => (w, h, n),
            },
            Err(why) => {
                shutdown_handle(handle, None).await;
                sam2_supervisor::session_dirs::remove_one_shot(&session_dir);
                return Err(format!("cannot start a session on {shown}: {why}"));
            }
        };
        if frames == 0 {
            shutdown_handle(handle, None).await;
            sam2_supervisor::session_dirs::remove_one_shot(&session_dir);
            return Err(format!("cannot start a session on {shown}: it has no frames"));
        }
        let events = std::mem::replace(&mut handle.events, tokio::sync::mpsc::unbounded_channel().1);
        let commands = handle.commands.clone();
        // Encode frame 0 ahead (the worker is ready now), as the official's init_state
        // does: the first click there only runs the decoder.
        let _ = commands.send(EngineCommand::Prefetch(0));
        let session = self.session_opened(Opening {
            id,
            shown,
            size: (width, height, frames),
            worker_info,
            events,
            commands: Some(commands),
            shared: None,
            masks: handle.masks.clone(),
            journal_path: handle.journal_path.clone(),
            handle: Some(handle),
            started_with,
            // The engine opens the video itself and writes nothing but its session
            // folder: a new session folder makes its worker as good as new.
            recyclable: official && !decode,
            generation,
            media: media_open,
            session_dir,
            decoded,
        });
        self.board.info(format!(
            "session {short} started on {shown} ({width}x{height}, {frames} frames; {}) in {:.2} s",
            worker.unwrap_or_else(|| "worker".into()),
            started.elapsed().as_secs_f32()
        ));
        Ok(session)
    }

    /// A session on a shared worker (`--streams`): a stream of the newest worker with
    /// room, its memory bank in a session folder of its own.
    async fn start_shared(self: &Arc<Self>, media: PathBuf, shown: &str) -> Result<Arc<Session>, String> {
        let Some(shared) = &self.shared else { unreachable!("only with shared workers") };
        let started = Instant::now();
        let id = uuid::Uuid::new_v4().to_string();
        let session_dir = self.cfg.root.join(format!("serve-{id}"));
        sam2_supervisor::session_dirs::mark_one_shot(&session_dir).map_err(|e| format!("{e:#}"))?;
        let (generation, settings) = self.current();
        let attached =
            shared.attach(media.clone(), session_dir.clone(), (generation, settings), || self.shared_options());
        let mut attached = match attached {
            Ok(a) => a,
            Err(why) => {
                sam2_supervisor::session_dirs::remove_one_shot(&session_dir);
                return Err(why);
            }
        };
        let short = short_id(&id);
        let wait = self.start_wait();
        let (mut worker, mut worker_info) = (None, None);
        let events = &mut attached.session.events;
        let opened = opened(events, wait, &self.board, &short, &mut worker, &mut worker_info).await;
        let (width, height, frames) = match opened {
            Ok(size) if size.2 > 0 => size,
            not => {
                let why = not.err().unwrap_or_else(|| "it has no frames".into());
                // Its folder goes once the worker has let the stream go (its events end):
                // the stream may still be opening, its bank there.
                attached.session.link.send(EngineCommand::Shutdown);
                let events = &mut attached.session.events;
                let _ = tokio::time::timeout(wait, async { while events.recv().await.is_some() {} }).await;
                sam2_supervisor::session_dirs::remove_one_shot(&session_dir);
                return Err(format!("cannot start a session on {shown}: {why}"));
            }
        };
        let session = self.session_opened(Opening {
            id,
            shown,
            size: (width, height, frames),
            worker_info,
            events: attached.session.events,
            commands: None,
            shared: Some(attached.session.link),
            masks: attached.session.masks,
            journal_path: session_dir.join("journal.json"),
            handle: None,
            started_with: attached.settings,
            recyclable: false,
            generation,
            media,
            session_dir,
            decoded: None,
        });
        self.board.info(format!(
            "session {short} started on {shown} ({width}x{height}, {frames} frames; {}, shared) in {:.2} s",
            worker.unwrap_or_else(|| "worker".into()),
            started.elapsed().as_secs_f32()
        ));
        Ok(session)
    }

    /// How long a worker may take to start, load and open a video (or a switch to
    /// replay), with the server's settings.
    fn start_wait(&self) -> Duration {
        start_wait(&self.base())
    }

    /// The settings' generation and the settings new sessions get.
    fn current(&self) -> (u64, Settings) {
        (self.generation.load(Ordering::SeqCst), settings_of(&self.base()))
    }

    /// What a shared worker is started with: the server's settings, and the video files
    /// read as a worker of its own reads them (its session folder holds only what the
    /// worker writes outside the sessions' banks).
    fn shared_options(&self) -> SupervisorOptions {
        let mut opts = self.base();
        opts.media = None;
        opts.initial_ops = vec![];
        if self.cfg.official_decode {
            scale_like_decord(&mut opts);
        } else {
            opts.tuning.logits_dir = None;
            opts.set_env("SAM2_TUI_LOGITS_DIR", "");
        }
        opts
    }

    /// The session, once its engine has the video open: its row on the board, and the
    /// pump of its engine's events, which logs deaths as they happen (also between
    /// requests) and hands the rest to whoever runs an op.
    fn session_opened(&self, o: Opening) -> Arc<Session> {
        let (width, height, frames) = o.size;
        self.board.add_session(SessionStatus::new(&o.id, o.shown, frames, o.worker_info));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_pump, stop) = tokio::sync::oneshot::channel();
        let pumping = tokio::spawn(pump(short_id(&o.id), o.id.clone(), self.board.clone(), o.events, tx, stop));
        Arc::new(Session {
            id: o.id,
            video: o.shown.to_string(),
            width,
            height,
            frames,
            commands: Mutex::new(o.commands),
            shared: o.shared,
            masks: o.masks,
            core: Arc::new(tokio::sync::Mutex::new(Core {
                events: rx,
                objects: vec![],
                in_engine: BTreeSet::new(),
                points: BTreeMap::new(),
                stopped: None,
            })),
            cancel: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
            in_use: AtomicUsize::new(0),
            journal_path: o.journal_path,
            started_with: o.started_with,
            handle: Mutex::new(o.handle),
            pump: Mutex::new(Some((stop_pump, pumping))),
            recyclable: o.recyclable,
            generation: o.generation,
            switched: AtomicBool::new(false),
            media: o.media,
            session_dir: o.session_dir,
            decoded: o.decoded,
            board: self.board.clone(),
        })
    }

    /// Closes a session: refused to its clients from now on, its worker and folder left
    /// to `retire`. False when there is no such session (the official answers
    /// `success: false` then, not an error).
    pub fn close(self: &Arc<Self>, id: &str, why: &str) -> bool {
        let Some(s) = self.registry().open.remove(id) else { return false };
        self.retire(s, why.to_string());
        self.changed.notify_waiters();
        true
    }

    /// Stops every worker and waits until they have stopped and the session folders are
    /// gone.
    pub async fn close_all(self: &Arc<Self>) {
        self.closing.store(true, Ordering::SeqCst);
        let spare: Vec<Warm> = std::mem::take(&mut *self.warm.lock().unwrap_or_else(|p| p.into_inner()));
        futures::future::join_all(spare.into_iter().map(discard)).await;
        let all: Vec<Arc<Session>> = self.registry().open.drain().map(|(_, s)| s).collect();
        for s in all {
            self.retire(s, "server shutting down".into());
        }
        loop {
            let retiring = std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
            if retiring.is_empty() {
                break;
            }
            futures::future::join_all(retiring).await;
        }
        if let Some(shared) = &self.shared {
            shared.shutdown().await;
        }
    }

    /// What is left of a closed session, in the background, so that `closeSession`
    /// answers at once (the official's only drops the session's state): its worker
    /// becomes a spare again (`recycle`) where it can serve another session and spares
    /// are wanted, else it is stopped; its folder is removed either way, and the close is
    /// logged once it is.
    fn retire(self: &Arc<Self>, s: Arc<Session>, why: String) {
        let Some(left) = s.begin_close() else { return };
        let recycle =
            self.cfg.warm_workers > 0 && !left.restarted && s.will_recycle(self.generation.load(Ordering::SeqCst));
        if recycle {
            self.recycling.fetch_add(1, Ordering::SeqCst);
        }
        let me = self.clone();
        let task = tokio::spawn(async move {
            let fate = if recycle {
                let fate = me.recycle(&s, left).await;
                me.recycling.fetch_sub(1, Ordering::SeqCst);
                me.spare_changed.notify_waiters();
                fate
            } else if left.shared.is_some() {
                let wait = me.start_wait();
                let_go(left, wait).await
            } else {
                shutdown_handle_of(left).await;
                "its worker stopped".to_string()
            };
            sam2_supervisor::session_dirs::remove_one_shot(&s.session_dir);
            me.board.info(format!("session {} closed ({why}); {fate}", s.short()));
            me.publish_counts();
            // A worker that did not come back leaves a spare to start.
            me.refill();
        });
        let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        retiring.retain(|t| !t.is_finished());
        retiring.push(task);
    }

    /// Makes a closed session's worker a spare again: once the session's last op has
    /// ended (the close cancelled a propagation at its next frame), its supervisor moves
    /// to a new session folder with an empty journal and a fresh memory bank, and the
    /// worker opens the video again (it must have one open); nothing of the session
    /// is left in it. Says what became of the worker.
    async fn recycle(self: &Arc<Self>, s: &Session, left: Leftovers) -> String {
        let Leftovers { commands, handle, pump, worker, .. } = left;
        let Some(mut handle) = handle else { return "it had no worker".into() };
        let wait = self.start_wait();
        let stopped = match tokio::time::timeout(wait, s.lock()).await {
            Ok(core) => core.stopped.is_some(),
            Err(_) => true,
        };
        // The pump hands back the supervisor's events (an op's leftovers included).
        let events = match pump {
            Some((stop, task)) => {
                let _ = stop.send(());
                task.await.ok()
            }
            None => None,
        };
        let wanted = |me: &Self| {
            !me.closing.load(Ordering::SeqCst)
                && !me.draining.load(Ordering::SeqCst)
                && me.generation.load(Ordering::SeqCst) == s.generation
                && me.warm.lock().unwrap_or_else(|p| p.into_inner()).len() < me.cfg.warm_workers
        };
        let Some(events) = events.filter(|_| !stopped && wanted(self)) else {
            shutdown_handle(handle, commands).await;
            return "its worker stopped".into();
        };
        drop(commands);
        handle.events = events;
        let dir = self.cfg.root.join(format!("serve-{}", uuid::Uuid::new_v4()));
        let moved = sam2_supervisor::session_dirs::mark_one_shot(&dir)
            .map_err(|e| format!("{e:#}"))
            .and_then(|_| handle.next_item(s.media.clone(), dir.clone(), vec![]).map_err(|e| format!("{e:#}")));
        let reopened = match moved {
            Ok(()) => tokio::time::timeout(wait, reopen(&mut handle.events)).await.unwrap_or(false),
            Err(_) => false,
        };
        if !reopened || !wanted(self) {
            shutdown_handle(handle, None).await;
            sam2_supervisor::session_dirs::remove_one_shot(&dir);
            return "its worker stopped".into();
        }
        let label = match &worker {
            Some(w) => format!("worker {} on {} {}", w.pid, w.device, w.precision),
            None => "worker".into(),
        };
        let fate = format!("its {label} is a spare again");
        self.warm.lock().unwrap_or_else(|p| p.into_inner()).push(Warm {
            handle,
            logits: dir.join("logits"),
            session_dir: dir,
            worker: label,
            info: worker,
            generation: s.generation,
            settings: s.started_with,
        });
        fate
    }

    /// Closes the sessions nobody has used for the idle timeout.
    pub fn expire_idle(self: &Arc<Self>) {
        let idle = self.cfg.idle_timeout;
        let expired: Vec<Arc<Session>> = {
            let mut r = self.registry();
            let ids: Vec<String> =
                r.open.iter().filter(|(_, s)| s.idle_for() >= idle).map(|(id, _)| id.clone()).collect();
            ids.iter().filter_map(|id| r.open.remove(id)).collect()
        };
        for s in expired {
            self.retire(s, format!("idle for {} s", idle.as_secs()));
            self.changed.notify_waiters();
        }
    }

    /// Refuses new sessions from now on (a clear error), stops the spare workers, and
    /// lets the open sessions finish: `drained` resolves once the last one has closed.
    pub async fn drain(&self) {
        if self.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        let open = self.len();
        self.board.update(|s| s.draining = true);
        self.board.warn(match open {
            0 => "draining: no new sessions, and none is open".to_string(),
            n => format!(
                "draining: no new sessions; stopping once the {n} open session{} closed (closeSession or idle expiry)",
                if n == 1 { " has" } else { "s have" }
            ),
        });
        let spare: Vec<Warm> = std::mem::take(&mut *self.warm.lock().unwrap_or_else(|p| p.into_inner()));
        futures::future::join_all(spare.into_iter().map(discard)).await;
        if let Some(shared) = &self.shared {
            shared.stop_idle();
        }
        self.publish_counts();
        self.changed.notify_waiters();
    }

    /// Resolves when draining and no session is open or starting.
    pub async fn drained(&self) {
        loop {
            // Made before the check, so a close between the two is not missed.
            let changed = self.changed.notified();
            let idle = {
                let r = self.registry();
                r.open.is_empty() && r.starting == 0
            };
            if idle && self.draining.load(Ordering::SeqCst) {
                return;
            }
            changed.await;
        }
    }

    /// New settings for the server: new sessions get them (spare workers are restarted
    /// with them) and every open session is replayed on a fresh worker with them, each
    /// between two of its ops. A model without a checkpoint changes nothing.
    pub async fn switch(self: &Arc<Self>, change: Switch) {
        let (command, what) = {
            let mut base = self.base.lock().unwrap_or_else(|p| p.into_inner());
            match change {
                Switch::Model(size) => {
                    let checkpoint = match checkpoint_for(&base, &self.cfg.base, size) {
                        Ok(c) => c,
                        Err(why) => {
                            drop(base);
                            self.board.error(format!("not switching to the {size} model: {why}"));
                            return;
                        }
                    };
                    base.checkpoint = checkpoint;
                    base.size = Some(size);
                    (EngineCommand::SwitchModel(size), format!("the {size} model"))
                }
                Switch::Device(device) => {
                    base.device = device;
                    (EngineCommand::SwitchDevice(device), format!("device {device}"))
                }
                Switch::Precision(p) => {
                    base.precision = p;
                    (EngineCommand::SwitchPrecision(p), format!("precision {p}"))
                }
            }
        };
        self.generation.fetch_add(1, Ordering::SeqCst);
        let settings = settings_of(&self.base());
        self.board.update(|s| s.settings = settings);
        let open: Vec<Arc<Session>> = self.registry().open.values().cloned().collect();
        let shared = open.iter().filter(|s| s.shared.is_some()).count();
        self.board.info(format!(
            "switching to {what}: new sessions get it{}{}",
            match open.len() {
                0 => String::new(),
                n => format!("; replaying {n} open session{} on fresh workers", if n == 1 { "" } else { "s" }),
            },
            match shared {
                0 => String::new(),
                n => format!(" ({n} of them leave their shared worker for workers of their own)"),
            }
        ));
        let spare: Vec<Warm> = std::mem::take(&mut *self.warm.lock().unwrap_or_else(|p| p.into_inner()));
        futures::future::join_all(spare.into_iter().map(discard)).await;
        self.publish_counts();
        self.refill();
        let load_wait = self.start_wait();
        for s in open {
            let command = command.clone();
            tokio::spawn(async move { s.switch(command, load_wait).await });
        }
    }
}

/// The settings a supervisor's options ask for.
/// A worker that reads video files as the official does by itself (`decord_video`), and
/// writes no logits (its masks are the ones served). Set in the worker's environment too,
/// which wins there over an inherited `SAM2_TUI_*`.
fn scale_like_decord(opts: &mut SupervisorOptions) {
    opts.tuning.decord_video = true;
    opts.set_env("SAM2_TUI_DECORD_VIDEO", "1");
    opts.tuning.logits_dir = None;
    opts.set_env("SAM2_TUI_LOGITS_DIR", "");
}

pub fn settings_of(o: &SupervisorOptions) -> Settings {
    Settings { model: o.size, device: o.device, precision: o.precision }
}

/// The checkpoint of `size`: the one `serve` was started with when it holds that size,
/// else the official file where `weights download` puts it (as the supervisor's own
/// model switch finds it).
fn checkpoint_for(now: &SupervisorOptions, first: &SupervisorOptions, size: ModelSize) -> Result<PathBuf, String> {
    for o in [now, first] {
        if o.size == Some(size) && o.checkpoint.is_file() {
            return Ok(o.checkpoint.clone());
        }
    }
    let version = now.version.unwrap_or(ModelVersion::V2_1);
    let official = sam2_api::catalog::default_checkpoint(size, version);
    if official.is_file() {
        return Ok(official);
    }
    Err(format!(
        "no checkpoint for it ({} does not exist: `sam2-tui weights download {}` fetches it, about {} MB)",
        official.display(),
        size.name(),
        sam2_api::catalog::approx_megabytes(size)
    ))
}

/// Runs `expire_idle` every few seconds, for as long as the server runs.
pub async fn reap_idle(sessions: Arc<Sessions>) {
    let every = (sessions.cfg.idle_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        tokio::time::sleep(every).await;
        sessions.expire_idle();
    }
}

fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

/// Logs a session's worker news as it happens (also between requests), keeps its row on
/// the board current, and hands the rest to whoever runs an op. Told to `stop` (or once
/// nobody takes its news), it gives the supervisor's events back, for the worker's next
/// session.
async fn pump(
    short: String,
    id: String,
    board: Arc<Board>,
    mut events: UnboundedReceiver<EngineEvent>,
    tx: UnboundedSender<EngineEvent>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> UnboundedReceiver<EngineEvent> {
    loop {
        let e = tokio::select! {
            biased;
            _ = &mut stop => return events,
            e = events.recv() => match e {
                Some(e) => e,
                None => return events,
            },
        };
        match &e {
            EngineEvent::Stats(stats) => {
                board.session(&id, |r| r.stats = Some(stats.clone()));
                continue;
            }
            EngineEvent::Log { level: LogLevel::Info, .. } => continue,
            EngineEvent::State(state) => board.session(&id, |r| r.engine = state.clone()),
            EngineEvent::WorkerDied { reason, stderr_tail } => {
                let last = stderr_tail.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default();
                let last = if last.is_empty() { String::new() } else { format!("; last words: {last}") };
                board.error(format!("session {short}: worker died ({reason}{last}); restarting it and resuming"));
            }
            EngineEvent::WorkerStarted { pid, device, precision, model, restarts } => {
                let info = WorkerInfo { pid: *pid, device: *device, precision: *precision, model: model.clone() };
                board.session(&id, |r| {
                    r.worker = Some(info);
                    r.restarts = *restarts;
                });
                if *restarts > 0 {
                    board.warn(format!("session {short}: worker {pid} restarted (restart {restarts})"));
                }
            }
            EngineEvent::FellBack { from, to, reason } => {
                board.warn(format!("session {short}: fell back from {from} to {to}: {reason}"));
            }
            EngineEvent::Log { level: LogLevel::Error, message } if message.starts_with("giving up") => {
                board.error(format!("session {short}: {message}"));
            }
            // Its shared worker gave up; a worker of its own goes on with it.
            EngineEvent::Log { level: LogLevel::Warn, message } if message.starts_with("handed to") => {
                board.warn(format!("session {short}: {message}"));
            }
            _ => {}
        }
        if tx.send(e).is_err() {
            return events;
        }
    }
}

/// How long a worker started with `opts` may take to start, load and open a video: two
/// model loads (a restart on the way) and then some.
fn start_wait(opts: &SupervisorOptions) -> Duration {
    opts.watchdog.load_timeout.saturating_mul(2) + Duration::from_secs(30)
}

/// Waits until a new session's engine has the video open: its size and length, or why it
/// cannot (within `wait`). Which worker it runs on is noted as it is said.
async fn opened(
    events: &mut UnboundedReceiver<EngineEvent>,
    wait: Duration,
    board: &Board,
    short: &str,
    worker: &mut Option<String>,
    worker_info: &mut Option<WorkerInfo>,
) -> Result<(u32, u32, usize), String> {
    let mut last_error: Option<String> = None;
    let opened = tokio::time::timeout(wait, async {
        let mut info = None;
        while let Some(e) = events.recv().await {
            match e {
                EngineEvent::MediaInfo { width, height, frames, .. } => info = Some((width, height, frames)),
                EngineEvent::State(EngineState::Ready) => {
                    if let Some(i) = info {
                        return Ok(i);
                    }
                }
                EngineEvent::WorkerStarted { pid, device, precision, model, .. } => {
                    *worker = Some(format!("worker {pid} on {device} {precision}"));
                    *worker_info = Some(WorkerInfo { pid, device, precision, model });
                }
                EngineEvent::WorkerDied { reason, .. } => {
                    board.error(format!("session {short}: worker died while starting ({reason}); restarting"))
                }
                EngineEvent::Log { level: LogLevel::Error, message } => last_error = Some(message),
                EngineEvent::State(EngineState::Stopped) => break,
                _ => {}
            }
        }
        Err(last_error.clone().unwrap_or_else(|| "the engine stopped".into()))
    })
    .await;
    opened.unwrap_or_else(|_| Err(format!("the engine did not open it within {} s", wait.as_secs())))
}

/// Waits for a worker's supervisor, moved to a new session, to have the video open: its
/// size, then ready. False if it stops instead.
async fn reopen(events: &mut UnboundedReceiver<EngineEvent>) -> bool {
    let mut opened = false;
    while let Some(e) = events.recv().await {
        match e {
            EngineEvent::MediaInfo { .. } => opened = true,
            EngineEvent::State(EngineState::Ready) if opened => return true,
            EngineEvent::State(EngineState::Stopped) => return false,
            _ => {}
        }
    }
    false
}

/// Waits until a shared worker has let a closed session's stream go: its events end, and
/// with them its pump. Its folder (the stream's bank) may go then.
async fn let_go(left: Leftovers, wait: Duration) -> String {
    let Some((_, pumping)) = left.pump else { return "its stream was let go".into() };
    match tokio::time::timeout(wait, pumping).await {
        Ok(_) => "its stream was let go".into(),
        Err(_) => format!("its stream was not let go within {} s", wait.as_secs()),
    }
}

async fn shutdown_handle_of(left: Leftovers) {
    if let Some(h) = left.handle {
        shutdown_handle(h, left.commands).await;
    }
}

async fn discard(w: Warm) {
    shutdown_handle(w.handle, None).await;
    sam2_supervisor::session_dirs::remove_one_shot(&w.session_dir);
}

/// Stops a supervisor and waits for its threads (so for its worker). The commands
/// sender the session kept must be gone first, or the supervisor's command thread waits
/// for it forever.
async fn shutdown_handle(handle: SupervisorHandle, commands: Option<UnboundedSender<EngineCommand>>) {
    if let Some(c) = commands {
        let _ = c.send(EngineCommand::Cancel);
        drop(c);
    }
    let _ = tokio::task::spawn_blocking(move || handle.shutdown()).await;
}

pub struct Session {
    pub id: String,
    /// The path the client started it with.
    pub video: String,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    commands: Mutex<Option<UnboundedSender<EngineCommand>>>,
    /// Its stream on a shared worker (`--streams`), instead of a supervisor of its own.
    shared: Option<SharedLink>,
    masks: Arc<Mutex<sam2_supervisor::store::MaskStore>>,
    core: Arc<tokio::sync::Mutex<Core>>,
    /// Set by cancelPropagateInVideo, cleared when a propagation starts.
    pub cancel: AtomicBool,
    closed: AtomicBool,
    last_used: Mutex<Instant>,
    /// Requests and streams using the session now (an idle session has none).
    in_use: AtomicUsize,
    handle: Mutex<Option<SupervisorHandle>>,
    /// Stops the pump of the supervisor's events, which then gives them back.
    pump: Mutex<Option<Pump>>,
    /// Its worker can serve another session after this one (`Sessions::retire`), if
    /// the settings it runs are still the server's (`generation`, and never switched).
    recyclable: bool,
    generation: u64,
    switched: AtomicBool,
    /// The video the worker has open.
    media: PathBuf,
    /// The supervisor's journal on disk (how many ops a replay runs).
    journal_path: PathBuf,
    /// What its worker was asked to load.
    started_with: Settings,
    session_dir: PathBuf,
    /// Set when the engine reads the frames as the official decodes them.
    decoded: Option<crate::frames::Decoded>,
    board: Arc<Board>,
}

/// A session's engine with its video open, and what the session is made of
/// (`Sessions::session_opened`).
struct Opening<'a> {
    id: String,
    shown: &'a str,
    /// Width, height, frames.
    size: (u32, u32, usize),
    worker_info: Option<WorkerInfo>,
    events: UnboundedReceiver<EngineEvent>,
    commands: Option<UnboundedSender<EngineCommand>>,
    shared: Option<SharedLink>,
    masks: Arc<Mutex<sam2_supervisor::store::MaskStore>>,
    journal_path: PathBuf,
    handle: Option<SupervisorHandle>,
    started_with: Settings,
    recyclable: bool,
    generation: u64,
    media: PathBuf,
    session_dir: PathBuf,
    decoded: Option<crate::frames::Decoded>,
}

/// A session's pump of its supervisor's events: what stops it, and the task, which gives
/// the events back.
type Pump = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<UnboundedReceiver<EngineEvent>>);

/// What a closed session leaves to stop or to pass on.
struct Leftovers {
    commands: Option<UnboundedSender<EngineCommand>>,
    /// Its stream on a shared worker, being let go.
    shared: Option<SharedLink>,
    handle: Option<SupervisorHandle>,
    pump: Option<Pump>,
    worker: Option<WorkerInfo>,
    /// Its supervisor restarted the worker: the crash history, and any fall-back to
    /// another device or model, are that session's, not for the next one.
    restarted: bool,
}

/// Holds a session "in use" (not idle) while alive.
pub struct InUse(Arc<Session>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

impl Session {
    pub fn short(&self) -> String {
        short_id(&self.id)
    }

    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn use_it(self: &Arc<Self>) -> InUse {
        self.in_use.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InUse(self.clone())
    }

    fn idle_for(&self) -> Duration {
        if self.in_use.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.last_used.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub fn send(&self, cmd: EngineCommand) -> bool {
        if let Some(link) = &self.shared {
            return !self.is_closed() && link.send(cmd);
        }
        match self.commands.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(c) => c.send(cmd).is_ok(),
            None => false,
        }
    }

    /// cancelPropagateInVideo: the stream stops sending at once, the engine stops at the
    /// next frame.
    pub fn cancel_propagation(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        self.send(EngineCommand::Cancel);
    }

    /// Whether its worker will be a spare again when it closes.
    fn will_recycle(&self, generation: u64) -> bool {
        self.recyclable && self.generation == generation && !self.switched.load(Ordering::SeqCst)
    }

    /// Closes it to its clients at once: from here every request on it is refused and a
    /// running propagation stops at the next frame. What is left (its worker, pump and
    /// folder) is for `Sessions::retire`; None if it was closed already.
    fn begin_close(&self) -> Option<Leftovers> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return None;
        }
        self.cancel.store(true, Ordering::SeqCst);
        let commands = self.commands.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(c) = &commands {
            let _ = c.send(EngineCommand::Cancel);
        }
        // On a shared worker the stream is let go: a propagation of it stops at its next
        // frame, and its events end once nothing of it is left in the worker.
        let shared = self.shared.clone();
        if let Some(link) = &shared {
            link.send(EngineCommand::Shutdown);
        }
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        let pump = self.pump.lock().unwrap_or_else(|p| p.into_inner()).take();
        let row = self.board.status().sessions.into_iter().find(|r| r.id == self.id);
        let (worker, restarted) = row.map(|r| (r.worker, r.restarts > 0)).unwrap_or((None, false));
        self.board.remove_session(&self.id);
        Some(Leftovers { commands, shared, handle, pump, worker, restarted })
    }

    /// Replays the session on a fresh worker with new settings (`command`: a model,
    /// device or precision switch), between two of its ops: one running (a whole stream
    /// included) finishes first, and the client's next request waits for the replay.
    async fn switch(self: Arc<Self>, command: EngineCommand, load_wait: Duration) {
        let _busy = self.use_it();
        let mut core = self.lock().await;
        if self.is_closed() {
            return;
        }
        // Its worker no longer runs what the server's spares were loaded with.
        self.switched.store(true, Ordering::SeqCst);
        let worker = self.board.status().sessions.iter().find(|r| r.id == self.id).and_then(|r| r.worker.clone());
        if let (EngineCommand::SwitchModel(size), Some(w)) = (&command, &worker) {
            // The supervisor would only say so (no new worker, nothing to wait for).
            if w.model.size == *size {
                self.board.info(format!("session {}: already on the {size} model", self.short()));
                return;
            }
        }
        let t0 = Instant::now();
        // Ops the supervisor will replay: its journal, written before each op is sent (on
        // a shared worker, the ops it ran there: it moves to a supervisor of its own).
        let on_shared = self.shared.as_ref().and_then(|link| link.ops());
        let ops = on_shared.unwrap_or_else(|| Journal::load(&self.journal_path).map(|j| j.ops.len()).unwrap_or(0));
        self.board.session(&self.id, |r| r.switching = true);
        let result = core.replay(&self, command, ops, load_wait).await;
        self.board.session(&self.id, |r| r.switching = false);
        let worker = self.board.status().sessions.iter().find(|r| r.id == self.id).and_then(|r| r.worker.clone());
        match result {
            Ok(()) => self.board.info(format!(
                "session {}: {ops} op{} replayed on {} in {:.1} s",
                self.short(),
                if ops == 1 { "" } else { "s" },
                worker
                    .map(|w| format!(
                        "worker {} ({} {} on {}, {})",
                        w.pid, w.model.version, w.model.size, w.device, w.precision
                    ))
                    .unwrap_or_else(|| "a new worker".into()),
                t0.elapsed().as_secs_f32()
            )),
            Err(e) => self.board.error(format!("session {}: the switch failed: {e}", self.short())),
        }
    }

    /// The session's engine, for one op or one whole propagation at a time.
    pub async fn lock(&self) -> tokio::sync::OwnedMutexGuard<Core> {
        self.core.clone().lock_owned().await
    }

    fn empty(&self) -> Rle {
        Rle::encode(&vec![0u8; self.width as usize * self.height as usize], self.height as usize, self.width as usize)
    }

    /// Frame masks of the engine (its object ids) as the demo's answer: every object of
    /// the session in first-seen order, an empty mask where the engine has none.
    pub fn result(&self, objects: &[i32], m: &FrameMasks) -> FrameResult {
        let objects = objects
            .iter()
            .map(|&o| {
                let rle = m
                    .objects
                    .iter()
                    .find(|x| x.object == engine_id(o))
                    .and_then(|x| match &self.decoded {
                        Some(d) => d.mask(x.object, m.frame),
                        None => Some(x.rle.clone()),
                    })
                    .unwrap_or_else(|| self.empty());
                (o, rle)
            })
            .collect();
        FrameResult { frame: m.frame, objects }
    }

    /// The latest masks the supervisor holds for `frame` (for answers the engine gives
    /// none of).
    fn stored(&self, core: &Core, frame: usize) -> FrameResult {
        let store = self.masks.lock().unwrap_or_else(|p| p.into_inner());
        let objects = core
            .objects
            .iter()
            .map(|&o| {
                let rle = if core.in_engine.contains(&o) {
                    match &self.decoded {
                        Some(d) => d.mask(engine_id(o), frame),
                        None => store.get(frame, engine_id(o)).map(|m| m.rle.clone()),
                    }
                } else {
                    None
                };
                (o, rle.unwrap_or_else(|| self.empty()))
            })
            .collect();
        FrameResult { frame, objects }
    }

    fn publish_objects(&self, core: &Core) {
        let n = core.objects.len();
        self.board.session(&self.id, |r| r.objects = n);
    }

    // --- argument checks (before the engine is touched) ---------------------------------

    pub fn check_frame(&self, frame: i32) -> Result<usize, String> {
        if frame < 0 || frame as usize >= self.frames {
            return Err(format!(
                "frameIndex {frame} is out of range: {} has {} frames (0..={})",
                self.video,
                self.frames,
                self.frames - 1
            ));
        }
        Ok(frame as usize)
    }

    pub fn check_object(&self, object: i32) -> Result<i32, String> {
        if !(0..=MAX_DEMO_OBJECT_ID).contains(&object) {
            return Err(format!("objectId {object} is out of range: object ids are 0..={MAX_DEMO_OBJECT_ID}"));
        }
        Ok(object)
    }

    // --- the operations ---------------------------------------------------------------

    /// addPoints: points are normalised to 0..1 (x by the video's width, y by its height).
    pub async fn add_points(
        self: &Arc<Self>,
        frame: i32,
        object: i32,
        points: &[Vec<f64>],
        labels: &[i32],
        clear_old_points: bool,
    ) -> Result<FrameResult, String> {
        let frame = self.check_frame(frame)?;
        let object = self.check_object(object)?;
        let given = check_points(points, labels)?;
        let s = self.clone();
        detached(async move { s.add_points_now(frame, object, given, clear_old_points).await }).await
    }

    async fn add_points_now(
        self: &Arc<Self>,
        frame: usize,
        object: i32,
        given: Vec<NormPoint>,
        clear_old_points: bool,
    ) -> Result<FrameResult, String> {
        let _busy = self.use_it();
        let mut core = self.lock().await;
        core.usable(self)?;
        let mut all =
            if clear_old_points { vec![] } else { core.points.get(&(frame, object)).cloned().unwrap_or_default() };
        all.extend(given);
        if all.len() > MAX_POINTS_PER_PROMPT {
            return Err(format!(
                "{} points for object {object} on frame {frame}, more than the limit of {MAX_POINTS_PER_PROMPT}",
                all.len()
            ));
        }
        let (w, h) = (self.width as f64, self.height as f64);
        // In the engine's frame: the video's pixels, or the S×S frames of `frames`.
        let (w, h) = match &self.decoded {
            Some(d) => (d.side as f64, d.side as f64),
            None => (w, h),
        };
        let pixels: Vec<Point> =
            all.iter().map(|&(x, y, label)| Point { x: (x * w) as f32, y: (y * h) as f32, label }).collect();
        let op = Op::AddPrompt { frame, object: engine_id(object), points: pixels, bbox: None };
        let mut answer: Option<FrameMasks> = None;
        core.run(self, op, &mut |m| {
            if m.frame == frame {
                answer = Some(m)
            }
        })
        .await?;
        core.points.insert((frame, object), all);
        core.in_engine.insert(object);
        if !core.objects.contains(&object) {
            core.objects.push(object);
        }
        self.publish_objects(&core);
        Ok(match answer {
            Some(m) => self.result(&core.objects, &m),
            None => self.stored(&core, frame),
        })
    }

    /// clearPointsInFrame. An object never seen is added (empty), as the official does.
    pub async fn clear_points_in_frame(self: &Arc<Self>, frame: i32, object: i32) -> Result<FrameResult, String> {
        let frame = self.check_frame(frame)?;
        let object = self.check_object(object)?;
        let s = self.clone();
        detached(async move { s.clear_points_in_frame_now(frame, object).await }).await
    }

    async fn clear_points_in_frame_now(self: &Arc<Self>, frame: usize, object: i32) -> Result<FrameResult, String> {
        let _busy = self.use_it();
        let mut core = self.lock().await;
        core.usable(self)?;
        if !core.objects.contains(&object) {
            core.objects.push(object);
            self.publish_objects(&core);
        }
        if !core.in_engine.contains(&object) {
            return Ok(self.stored(&core, frame));
        }
        let mut answer: Option<FrameMasks> = None;
        core.run(self, Op::ClearFrame { frame, object: engine_id(object) }, &mut |m| {
            if m.frame == frame {
                answer = Some(m)
            }
        })
        .await?;
        core.points.remove(&(frame, object));
        Ok(match answer {
            Some(m) => self.result(&core.objects, &m),
            None => self.stored(&core, frame),
        })
    }

    /// clearPointsInVideo: the reference's reset_state.
    pub async fn clear_points_in_video(self: &Arc<Self>) -> Result<(), String> {
        let s = self.clone();
        detached(async move { s.clear_points_in_video_now().await }).await
    }

    async fn clear_points_in_video_now(self: &Arc<Self>) -> Result<(), String> {
        let _busy = self.use_it();
        let mut core = self.lock().await;
        core.usable(self)?;
        core.run(self, Op::Reset, &mut |_| {}).await?;
        if let Some(d) = &self.decoded {
            let _ = std::fs::remove_dir_all(&d.logits);
        }
        core.objects.clear();
        core.in_engine.clear();
        core.points.clear();
        self.publish_objects(&core);
        Ok(())
    }

    /// removeObject: the refreshed frames where it had points, with the other objects'
    /// masks; nothing when it did not exist or was the last one (then all is reset).
    pub async fn remove_object(self: &Arc<Self>, object: i32) -> Result<Vec<FrameResult>, String> {
        let s = self.clone();
        detached(async move { s.remove_object_now(object).await }).await
    }

    async fn remove_object_now(self: &Arc<Self>, object: i32) -> Result<Vec<FrameResult>, String> {
        let _busy = self.use_it();
        let mut core = self.lock().await;
        core.usable(self)?;
        if !(0..=MAX_DEMO_OBJECT_ID).contains(&object) || !core.objects.contains(&object) {
            return Ok(vec![]);
        }
        // The last object's removal resets the engine (as the reference does) and
        // refreshes no frame.
        let mut frames: Vec<FrameMasks> = vec![];
        if core.in_engine.contains(&object) {
            core.run(self, Op::RemoveObject { object: engine_id(object) }, &mut |m| {
                // A replayed op (after a crash) sends its frames again: the latest wins.
                match frames.iter_mut().find(|f| f.frame == m.frame) {
                    Some(f) => *f = m,
                    None => frames.push(m),
                }
            })
            .await?;
        }
        core.objects.retain(|&o| o != object);
        core.in_engine.remove(&object);
        core.points.retain(|(_, o), _| *o != object);
        self.publish_objects(&core);
        Ok(frames.iter().map(|m| self.result(&core.objects, m)).collect())
    }

    /// Judges a propagation before it starts: the session has prompted objects and the
    /// start frame exists. The errors are the reference's (it would fail the same way).
    pub fn check_propagation(&self, core: &Core, start: i64) -> Result<usize, String> {
        core.usable(self)?;
        if start < 0 || start as usize >= self.frames {
            return Err(format!(
                "start_frame_index {start} is out of range: {} has {} frames (0..={})",
                self.video,
                self.frames,
                self.frames - 1
            ));
        }
        if core.objects.is_empty() {
            return Err("No input points or masks are provided for any object; please add inputs first.".into());
        }
        if let Some(o) = core.objects.iter().find(|o| !core.points.keys().any(|(_, p)| p == *o)) {
            return Err(format!("No input points or masks are provided for object id {o}; please add inputs first."));
        }
        Ok(start as usize)
    }
}

/// Runs an op to its end on a task of its own: a client that goes away mid-request
/// drops the request's future, and an op abandoned between sending and its end would
/// leave its news for the next op to read as its own.
async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    tokio::spawn(f).await.map_err(|e| format!("internal error: {e}"))?
}

/// The engine's object id for the demo's.
pub fn engine_id(demo: i32) -> u32 {
    demo as u32 + 1
}

/// Points `[[x, y], …]` normalised to 0..1 with labels 0 (negative) or 1 (positive).
fn check_points(points: &[Vec<f64>], labels: &[i32]) -> Result<Vec<NormPoint>, String> {
    if points.is_empty() {
        return Err("addPoints needs at least one point".into());
    }
    if points.len() != labels.len() {
        return Err(format!("{} points but {} labels: each point needs one label", points.len(), labels.len()));
    }
    if points.len() > MAX_POINTS_PER_PROMPT {
        return Err(format!("{} points, more than the limit of {MAX_POINTS_PER_PROMPT}", points.len()));
    }
    let mut out = Vec::with_capacity(points.len());
    for (i, (p, &label)) in points.iter().zip(labels).enumerate() {
        let [x, y] = p[..] else {
            return Err(format!("point {i} must be [x, y], got {} numbers", p.len()));
        };
        if !(0.0..=1.0).contains(&x) || !(0.0..=1.0).contains(&y) {
            return Err(format!(
                "point {i} [{x}, {y}] is outside the frame: points are normalised to 0..1 (x by the video's width, y by its height)"
            ));
        }
        if label != 0 && label != 1 {
            return Err(format!("label {i} is {label}: labels are 1 (positive) or 0 (negative)"));
        }
        out.push((x, y, label));
    }
    Ok(out)
}

/// A point as the demo sends it: x, y normalised to 0..1, and its label.
type NormPoint = (f64, f64, i32);

/// A session's engine and what the demo's API keeps over it; held for one op (or one
/// whole propagation) at a time.
pub struct Core {
    events: UnboundedReceiver<EngineEvent>,
    /// Objects in the order first seen (demo ids).
    pub objects: Vec<i32>,
    /// Objects the engine has (had points since the last reset).
    in_engine: BTreeSet<i32>,
    /// Points per (frame, object), normalised, with labels.
    points: BTreeMap<(usize, i32), Vec<NormPoint>>,
    /// Set when the supervisor gave up on the engine.
    stopped: Option<String>,
}

/// How an op ended.
pub enum Ended {
    Done,
    Cancelled,
}

impl Core {
    fn usable(&self, s: &Session) -> Result<(), String> {
        if s.is_closed() {
            return Err(unknown_session(&s.id));
        }
        if let Some(why) = &self.stopped {
            return Err(format!("the engine of this session stopped ({why}); close it and start a new session"));
        }
        Ok(())
    }

    /// Sends one op and follows it to its end, handing each frame's masks to `on_masks`.
    /// A worker death in between is the supervisor's business: it restarts the worker,
    /// replays the journal and resumes, and the masks keep coming.
    pub async fn run(
        &mut self,
        s: &Session,
        op: Op,
        on_masks: &mut (dyn FnMut(FrameMasks) + Send),
    ) -> Result<Ended, String> {
        self.run_with(s, op, on_masks, &mut || false).await
    }

    /// `run`, with `cancel_now` asked after each event: true sends the engine a cancel
    /// (once).
    pub async fn run_with(
        &mut self,
        s: &Session,
        op: Op,
        on_masks: &mut (dyn FnMut(FrameMasks) + Send),
        cancel_now: &mut (dyn FnMut() -> bool + Send),
    ) -> Result<Ended, String> {
        // News that arrived between ops (the engine giving up while idle).
        while let Ok(e) = self.events.try_recv() {
            self.note(&e);
        }
        self.usable(s)?;
        if !s.send(EngineCommand::Op(op)) {
            return Err(unknown_session(&s.id));
        }
        let mut cancel_sent = false;
        loop {
            let Some(e) = self.events.recv().await else {
                return Err(if s.is_closed() { unknown_session(&s.id) } else { "the engine stopped".into() });
            };
            self.note(&e);
            match e {
                EngineEvent::Masks(m) => on_masks(m),
                EngineEvent::OpFinished { cancelled, .. } => {
                    return Ok(if cancelled { Ended::Cancelled } else { Ended::Done });
                }
                EngineEvent::OpFailed { message, .. } => return Err(message),
                EngineEvent::Log { level: LogLevel::Error, message } if message.starts_with("refused op") => {
                    return Err(message);
                }
                EngineEvent::State(EngineState::Stopped) => {
                    return Err(if s.is_closed() {
                        unknown_session(&s.id)
                    } else {
                        format!(
                            "the engine of this session stopped ({}); close it and start a new session",
                            self.stopped.clone().unwrap_or_default()
                        )
                    });
                }
                _ => {}
            }
            if !cancel_sent && cancel_now() {
                cancel_sent = true;
                s.send(EngineCommand::Cancel);
            }
        }
    }

    /// Sends a switch and follows the replay it starts to its end: a new worker loads,
    /// then the `ops` journaled ops run again (their news is the replay's, not an op's).
    /// A new worker that does not load within `load_wait` ends the wait (an error): the
    /// session must not stay locked.
    async fn replay(
        &mut self,
        s: &Session,
        command: EngineCommand,
        ops: usize,
        load_wait: Duration,
    ) -> Result<(), String> {
        while let Ok(e) = self.events.try_recv() {
            self.note(&e);
        }
        self.usable(s)?;
        if !s.send(command) {
            return Err(unknown_session(&s.id));
        }
        let mut loaded = false;
        let mut left = ops;
        let load_by = tokio::time::Instant::now() + load_wait;
        loop {
            let next = if loaded {
                self.events.recv().await
            } else {
                match tokio::time::timeout_at(load_by, self.events.recv()).await {
                    Ok(e) => e,
                    Err(_) => return Err(format!("no worker loaded within {} s", load_wait.as_secs())),
                }
            };
            let Some(e) = next else {
                return Err(if s.is_closed() { unknown_session(&s.id) } else { "the engine stopped".into() });
            };
            self.note(&e);
            match e {
                EngineEvent::WorkerStarted { .. } => loaded = true,
                EngineEvent::OpFinished { .. } | EngineEvent::OpFailed { .. } if loaded && left > 0 => {
                    left -= 1;
                    if left == 0 {
                        return Ok(());
                    }
                }
                EngineEvent::State(EngineState::Ready) if loaded && left == 0 => return Ok(()),
                EngineEvent::State(EngineState::Stopped) => {
                    return Err(self.stopped.clone().unwrap_or_else(|| "the engine stopped".into()));
                }
                EngineEvent::Log { level: LogLevel::Error, message } if message.starts_with("not switching") => {
                    return Err(message);
                }
                _ => {}
            }
        }
    }

    fn note(&mut self, e: &EngineEvent) {
        match e {
            EngineEvent::State(EngineState::Stopped) if self.stopped.is_none() => {
                self.stopped = Some("it kept crashing".into());
            }
            EngineEvent::Log { level: LogLevel::Error, message } if message.starts_with("giving up") => {
                self.stopped = Some(message.clone());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_judged_before_the_engine_sees_them() {
        assert!(check_points(&[vec![0.5, 0.5]], &[1]).is_ok());
        assert!(check_points(&[vec![0.0, 1.0]], &[0]).is_ok(), "the edges are inside");
        assert!(check_points(&[vec![1.01, 0.5]], &[1]).unwrap_err().contains("outside the frame"));
        assert!(check_points(&[vec![-0.1, 0.5]], &[1]).is_err());
        assert!(check_points(&[vec![f64::NAN, 0.5]], &[1]).is_err());
        assert!(check_points(&[vec![0.5]], &[1]).unwrap_err().contains("[x, y]"));
        assert!(check_points(&[vec![0.5, 0.5]], &[1, 0]).unwrap_err().contains("labels"));
        assert!(check_points(&[vec![0.5, 0.5]], &[2]).is_err());
        assert!(check_points(&[], &[]).is_err());
    }
}
