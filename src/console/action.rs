//! Everything that can change the console's state. Terminal events (through the keymap),
//! engine events and timers all become an `Action`; `App::update` is the only place state
//! changes.
use crate::supervisor::events::EngineEvent;
use std::path::PathBuf;
use std::sync::Arc;

/// What a key can be bound to. The names (snake_case) are the keys of the config's `[keys]`
/// table, and the help overlay lists them with `describe()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    CursorLeft,
    CursorRight,
    CursorUp,
    CursorDown,
    CursorLeftFast,
    CursorRightFast,
    CursorUpFast,
    CursorDownFast,
    PointPositive,
    PointNegative,
    BoxToggle,
    Undo,
    Redo,
    NextObject,
    NewObject,
    DeleteObject,
    PrevFrame,
    NextFrame,
    FirstFrame,
    LastFrame,
    JumpToFrame,
    PropagateForward,
    PropagateBackward,
    Cancel,
    CycleModel,
    CyclePrecision,
    FallBackToCpu,
    AutoDevice,
    SetWatermark,
    Drain,
    Export,
    Save,
    Quit,
    Help,
    LogOlder,
    LogNewer,
}

impl Command {
    pub const ALL: [Command; 36] = [
        Command::CursorLeft,
        Command::CursorRight,
        Command::CursorUp,
        Command::CursorDown,
        Command::CursorLeftFast,
        Command::CursorRightFast,
        Command::CursorUpFast,
        Command::CursorDownFast,
        Command::PointPositive,
        Command::PointNegative,
        Command::BoxToggle,
        Command::Undo,
        Command::Redo,
        Command::NextObject,
        Command::NewObject,
        Command::DeleteObject,
        Command::PrevFrame,
        Command::NextFrame,
        Command::FirstFrame,
        Command::LastFrame,
        Command::JumpToFrame,
        Command::PropagateForward,
        Command::PropagateBackward,
        Command::Cancel,
        Command::CycleModel,
        Command::CyclePrecision,
        Command::FallBackToCpu,
        Command::AutoDevice,
        Command::SetWatermark,
        Command::Drain,
        Command::Export,
        Command::Save,
        Command::Quit,
        Command::Help,
        Command::LogOlder,
        Command::LogNewer,
    ];

