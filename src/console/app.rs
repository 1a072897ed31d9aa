//! The console's whole state and the one function that changes it. `update` is pure
//! bookkeeping: anything with an outside effect (a message to the engine, a file write,
//! quitting) is returned as an `Effect` for the runner to carry out.
use super::action::{Action, Command, InputKey, PreviewImage};
use super::keymap::{Keymap, Mode};
use crate::config::{Config, Theme};
use crate::device::{DeviceChoice, Precision};
use crate::model::config::ModelSize;
use crate::session::{Journal, ObjectId, Op, Point};
use crate::supervisor::events::{
    EngineCommand, EngineEvent, EngineState, LogLevel, ModelLabel, ObjectMask, StageTimings, WorkerStats,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the runner must do after an update.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Engine(EngineCommand),
    Save(PathBuf),
    Export,
    /// Fetch the official checkpoint of this size into weights/ (`sam2-tui weights download`).
    Download(ModelSize),
    Quit,
}

/// The prompts of one object on one frame: what one `add_prompt` op carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromptSet {
    pub points: Vec<Point>,
    pub bbox: Option<[f32; 4]>,
}

impl PromptSet {
    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.bbox.is_none()
    }
}

/// One undoable prompt edit: the prompt set of (frame, object) before and after.
#[derive(Clone, Debug, PartialEq)]
struct Edit {
    frame: usize,
    object: ObjectId,
    before: PromptSet,
    after: PromptSet,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MediaInfo {
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub fps: f32,
}

/// What the header and device panel know about the worker.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineView {
    pub state: EngineState,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub device: Option<DeviceChoice>,
    pub precision: Option<Precision>,
    /// The precision asked for (`auto` is resolved per device by the supervisor).
    pub precision_choice: crate::device::PrecisionChoice,
    pub model: Option<ModelLabel>,
    /// The model size asked for (the `m` cycle starts from here until a worker reports).
    pub requested_model: ModelSize,
    /// (from, to, reason) of the last fallback.
    pub fell_back: Option<(DeviceChoice, DeviceChoice, String)>,
    pub last_death: Option<String>,
    pub watermark: Option<f32>,
    pub stats: Option<WorkerStats>,
    /// Why no engine was started (e.g. no checkpoint), shown instead of a state.
    pub blocked: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Perf {
    pub fps: f32,
    /// Recent FPS samples, newest last (for the sparkline).
    pub fps_history: VecDeque<f32>,
    pub timings: StageTimings,
    pub done: usize,
    pub total: usize,
    /// A propagation is running (its progress and ETA mean something).
    pub running: bool,
    /// The last frame a propagation reported.
    pub last_frame: Option<usize>,
    /// How long the last click (a prompt op) took from key to masks, in milliseconds.
    pub click_ms: Option<f32>,
}

impl Perf {
    pub const HISTORY: usize = 120;

    /// Seconds left at the current rate, when propagating.
    pub fn eta_secs(&self) -> Option<f32> {
        (self.running && self.fps > 0.0 && self.total > self.done).then(|| (self.total - self.done) as f32 / self.fps)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Modal {
    None,
    Help,
    ConfirmQuit,
    /// `d` on an object with prompts or masks: deleting loses work, so it asks.
    ConfirmDelete(ObjectId),
    /// A session saved for this video was found at start-up (not given with --session).
    OfferSession {
        path: PathBuf,
        journal: Journal,
    },
    /// No checkpoint at start-up: offer to download the official one of this size.
    OfferDownload(ModelSize),
    /// The watermark ratio being typed.
    Watermark(String),
}

/// An op sent to the engine and not answered yet: what the user waits for.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    /// Its index in the journal (the supervisor's `OpFinished` names it).
    pub index: usize,
    /// The frame whose masks answer it (prompt edits).
    pub frame: Option<usize>,
    pub what: String,
    pub since: Instant,
}

pub struct App {
    pub theme: Theme,
    pub keymap: Keymap,
    pub input: Option<PathBuf>,
    /// Where `s` writes the journal.
    pub session_path: PathBuf,
    pub engine: EngineView,
    pub perf: Perf,
    pub media: Option<MediaInfo>,
    pub frame: usize,
    /// In video pixels.
    pub cursor: (f32, f32),
    cursor_step: u32,
    pub objects: Vec<ObjectId>,
    pub selected: usize,
    next_object: ObjectId,
    pub prompts: BTreeMap<(usize, ObjectId), PromptSet>,
    /// Corner where a box being drawn started.
    pub box_anchor: Option<(f32, f32)>,
    /// Masks per frame as the engine sent them (RLE: small enough to keep for every frame).
    pub masks: BTreeMap<usize, Vec<ObjectMask>>,
    undo: Vec<Edit>,
    redo: Vec<Edit>,
    pub journal: Journal,
    /// The journal changed since it was last saved.
    pub dirty: bool,
    quit_after_save: bool,
    /// A count typed before a command (`12f`).
    pub count: Option<usize>,
    pub modal: Modal,
    pub log: VecDeque<LogLine>,
    /// Terminal size in cells.
    pub size: (u16, u16),
    /// The preview follows propagation until the user moves to a frame.
    pub follow: bool,
    pub preview: Option<PreviewImage>,
    /// Bumped whenever what the preview shows changes (frame, masks, prompts, cursor).
    pub scene_version: u64,
    pub should_quit: bool,
    pub mask_alpha: f32,
    /// Terminal cell size in pixels (from the graphics probe; 10×20 when unknown).
    pub font: (u16, u16),
    /// First row of the help overlay shown (it scrolls when the screen is too short).
    pub help_scroll: usize,
    /// How many log lines back from the newest the log pane shows (0: follow new lines).
    pub log_back: usize,
    /// The time of the last update (ages of busy states are measured against it).
    pub clock: Instant,
    /// When the engine state last changed.
    pub state_since: Instant,
    /// Ops sent and not answered, oldest first.
    pub pending: VecDeque<Pending>,
    /// A cancel was asked for and the engine is finishing its current frame (since when).
    pub cancelling: Option<Instant>,
    /// The running propagation goes backwards (which frame it finishes next).
    propagating_reverse: bool,
    /// The first frame the running pass reported (with `perf.last_frame`: how far it ran).
    pass_first: Option<usize>,
    /// Propagations of a resumed session still to be replayed.
    pub replay_left: usize,
    /// `esc` during the replay: cancel each replayed pass as it starts.
    skip_replay: bool,
}

impl App {
    pub const LOG_LINES: usize = 500;

