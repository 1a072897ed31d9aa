//! What the server is doing, for the people running it: the sessions with their workers,
//! the settings new sessions get, and the log, as one `ServerStatus` the server keeps up
//! to date on a `tokio::sync::watch` channel (`Board`). A viewer (`sam2-tui serve
//! --console`) only reads it; its wishes come back as `Control`s, which the server
//! carries out itself. Data flows one way: nothing outside this crate touches a session.
//!
//! The board is also the log: headless, each line goes to stderr as it always did
//! (`log::line`); with a viewer, stderr is its terminal, so the lines live on the board.
use crate::log;
use sam2_api::device::{DeviceChoice, Precision, PrecisionChoice};
use sam2_api::events::{EngineState, ModelLabel, WorkerStats};
use sam2_api::model::ModelSize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the operator asks of the server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    /// New sessions get these settings; open ones are replayed on a fresh worker with them.
    Switch(Switch),
    /// Refuse new sessions, let the open ones finish, then stop (exit 0).
    Drain,
    /// Stop now: every session is closed.
    Stop,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Switch {
    Model(ModelSize),
    Device(DeviceChoice),
    Precision(PrecisionChoice),
}

/// What a new session's worker is asked to load.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Settings {
    /// None: what the checkpoint holds (judged when `serve` starts).
    pub model: Option<ModelSize>,
    pub device: DeviceChoice,
    pub precision: PrecisionChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// `HH:MM:SS` (UTC), as the headless log writes it.
    pub time: String,
    pub level: Level,
    pub text: String,
}

/// The worker a session runs on, as it reported itself when it loaded the model.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerInfo {
    pub pid: u32,
    pub device: DeviceChoice,
    pub precision: Precision,
    pub model: ModelLabel,
}

/// A propagation being streamed to the client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Streaming {
    pub from_frame: usize,
    /// Parts sent in this stream.
    pub sent: usize,
    /// Parts per second over the last few parts (0 until two were sent).
    pub fps: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SessionStatus {
    pub id: String,
    /// The path the client started it with (`gallery/clip.mp4`).
    pub video: String,
    pub frames: usize,
    pub objects: usize,
    /// The engine's state as its supervisor last said.
    pub engine: EngineState,
    pub streaming: Option<Streaming>,
    /// Parts sent to the client over the session's life.
    pub frames_streamed: u64,
    pub restarts: u32,
    /// Being replayed on a worker with new settings.
    pub switching: bool,
    pub worker: Option<WorkerInfo>,
    /// The worker's last heartbeat: its device memory (CUDA allocator, MPS, RSS).
    pub stats: Option<WorkerStats>,
}

impl SessionStatus {
    pub fn new(id: &str, video: &str, frames: usize, worker: Option<WorkerInfo>) -> SessionStatus {
        SessionStatus {
            id: id.to_string(),
            video: video.to_string(),
            frames,
            objects: 0,
            engine: EngineState::Ready,
            streaming: None,
            frames_streamed: 0,
            restarts: 0,
            switching: false,
            worker,
            stats: None,
        }
    }

    /// One word for the sessions table.
    pub fn state(&self) -> &'static str {
        match &self.engine {
            EngineState::Stopped => "stopped",
            EngineState::Crashed { .. } | EngineState::Restarting { .. } => "restarting",
            _ if self.switching => "switching",
            _ if self.streaming.is_some() => "streaming",
            EngineState::Starting | EngineState::Loading => "starting",
            EngineState::Propagating { .. } => "tracking",
            EngineState::Ready => "idle",
        }
    }
}

/// Everything a viewer shows. Plain data: a view of it can be tested from a value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerStatus {
    /// `http://127.0.0.1:7263`.
    pub address: String,
    /// Listening, the gallery ready (before: making posters).
    pub serving: bool,
    pub settings: Settings,
    pub max_sessions: usize,
    /// Sessions whose worker is being started (not listed yet).
    pub starting: usize,
    /// Spare workers ready with the model loaded.
    pub spare_workers: usize,
    pub draining: bool,
    /// In the order they started.
    pub sessions: Vec<SessionStatus>,
    /// The newest `LOG_LINES` lines, oldest first.
    pub log: VecDeque<LogEntry>,
}

impl ServerStatus {
    pub const LOG_LINES: usize = 500;

    /// Frames per second streamed by all sessions together now.
    pub fn aggregate_fps(&self) -> f32 {
        // A fold from +0.0: `sum` of no f32 is -0.0, which prints as "-0.0".
        self.sessions.iter().filter_map(|s| s.streaming).fold(0.0, |total, s| total + s.fps)
    }

    pub fn frames_streamed(&self) -> u64 {
        self.sessions.iter().map(|s| s.frames_streamed).sum()
    }

    pub fn restarts(&self) -> u32 {
        self.sessions.iter().map(|s| s.restarts).sum()
    }

    fn session(&mut self, id: &str) -> Option<&mut SessionStatus> {
        self.sessions.iter_mut().find(|s| s.id == id)
    }
}

/// The publishing side: the server changes the status through it, viewers `subscribe`.
pub struct Board {
    tx: watch::Sender<ServerStatus>,
    /// Headless: every log line also goes to stderr.
    echo: bool,
    /// When each session's recent parts were sent (for its rate).
    sent_at: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Parts kept for a stream's rate, and how old they may be.
const RATE_PARTS: usize = 16;
const RATE_WINDOW: Duration = Duration::from_secs(3);

impl Board {
    /// `echo`: write each log line to stderr too (headless `serve`).
    pub fn new(echo: bool) -> Board {
        Board { tx: watch::Sender::new(ServerStatus::default()), echo, sent_at: Mutex::new(HashMap::new()) }
    }