    /// The config name (`[keys] point_positive = ["enter", "space"]`).
    pub fn name(self) -> &'static str {
        match self {
            Command::CursorLeft => "cursor_left",
            Command::CursorRight => "cursor_right",
            Command::CursorUp => "cursor_up",
            Command::CursorDown => "cursor_down",
            Command::CursorLeftFast => "cursor_left_fast",
            Command::CursorRightFast => "cursor_right_fast",
            Command::CursorUpFast => "cursor_up_fast",
            Command::CursorDownFast => "cursor_down_fast",
            Command::PointPositive => "point_positive",
            Command::PointNegative => "point_negative",
            Command::BoxToggle => "box",
            Command::Undo => "undo",
            Command::Redo => "redo",
            Command::NextObject => "next_object",
            Command::NewObject => "new_object",
            Command::DeleteObject => "delete_object",
            Command::PrevFrame => "prev_frame",
            Command::NextFrame => "next_frame",
            Command::FirstFrame => "first_frame",
            Command::LastFrame => "last_frame",
            Command::JumpToFrame => "jump_to_frame",
            Command::PropagateForward => "propagate_forward",
            Command::PropagateBackward => "propagate_backward",
            Command::Cancel => "cancel",
            Command::CycleModel => "cycle_model",
            Command::CyclePrecision => "cycle_precision",
            Command::FallBackToCpu => "fall_back_to_cpu",
            Command::AutoDevice => "auto_device",
            Command::SetWatermark => "set_watermark",
            Command::Drain => "drain",
            Command::Export => "export",
            Command::Save => "save",
            Command::Quit => "quit",
            Command::Help => "help",
            Command::LogOlder => "log_older",
            Command::LogNewer => "log_newer",
        }
    }

    pub fn from_name(name: &str) -> Option<Command> {
        Command::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// One line for the help overlay.
    pub fn describe(self) -> &'static str {
        match self {
            Command::CursorLeft => "cursor left",
            Command::CursorRight => "cursor right",
            Command::CursorUp => "cursor up",
            Command::CursorDown => "cursor down",
            Command::CursorLeftFast => "cursor left ×10",
            Command::CursorRightFast => "cursor right ×10",
            Command::CursorUpFast => "cursor up ×10",
            Command::CursorDownFast => "cursor down ×10",
            Command::PointPositive => "add a positive point",
            Command::PointNegative => "add a negative point",
            Command::BoxToggle => "start / finish a box",
            Command::Undo => "undo the last prompt edit",
            Command::Redo => "redo",
            Command::NextObject => "select the next object",
            Command::NewObject => "new object",
            Command::DeleteObject => "delete the selected object",
            Command::PrevFrame => "previous frame",
            Command::NextFrame => "next frame",
            Command::FirstFrame => "first frame",
            Command::LastFrame => "last frame",
            Command::JumpToFrame => "jump to frame N (type N first)",
            Command::PropagateForward => "propagate forward",
            Command::PropagateBackward => "propagate backward",
            Command::Cancel => "cancel box / propagation",
            Command::CycleModel => "next model size",
            Command::CyclePrecision => "next precision (auto/fp32/bf16/fp16)",
            Command::FallBackToCpu => "fall back to CPU now",
            Command::AutoDevice => "return to the auto device",
            Command::SetWatermark => "set the MPS watermark ratio",
            Command::Drain => "drain the server (serve --console)",
            Command::Export => "export masks (like `segment`)",
            Command::Save => "save the session journal",
            Command::Quit => "quit",
            Command::Help => "this help",
            Command::LogOlder => "scroll the log back",
            Command::LogNewer => "scroll the log forward",
        }
    }

    /// Section in the help overlay.
    pub fn group(self) -> &'static str {
        use Command::*;
        match self {
            CursorLeft | CursorRight | CursorUp | CursorDown | CursorLeftFast | CursorRightFast | CursorUpFast
            | CursorDownFast => "cursor",
            PointPositive | PointNegative | BoxToggle | Undo | Redo => "prompts",
            NextObject | NewObject | DeleteObject => "objects",
            PrevFrame | NextFrame | FirstFrame | LastFrame | JumpToFrame => "frames",
            PropagateForward | PropagateBackward | Cancel => "tracking",
            CycleModel | CyclePrecision | FallBackToCpu | AutoDevice | SetWatermark => "engine",
            Drain => "server",
            Export | Save | Quit | Help => "session",
            LogOlder | LogNewer => "log",
        }
    }
}

/// A key typed while a text prompt is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKey {
    Char(char),
    Backspace,
    Submit,
    Abort,
}

/// A decoded, composited, encoded preview image ready to draw (built off the UI thread).
#[derive(Clone)]
pub struct PreviewImage {
    pub frame: usize,
    /// Which request it answers (stale answers are ignored).
    pub generation: u64,
    pub protocol: Arc<ratatui_image::protocol::Protocol>,
}

impl std::fmt::Debug for PreviewImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreviewImage(frame {}, generation {})", self.frame, self.generation)
    }
}

#[derive(Clone, Debug)]
pub enum Action {
    /// A bound key.
    Command(Command),
    /// A digit typed as a count prefix (`12f` jumps to frame 12).
    Digit(u8),
    /// A key typed into the open prompt (watermark ratio).
    Input(InputKey),
    /// Answers to the quit question.
    QuitAnyway,
    SaveAndQuit,
    /// The answer yes to a question (delete object N? resume the saved session?).
    Yes,
    /// Closes the help overlay or the quit question.
    Dismiss,
    /// Scrolls the help overlay by this many rows (when it does not fit the screen).
    HelpScroll(i32),
    /// A mouse click on the terminal cell (column, row).
    Click {
        column: u16,
        row: u16,
        positive: bool,
    },
    Resize {
        width: u16,
        height: u16,
    },
    Tick,
    Engine(EngineEvent),
    /// The local decoder opened the input.
    MediaOpened {
        width: u32,
        height: u32,
        frames: usize,
        fps: f32,
    },
    PreviewReady(PreviewImage),
    /// The outcome of an effect the runner carried out.
    Saved(Result<PathBuf, String>),
    Exported(Result<PathBuf, String>),
    /// A message for the log pane from the console itself.
    Note {
        error: bool,
        message: String,
    },
}