    pub fn new(config: &Config, theme: Theme, keymap: Keymap, input: Option<PathBuf>, session_path: PathBuf) -> App {
        App {
            theme,
            keymap,
            input,
            session_path,
            engine: EngineView {
                state: EngineState::Starting,
                pid: None,
                restarts: 0,
                device: None,
                precision: None,
                precision_choice: config.engine.precision,
                model: None,
                requested_model: config.engine.model,
                fell_back: None,
                last_death: None,
                watermark: config.engine.mps_high_watermark_ratio,
                stats: None,
                blocked: None,
            },
            perf: Perf::default(),
            media: None,
            frame: 0,
            cursor: (0.0, 0.0),
            cursor_step: config.console.cursor_step,
            objects: vec![1],
            selected: 0,
            next_object: 2,
            prompts: BTreeMap::new(),
            box_anchor: None,
            masks: BTreeMap::new(),
            undo: vec![],
            redo: vec![],
            journal: Journal::new(),
            dirty: false,
            quit_after_save: false,
            count: None,
            modal: Modal::None,
            log: VecDeque::new(),
            size: (80, 24),
            follow: false,
            preview: None,
            scene_version: 0,
            should_quit: false,
            mask_alpha: config.console.mask_alpha,
            font: (10, 20),
            help_scroll: 0,
            log_back: 0,
            clock: Instant::now(),
            state_since: Instant::now(),
            pending: VecDeque::new(),
            cancelling: None,
            propagating_reverse: false,
            pass_first: None,
            replay_left: 0,
            skip_replay: false,
        }
    }

    /// Rebuilds the prompt state from a saved journal (the supervisor replays its ops).
    pub fn resume(&mut self, journal: Journal) {
        for op in &journal.ops {
            match op {
                Op::AddPrompt { frame, object, points, bbox } => {
                    self.ensure_object(*object);
                    self.prompts.insert((*frame, *object), PromptSet { points: points.clone(), bbox: *bbox });
                }
                Op::ClearFrame { frame, object } => {
                    self.prompts.remove(&(*frame, *object));
                }
                Op::RemoveObject { object } => self.forget_object(*object),
                Op::Reset => {
                    self.prompts.clear();
                    self.masks.clear();
                }
                Op::Propagate { .. } => {}
            }
        }
        if self.objects.is_empty() {
            self.objects.push(self.next_object);
            self.next_object += 1;
        }
        self.note(
            LogLevel::Info,
            format!("resumed {} journal ops from {}", journal.ops.len(), self.session_path.display()),
        );
        self.replay_left = journal.ops.iter().filter(|op| matches!(op, Op::Propagate { .. })).count();
        if self.replay_left > 0 {
            self.note(
                LogLevel::Info,
                format!(
                    "replaying {} saved propagation(s); esc skips them (prompts and their masks stay)",
                    self.replay_left
                ),
            );
        }
        self.journal = journal;
        self.dirty = false;
        self.scene_version += 1;
    }