    pub fn subscribe(&self) -> watch::Receiver<ServerStatus> {
        self.tx.subscribe()
    }

    /// The status now (a copy).
    pub fn status(&self) -> ServerStatus {
        self.tx.borrow().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut ServerStatus)) {
        self.tx.send_modify(f);
    }

    /// Changes one session's row (nothing when it is gone).
    pub fn session(&self, id: &str, f: impl FnOnce(&mut SessionStatus)) {
        self.tx.send_modify(|s| {
            if let Some(row) = s.session(id) {
                f(row)
            }
        });
    }

    pub fn add_session(&self, row: SessionStatus) {
        self.tx.send_modify(|s| s.sessions.push(row));
    }

    pub fn remove_session(&self, id: &str) {
        self.sent_at.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.tx.send_modify(|s| s.sessions.retain(|r| r.id != id));
    }

    pub fn stream_started(&self, id: &str, from_frame: usize) {
        self.sent_at.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.session(id, |r| r.streaming = Some(Streaming { from_frame, sent: 0, fps: 0.0 }));
    }

    /// One part went to the client.
    pub fn part_sent(&self, id: &str) {
        self.part_sent_at(id, Instant::now())
    }

    fn part_sent_at(&self, id: &str, now: Instant) {
        let fps = {
            let mut all = self.sent_at.lock().unwrap_or_else(|p| p.into_inner());
            let times = all.entry(id.to_string()).or_default();
            times.push_back(now);
            while times.len() > RATE_PARTS || times.front().is_some_and(|t| now.duration_since(*t) > RATE_WINDOW) {
                times.pop_front();
            }
            match (times.front(), times.len()) {
                (Some(first), n) if n >= 2 => (n - 1) as f32 / now.duration_since(*first).as_secs_f32().max(1e-3),
                _ => 0.0,
            }
        };
        self.session(id, |r| {
            r.frames_streamed += 1;
            if let Some(s) = r.streaming.as_mut() {
                s.sent += 1;
                s.fps = fps;
            }
        });
    }

    pub fn stream_ended(&self, id: &str) {
        self.sent_at.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.session(id, |r| r.streaming = None);
    }

    pub fn info(&self, text: String) {
        self.log(Level::Info, text)
    }

    pub fn warn(&self, text: String) {
        self.log(Level::Warn, text)
    }

    pub fn error(&self, text: String) {
        self.log(Level::Error, text)
    }

    /// One line of the log: on stderr when headless, else in the tracing log (the
    /// operator view's terminal is stderr).
    pub fn log(&self, level: Level, text: String) {
        let text = text.replace('\n', " ");
        if self.echo {
            log::line(&text);
        } else {
            match level {
                Level::Info => tracing::info!(target: "serve", "{text}"),
                Level::Warn => tracing::warn!(target: "serve", "{text}"),
                Level::Error => tracing::error!(target: "serve", "{text}"),
            }
        }
        let time = log::clock();
        self.tx.send_modify(|s| {
            s.log.push_back(LogEntry { time: time[..8].to_string(), level, text });
            while s.log.len() > ServerStatus::LOG_LINES {
                s.log.pop_front();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streams_rate_is_its_recent_parts_per_second_and_ends_with_it() {
        let b = Board::new(false);
        b.add_session(SessionStatus::new("s1", "gallery/a.mp4", 24, None));
        b.stream_started("s1", 0);
        let t0 = Instant::now();
        b.part_sent_at("s1", t0);
        assert_eq!(b.status().sessions[0].streaming.unwrap().fps, 0.0, "one part has no rate");
        b.part_sent_at("s1", t0 + Duration::from_millis(50));
        b.part_sent_at("s1", t0 + Duration::from_millis(100));
        let s = b.status();
        let fps = s.sessions[0].streaming.unwrap().fps;
        assert!((fps - 20.0).abs() < 0.01, "three parts 50 ms apart: {fps}");
        // A pause longer than the window: the rate is of the parts since.
        b.part_sent_at("s1", t0 + Duration::from_secs(10));
        b.part_sent_at("s1", t0 + Duration::from_millis(10_500));
        let fps = b.status().sessions[0].streaming.unwrap().fps;
        assert!((fps - 2.0).abs() < 0.01, "{fps}");
        b.part_sent_at("s1", t0 + Duration::from_millis(10_600));
        let s = b.status();
        let fps = s.sessions[0].streaming.unwrap().fps;
        assert_eq!(s.aggregate_fps(), fps);
        assert_eq!(s.sessions[0].state(), "streaming");
        b.stream_ended("s1");
        let s = b.status();
        assert_eq!((s.sessions[0].frames_streamed, s.aggregate_fps()), (6, 0.0));
        assert_eq!(s.sessions[0].state(), "idle");
    }

    #[test]
    fn the_log_keeps_the_newest_lines_on_one_line_each() {
        let b = Board::new(false);
        for i in 0..ServerStatus::LOG_LINES + 3 {
            b.info(format!("line {i}\nsecond half"));
        }
        let s = b.status();
        assert_eq!(s.log.len(), ServerStatus::LOG_LINES);
        assert_eq!(s.log.back().unwrap().text, format!("line {} second half", ServerStatus::LOG_LINES + 2));
        assert_eq!(s.log.back().unwrap().time.len(), 8);
    }
}