    /// At start-up: a session saved for this video exists; ask whether to resume it.
    pub fn offer_session(&mut self, path: PathBuf, journal: Journal) {
        self.note(
            LogLevel::Info,
            format!("found a saved session for this video: {} ({} ops)", path.display(), journal.ops.len()),
        );
        self.modal = Modal::OfferSession { path, journal };
    }

    /// Resumes a session after the engine started: its ops go to the engine in order.
    fn resume_now(&mut self, path: PathBuf, journal: Journal) -> Vec<Effect> {
        self.session_path = path;
        let ops = journal.ops.clone();
        self.resume(journal);
        ops.into_iter().map(|op| Effect::Engine(EngineCommand::Op(op))).collect()
    }

    pub fn mode(&self) -> Mode {
        match self.modal {
            Modal::None => Mode::Normal,
            Modal::Help => Mode::Help,
            Modal::ConfirmQuit => Mode::ConfirmQuit,
            Modal::ConfirmDelete(_) | Modal::OfferSession { .. } | Modal::OfferDownload(_) => Mode::Question,
            Modal::Watermark(_) => Mode::Input,
        }
    }

    pub fn selected_object(&self) -> ObjectId {
        self.objects[self.selected.min(self.objects.len() - 1)]
    }

    pub fn frames(&self) -> usize {
        self.media.map(|m| m.frames).unwrap_or(1).max(1)
    }

    pub fn is_propagating(&self) -> bool {
        matches!(self.engine.state, EngineState::Propagating { .. })
    }

    /// Frames that carry prompts of any object.
    pub fn prompted_frames(&self) -> BTreeSet<usize> {
        self.prompts.iter().filter(|(_, p)| !p.is_empty()).map(|((f, _), _)| *f).collect()
    }

    /// What the engine is busy with that the user waits for, with its age once it is a
    /// second old: a cancel finishing its frame, else the oldest unanswered op.
    pub fn busy(&self) -> Option<String> {
        let age = |since: Instant| {
            let secs = self.clock.saturating_duration_since(since).as_secs_f32();
            if secs >= 1.0 {
                format!(" · {secs:.0} s")
            } else {
                String::new()
            }
        };
        if let Some(since) = self.cancelling {
            let finishing = match self.perf.last_frame {
                Some(f) if self.propagating_reverse => format!(" · finishing frame {}", f.saturating_sub(1)),
                Some(f) => format!(" · finishing frame {}", (f + 1).min(self.frames() - 1)),
                None => String::new(),
            };
            return Some(format!("cancelling{finishing}{}", age(since)));
        }
        self.pending.front().map(|p| format!("{}{}", p.what, age(p.since)))
    }

    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        self.clock = Instant::now();
        match action {
            Action::Command(c) => {
                let count = self.count.take();
                self.command(c, count)
            }
            Action::Digit(d) => {
                let c = self.count.unwrap_or(0).saturating_mul(10).saturating_add(d as usize);
                self.count = Some(c.min(10_000_000));
                vec![]
            }
            Action::Input(k) => self.input_key(k),
            Action::QuitAnyway => {
                self.should_quit = true;
                vec![Effect::Quit]
            }
            Action::SaveAndQuit => {
                self.modal = Modal::None;
                self.quit_after_save = true;
                vec![Effect::Save(self.session_path.clone())]
            }
            Action::Dismiss => {
                match &self.modal {
                    Modal::ConfirmDelete(id) => self.note(LogLevel::Info, format!("object {id} kept")),
                    Modal::OfferSession { path, .. } => {
                        // Starting fresh must not overwrite the saved session on `s`.
                        self.session_path = fresh_session_path(path);
                        let note = format!(
                            "starting fresh; {} is kept, `s` saves to {}",
                            path.display(),
                            self.session_path.display()
                        );
                        self.note(LogLevel::Info, note);
                    }
                    _ => {}
                }
                self.modal = Modal::None;
                vec![]
            }
            Action::HelpScroll(d) => {
                self.help_scroll = self
                    .help_scroll
                    .saturating_add_signed(d as isize)
                    .min(self.keymap.help_lines().len().saturating_sub(1));
                vec![]
            }
            Action::Yes => match std::mem::replace(&mut self.modal, Modal::None) {
                Modal::ConfirmDelete(id) => self.delete_object(id),
                Modal::OfferSession { path, journal } => self.resume_now(path, journal),
                Modal::OfferDownload(size) => {
                    self.note(LogLevel::Info, format!("downloading the official {size} checkpoint into weights/ …"));
                    vec![Effect::Download(size)]
                }
                other => {
                    self.modal = other;
                    vec![]
                }
            },
            Action::Click { column, row, positive } => self.click(column, row, positive),
            Action::Resize { width, height } => {
                self.size = (width, height);
                self.scene_version += 1;
                vec![]
            }
            Action::Tick => vec![],
            Action::Engine(ev) => self.engine_event(ev),
            Action::MediaOpened { width, height, frames, fps } => {
                self.set_media(MediaInfo { width, height, frames, fps });
                vec![]
            }
            Action::PreviewReady(img) => {
                self.preview = Some(img);
                vec![]
            }
            Action::Saved(r) => match r {
                Ok(p) => {
                    self.dirty = false;
                    self.note(LogLevel::Info, format!("saved session to {}", p.display()));
                    if self.quit_after_save {
                        self.should_quit = true;
                        return vec![Effect::Quit];
                    }
                    vec![]
                }
                Err(e) => {
                    self.quit_after_save = false;
                    self.note(LogLevel::Error, format!("save failed: {e}"));
                    vec![]
                }
            },
            Action::Exported(r) => {
                match r {
                    Ok(p) => self.note(LogLevel::Info, format!("exported to {}", p.display())),
                    Err(e) => self.note(LogLevel::Error, format!("export failed: {e}")),
                }
                vec![]
            }
            Action::Note { error, message } => {
                self.note(if error { LogLevel::Error } else { LogLevel::Info }, message);
                vec![]
            }
        }
    }

    fn set_media(&mut self, m: MediaInfo) {
        let first = self.media.is_none();
        self.media = Some(m);
        if first {
            self.cursor = ((m.width / 2) as f32, (m.height / 2) as f32);
        }
        self.frame = self.frame.min(m.frames.saturating_sub(1));
        self.scene_version += 1;
    }

    fn command(&mut self, c: Command, count: Option<usize>) -> Vec<Effect> {
        let n = count.unwrap_or(1).max(1);
        match c {
            Command::CursorLeft => self.move_cursor(-(n as f32), 0.0),
            Command::CursorRight => self.move_cursor(n as f32, 0.0),
            Command::CursorUp => self.move_cursor(0.0, -(n as f32)),
            Command::CursorDown => self.move_cursor(0.0, n as f32),
            Command::CursorLeftFast => self.move_cursor(-10.0 * n as f32, 0.0),
            Command::CursorRightFast => self.move_cursor(10.0 * n as f32, 0.0),
            Command::CursorUpFast => self.move_cursor(0.0, -10.0 * n as f32),
            Command::CursorDownFast => self.move_cursor(0.0, 10.0 * n as f32),
            Command::PointPositive => return self.add_point(true),
            Command::PointNegative => return self.add_point(false),
            Command::BoxToggle => return self.toggle_box(),
            Command::Undo => return self.undo(),
            Command::Redo => return self.redo(),
            Command::NextObject => {
                self.selected = (self.selected + 1) % self.objects.len();
                self.box_anchor = None;
                self.scene_version += 1;
            }
            Command::NewObject => {
                let id = self.next_object;
                self.next_object += 1;
                self.objects.push(id);
                self.selected = self.objects.len() - 1;
                self.box_anchor = None;
                self.note(LogLevel::Info, format!("object {id} created"));
                self.scene_version += 1;
            }
            Command::DeleteObject => return self.ask_to_delete(),
            Command::PrevFrame => return self.go_to_frame(self.frame.saturating_sub(n)),
            Command::NextFrame => return self.go_to_frame(self.frame.saturating_add(n)),
            Command::FirstFrame => return self.go_to_frame(0),
            Command::LastFrame => return self.go_to_frame(self.frames() - 1),
            Command::JumpToFrame => match count {
                Some(f) if f < self.frames() => return self.go_to_frame(f),
                Some(f) => self.note(LogLevel::Warn, format!("no frame {f} (the video has {})", self.frames())),
                None => self.note(LogLevel::Info, "type a frame number first, then f (e.g. 120f)".into()),
            },
            Command::PropagateForward | Command::PropagateBackward => {
                if self.prompts.values().all(|p| p.is_empty()) {
                    self.note(LogLevel::Warn, "nothing to propagate: add a point or a box first".into());
                    return vec![];
                }
                let reverse = c == Command::PropagateBackward;
                self.follow = true;
                self.propagating_reverse = reverse;
                return self.send_op(Op::Propagate { start: Some(self.frame), reverse, max_frames: None });
            }
            Command::Cancel => {
                if self.box_anchor.take().is_some() {
                    self.scene_version += 1;
                } else if self.is_propagating() && self.cancelling.is_none() && self.replay_left > 0 {
                    self.skip_replay = true;
                    self.cancelling = Some(self.clock);
                    self.note(
                        LogLevel::Info,
                        format!("skipping the replay of {} saved propagation(s)", self.replay_left),
                    );
                    return vec![Effect::Engine(EngineCommand::Cancel)];
                } else if self.is_propagating() && self.cancelling.is_none() {
                    self.note(LogLevel::Info, "cancelling propagation: the frame in progress is finished first".into());
                    self.cancelling = Some(self.clock);
                    return vec![Effect::Engine(EngineCommand::Cancel)];
                }
            }
            Command::CycleModel => {
                // From the size last asked for, not the one still loaded: after a refused
                // switch, `m` moves on instead of asking for the same size again.
                let next = self.engine.requested_model.next();
                self.engine.requested_model = next;
                let what = format!("switching to the {next} model");
                self.note(LogLevel::Info, self.restart_notice(&what));
                return vec![Effect::Engine(EngineCommand::SwitchModel(next))];
            }
            Command::CyclePrecision => {
                let next = self.engine.precision_choice.next();
                self.engine.precision_choice = next;
                self.note(LogLevel::Info, self.restart_notice(&format!("switching to {next} precision")));
                return vec![Effect::Engine(EngineCommand::SwitchPrecision(next))];
            }
            Command::Drain => self.note(
                LogLevel::Info,
                "drain is a key of `sam2-tui serve --console`: this console serves no one".into(),
            ),
            Command::FallBackToCpu => {
                self.note(LogLevel::Info, self.restart_notice("switching to the CPU"));
                return vec![Effect::Engine(EngineCommand::SwitchDevice(DeviceChoice::Cpu))];
            }
            Command::AutoDevice => {
                self.note(LogLevel::Info, self.restart_notice("returning to the auto device"));
                return vec![Effect::Engine(EngineCommand::SwitchDevice(DeviceChoice::Auto))];
            }
            Command::SetWatermark if self.engine.device.is_some_and(|d| d != DeviceChoice::Mps) => {
                let on = self.engine.device.map(|d| d.to_string()).unwrap_or_default();
                self.note(LogLevel::Info, format!("the watermark ratio is an MPS allocator setting; this worker runs on {on}, so there is nothing to set"));
            }
            Command::SetWatermark => {
                let current = self.engine.watermark.map(|r| format!("{r}")).unwrap_or_default();
                self.modal = Modal::Watermark(current);
            }
            Command::Export => return vec![Effect::Export],
            Command::Save => return vec![Effect::Save(self.session_path.clone())],
            Command::Quit => {
                if self.dirty {
                    self.modal = Modal::ConfirmQuit;
                } else {
                    self.should_quit = true;
                    return vec![Effect::Quit];
                }
            }
            Command::LogOlder => self.log_back = (self.log_back + 5 * n).min(self.log.len().saturating_sub(1)),
            Command::LogNewer => self.log_back = self.log_back.saturating_sub(5 * n),
            Command::Help => {
                self.help_scroll = 0;
                self.modal = if self.modal == Modal::Help { Modal::None } else { Modal::Help };
            }
        }
        vec![]
    }

    /// What an engine restart will do, said before it happens.
    fn restart_notice(&self, what: &str) -> String {
        match self.journal.ops.len() {
            0 => format!("{what}: a new worker loads the model (the current one stops once the switch is checked)"),
            n => format!("{what}: a new worker loads the model and replays the {n} journal ops (masks are recomputed)"),
        }
    }

    fn step(&self) -> f32 {
        if self.cursor_step > 0 {
            return self.cursor_step as f32;
        }
        self.media.map(|m| (m.width as f32 / 64.0).round().max(1.0)).unwrap_or(1.0)
    }

    fn move_cursor(&mut self, dx: f32, dy: f32) {
        let step = self.step();
        let (w, h) = self.media.map(|m| (m.width as f32, m.height as f32)).unwrap_or((1.0, 1.0));
        self.cursor.0 = (self.cursor.0 + dx * step).clamp(0.0, (w - 1.0).max(0.0));
        self.cursor.1 = (self.cursor.1 + dy * step).clamp(0.0, (h - 1.0).max(0.0));
        self.scene_version += 1;
    }

    fn current_set(&self) -> PromptSet {
        self.prompts.get(&(self.frame, self.selected_object())).cloned().unwrap_or_default()
    }

    /// Replaces the prompt set of (frame, object) and tells the engine, as an undoable edit.
    fn edit(&mut self, after: PromptSet) -> Vec<Effect> {
        let (frame, object) = (self.frame, self.selected_object());
        let before = self.current_set();
        self.undo.push(Edit { frame, object, before, after: after.clone() });
        self.redo.clear();
        self.apply(frame, object, after)
    }

    /// Sets a prompt set and sends it with clear-old-points semantics: every point of the
    /// object on the frame travels in each op; an empty set clears the frame for the object.
    fn apply(&mut self, frame: usize, object: ObjectId, set: PromptSet) -> Vec<Effect> {
        let op = if set.is_empty() {
            self.prompts.remove(&(frame, object));
            self.masks.entry(frame).or_default().retain(|m| m.object != object);
            Op::ClearFrame { frame, object }
        } else {
            let op = Op::AddPrompt { frame, object, points: set.points.clone(), bbox: set.bbox };
            self.prompts.insert((frame, object), set);
            op
        };
        self.scene_version += 1;
        self.send_op(op)
    }

    fn send_op(&mut self, op: Op) -> Vec<Effect> {
        let what = match &op {
            Op::AddPrompt { frame, .. } | Op::ClearFrame { frame, .. } => {
                Some((Some(*frame), format!("click on frame {frame}")))
            }
            Op::RemoveObject { object } => Some((None, format!("removing object {object}"))),
            Op::Reset => Some((None, "resetting".to_string())),
            // A propagation shows its own progress.
            Op::Propagate { .. } => None,
        };
        if let Some((frame, what)) = what {
            self.pending.push_back(Pending { index: self.journal.ops.len(), frame, what, since: self.clock });
        }
        self.journal.ops.push(op.clone());
        self.dirty = true;
        vec![Effect::Engine(EngineCommand::Op(op))]
    }

    fn add_point(&mut self, positive: bool) -> Vec<Effect> {
        if self.media.is_none() {
            self.note(LogLevel::Warn, "no video open: nothing to point at".into());
            return vec![];
        }
        let mut set = self.current_set();
        set.points.push(Point::new(self.cursor.0, self.cursor.1, positive));
        self.edit(set)
    }

    fn toggle_box(&mut self) -> Vec<Effect> {
        if self.media.is_none() {
            self.note(LogLevel::Warn, "no video open: nothing to draw a box on".into());
            return vec![];
        }
        match self.box_anchor.take() {
            None => {
                self.box_anchor = Some(self.cursor);
                self.scene_version += 1;
                vec![]
            }
            Some((ax, ay)) => {
                let (cx, cy) = self.cursor;
                let b = [ax.min(cx), ay.min(cy), ax.max(cx), ay.max(cy)];
                if b[0] == b[2] || b[1] == b[3] {
                    self.note(LogLevel::Warn, "a box needs width and height: move the cursor, then b".into());
                    self.box_anchor = Some((ax, ay));
                    return vec![];
                }
                let mut set = self.current_set();
                set.bbox = Some(b);
                self.edit(set)
            }
        }
    }

    fn undo(&mut self) -> Vec<Effect> {
        let Some(e) = self.undo.pop() else {
            self.note(LogLevel::Info, "nothing to undo".into());
            return vec![];
        };
        self.frame = e.frame;
        self.select(e.object);
        self.redo.push(e.clone());
        self.apply(e.frame, e.object, e.before)
    }

    fn redo(&mut self) -> Vec<Effect> {
        let Some(e) = self.redo.pop() else {
            self.note(LogLevel::Info, "nothing to redo".into());
            return vec![];
        };
        self.frame = e.frame;
        self.select(e.object);
        self.undo.push(e.clone());
        self.apply(e.frame, e.object, e.after)
    }

    fn select(&mut self, object: ObjectId) {
        if let Some(i) = self.objects.iter().position(|&o| o == object) {
            self.selected = i;
        }
    }

    fn ensure_object(&mut self, id: ObjectId) {
        if !self.objects.contains(&id) {
            self.objects.push(id);
            self.objects.sort();
        }
        self.next_object = self.next_object.max(id + 1);
    }

    fn forget_object(&mut self, id: ObjectId) {
        self.objects.retain(|&o| o != id);
        self.prompts.retain(|(_, o), _| *o != id);
        for m in self.masks.values_mut() {
            m.retain(|m| m.object != id);
        }
        self.undo.retain(|e| e.object != id);
        self.redo.retain(|e| e.object != id);
        self.selected = self.selected.min(self.objects.len().saturating_sub(1));
    }

    /// What deleting `id` would lose: (prompt sets, frames with its masks).
    pub fn object_work(&self, id: ObjectId) -> (usize, usize) {
        let prompts = self.prompts.iter().filter(|((_, o), p)| *o == id && !p.is_empty()).count();
        let masked = self.masks.values().filter(|m| m.iter().any(|m| m.object == id)).count();
        (prompts, masked)
    }

    /// `d`: an object with work asks first (deleting cannot be undone); an empty one goes.
    fn ask_to_delete(&mut self) -> Vec<Effect> {
        let id = self.selected_object();
        if self.object_work(id) == (0, 0) {
            return self.delete_object(id);
        }
        self.modal = Modal::ConfirmDelete(id);
        vec![]
    }

    fn delete_object(&mut self, id: ObjectId) -> Vec<Effect> {
        let known_to_engine = self.journal.ops.iter().any(|op| match op {
            Op::AddPrompt { object, .. } => *object == id,
            _ => false,
        });
        self.forget_object(id);
        if self.objects.is_empty() {
            self.objects.push(self.next_object);
            self.next_object += 1;
        }
        self.box_anchor = None;
        self.scene_version += 1;
        self.note(LogLevel::Info, format!("object {id} deleted"));
        if known_to_engine {
            self.send_op(Op::RemoveObject { object: id })
        } else {
            vec![]
        }
    }

    fn go_to_frame(&mut self, f: usize) -> Vec<Effect> {
        let f = f.min(self.frames() - 1);
        self.follow = false;
        if f == self.frame {
            return vec![];
        }
        self.frame = f;
        self.box_anchor = None;
        self.scene_version += 1;
        vec![Effect::Engine(EngineCommand::Prefetch(f))]
    }

    fn input_key(&mut self, k: InputKey) -> Vec<Effect> {
        let Modal::Watermark(buf) = &mut self.modal else { return vec![] };
        match k {
            InputKey::Char(c) if c.is_ascii_digit() || c == '.' => {
                if buf.len() < 8 {
                    buf.push(c)
                }
            }
            InputKey::Char(_) => {}
            InputKey::Backspace => {
                buf.pop();
            }
            InputKey::Abort => self.modal = Modal::None,
            InputKey::Submit => {
                let text = buf.clone();
                self.modal = Modal::None;
                match text.parse::<f32>() {
                    Ok(r) if (0.0..=2.0).contains(&r) => {
                        self.engine.watermark = Some(r);
                        self.note(LogLevel::Info, format!("MPS high watermark ratio {r}: restarting the worker"));
                        return vec![Effect::Engine(EngineCommand::SetWatermark(r))];
                    }
                    _ => self.note(
                        LogLevel::Error,
                        format!("watermark ratio must be a number from 0 to 2 (0 = unlimited), got '{text}'"),
                    ),
                }
            }
        }
        vec![]
    }

    /// Where each panel goes on a screen of `area` (the view draws into these, clicks
    /// are mapped back through them).
    pub fn screen_areas(&self, area: ratatui::layout::Rect) -> super::layout::Areas {
        super::layout::areas(area, self.engine.model.as_ref().is_some_and(|m| m.random_init))
    }

    /// A click inside the preview image places a point there.
    fn click(&mut self, column: u16, row: u16, positive: bool) -> Vec<Effect> {
        let Some(m) = self.media else { return vec![] };
        let areas = self.screen_areas(ratatui::layout::Rect::new(0, 0, self.size.0, self.size.1));
        let image = super::layout::fit_cells(areas.preview_inner, m.width, m.height, self.font);
        if !(column >= image.x && column < image.right() && row >= image.y && row < image.bottom()) {
            return vec![];
        }
        let x = ((column - image.x) as f32 + 0.5) / image.width as f32 * m.width as f32;
        let y = ((row - image.y) as f32 + 0.5) / image.height as f32 * m.height as f32;
        self.cursor = (x.floor().min(m.width as f32 - 1.0), y.floor().min(m.height as f32 - 1.0));
        self.add_point(positive)
    }

    fn engine_event(&mut self, ev: EngineEvent) -> Vec<Effect> {
        match ev {
            EngineEvent::State(s) => {
                let pass_starts = matches!(s, EngineState::Propagating { .. }) && !self.is_propagating();
                if pass_starts && self.skip_replay && self.replay_left > 0 {
                    // A replayed pass the user chose to skip: stop it as it starts.
                    self.engine.state = s;
                    self.cancelling = Some(self.clock);
                    return vec![Effect::Engine(EngineCommand::Cancel)];
                }
                if let EngineState::Propagating { done, total } = s {
                    self.perf.done = done;
                    self.perf.total = total;
                    self.perf.running = true;
                }
                if matches!(s, EngineState::Starting) {
                    // The old worker is gone or going: its pid means nothing now.
                    self.engine.pid = None;
                }
                if std::mem::discriminant(&s) != std::mem::discriminant(&self.engine.state) {
                    self.state_since = self.clock;
                }
                if let EngineState::Crashed { reason } = &s {
                    self.engine.last_death = Some(reason.clone());
                }
                self.engine.state = s;
            }
            EngineEvent::WorkerStarted { pid, device, precision, model, restarts } => {
                self.note(
                    LogLevel::Info,
                    format!("worker {pid} started: SAM {} {} on {device} ({precision})", model.version, model.size),
                );
                self.engine.pid = Some(pid);
                self.engine.device = Some(device);
                self.engine.precision = Some(precision);
                self.engine.requested_model = model.size;
                self.engine.model = Some(model);
                self.engine.restarts = restarts;
            }
            EngineEvent::MediaInfo { width, height, frames, fps } => {
                if self.media.is_none() {
                    self.set_media(MediaInfo { width, height, frames, fps });
                }
            }
            EngineEvent::Stats(s) => {
                if let Some(r) = s.mps.as_ref().and_then(|m| m.high_watermark_ratio) {
                    self.engine.watermark = Some(r);
                }
                self.engine.stats = Some(s);
            }
            EngineEvent::Masks(fm) => {
                if fm.frame == self.frame {
                    self.scene_version += 1;
                }
                if !self.is_propagating() {
                    self.answered(|p| p.frame == Some(fm.frame));
                }
                self.masks.insert(fm.frame, fm.objects);
            }
            EngineEvent::Progress { frame, done, total, fps, timings } => {
                self.perf.running = true;
                self.pass_first.get_or_insert(frame);
                self.perf.last_frame = Some(frame);
                self.perf.fps = fps;
                self.perf.done = done;
                self.perf.total = total;
                self.perf.timings = timings;
                self.perf.fps_history.push_back(fps);
                while self.perf.fps_history.len() > Perf::HISTORY {
                    self.perf.fps_history.pop_front();
                }
                if self.follow && frame != self.frame {
                    self.frame = frame.min(self.frames() - 1);
                    self.scene_version += 1;
                }
            }
            EngineEvent::PropagationFinished { cancelled } => {
                self.follow = false;
                self.cancelling = None;
                self.perf.running = false;
                if self.replay_left > 0 {
                    self.replay_left -= 1;
                    if self.replay_left == 0 {
                        self.skip_replay = false;
                    }
                }
                let what = if cancelled { "propagation cancelled" } else { "propagation finished" };
                self.note(LogLevel::Info, format!("{what} ({} frames)", self.perf.done));
            }
            EngineEvent::OpFinished { index, cancelled } => {
                self.answered(|p| p.index <= index);
                if cancelled {
                    self.record_as_ran(index);
                }
                self.pass_first = None;
                self.perf.last_frame = None;
            }
            EngineEvent::OpFailed { index, message } => {
                // A failed propagation will send no more progress to follow.
                self.follow = false;
                self.cancelling = None;
                self.perf.running = false;
                self.answered(|p| p.index <= index);
                self.note(LogLevel::Error, format!("journal op {index} failed: {message}"));
            }
            EngineEvent::WorkerDied { reason, stderr_tail } => {
                self.note(LogLevel::Error, format!("worker died: {reason}"));
                for line in stderr_tail {
                    self.note(LogLevel::Warn, format!("  {line}"));
                }
                self.engine.last_death = Some(reason);
                self.engine.pid = None;
            }
            EngineEvent::FellBack { from, to, reason } => {
                self.note(LogLevel::Warn, format!("fell back from {from} to {to}: {reason}"));
                self.engine.fell_back = Some((from, to, reason));
            }
            EngineEvent::Log { level, message } => self.note(level, message),
        }
        vec![]
    }

    /// A cancelled pass is kept in the journal as far as it ran (what the supervisor's
    /// journal holds too), so a saved session replays that much and not the whole video.
    fn record_as_ran(&mut self, index: usize) {
        let Some(Op::Propagate { reverse, .. }) = self.journal.ops.get(index).cloned() else { return };
        match (self.pass_first, self.perf.last_frame) {
            (Some(first), Some(last)) => {
                self.journal.ops[index] =
                    Op::Propagate { start: Some(first), reverse, max_frames: Some(first.abs_diff(last)) };
            }
            _ => {
                // Nothing ran: gone from the journal, as from the supervisor's; later
                // unanswered ops move up one.
                self.journal.ops.remove(index);
                for p in self.pending.iter_mut().filter(|p| p.index > index) {
                    p.index -= 1;
                }
            }
        }
        self.dirty = true;
    }

    /// Ops the engine has answered leave the busy list; a click's latency is recorded.
    fn answered(&mut self, done: impl Fn(&Pending) -> bool) {
        let now = self.clock;
        let mut latency: Option<Duration> = None;
        self.pending.retain(|p| {
            if done(p) {
                if p.frame.is_some() {
                    latency = Some(now.saturating_duration_since(p.since));
                }
                false
            } else {
                true
            }
        });
        if let Some(l) = latency {
            self.perf.click_ms = Some(l.as_secs_f32() * 1000.0);
        }
    }

    pub fn note(&mut self, level: LogLevel, message: String) {
        match level {
            LogLevel::Info => tracing::info!(target: "console", "{message}"),
            LogLevel::Warn => tracing::warn!(target: "console", "{message}"),
            LogLevel::Error => tracing::error!(target: "console", "{message}"),
        }
        self.log.push_back(LogLine { level, message });
        while self.log.len() > Self::LOG_LINES {
            self.log.pop_front();
        }
    }
}

/// `clip.session.json` → the first of `clip.session-2.json`, `-3`, … that does not exist.
fn fresh_session_path(saved: &std::path::Path) -> PathBuf {
    let name = saved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".json").unwrap_or(&name).to_string();
    (2..).map(|i| saved.with_file_name(format!("{stem}-{i}.json"))).find(|p| !p.exists()).expect("some name is free")
}
