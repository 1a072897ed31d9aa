//! The operator view's state and the one function that changes it. The server's status
//! comes in whole (`Action::Status`); keys become `Control`s for the server, returned
//! for the runner to send: `update` does no I/O, so tests drive it with values.
use crate::config::Theme;
use crate::console::action::Command;
use crate::console::keymap::{Key, Keymap};
use crate::device::DeviceChoice;
use crate::model::config::ModelSize;
use crossterm::event::{KeyEvent, KeyEventKind};
use sam2_serve::operator::{Control, ServerStatus, Switch};

#[derive(Clone, Debug, PartialEq)]
pub enum Modal {
    None,
    Help,
    /// `q` with sessions open: stopping closes them.
    ConfirmStop,
}

#[derive(Clone, Debug)]
pub enum Action {
    Key(KeyEvent),
    /// The server's status changed.
    Status(Box<ServerStatus>),
    Resize {
        width: u16,
        height: u16,
    },
}

pub struct OperatorApp {
    pub theme: Theme,
    pub keymap: Keymap,
    pub status: ServerStatus,
    pub modal: Modal,
    /// Lines back from the newest the log shows (0: follow).
    pub log_back: usize,
    /// The operator asked the server to stop; the view stays until it has.
    pub stopping: bool,
    pub size: (u16, u16),
    /// The model a switch asked for last (the cycle goes on from it, also when the
    /// server refused it for want of a checkpoint).
    requested_model: Option<ModelSize>,
}

impl OperatorApp {
    pub fn new(theme: Theme, keymap: Keymap, status: ServerStatus) -> OperatorApp {
        OperatorApp {
            theme,
            keymap,
            status,
            modal: Modal::None,
            log_back: 0,
            stopping: false,
            size: (80, 24),
            requested_model: None,
        }
    }

    pub fn update(&mut self, action: Action) -> Vec<Control> {
        match action {
            Action::Status(s) => {
                self.status = *s;
                vec![]
            }
            Action::Resize { width, height } => {
                self.size = (width, height);
                vec![]
            }
            Action::Key(k) if k.kind == KeyEventKind::Release => vec![],
            Action::Key(k) => self.key(&k),
        }
    }

    fn key(&mut self, k: &KeyEvent) -> Vec<Control> {
        let Some(key) = Key::from_event(k) else { return vec![] };
        let command = self.keymap.command_for(&key);
        match self.modal {
            Modal::Help => {
                self.modal = Modal::None;
                return vec![];
            }
            Modal::ConfirmStop => {
                self.modal = Modal::None;
                let yes = matches!(key.code, crate::console::keymap::KeyCodeOrd::Char('y' | 'Y')) && !key.ctrl;
                // ctrl-c twice is the way out a terminal user expects.
                let again = command == Some(Command::Quit) && key.ctrl;
                return if yes || again { self.stop() } else { vec![] };
            }
            Modal::None => {}
        }
        let Some(c) = command else { return vec![] };
        match c {
            Command::CycleModel => {
                let from = self.requested_model.or(self.status.settings.model).unwrap_or(ModelSize::Tiny);
                let next = from.next();
                self.requested_model = Some(next);
                vec![Control::Switch(Switch::Model(next))]
            }
            Command::CyclePrecision => vec![Control::Switch(Switch::Precision(self.status.settings.precision.next()))],
            Command::FallBackToCpu => vec![Control::Switch(Switch::Device(DeviceChoice::Cpu))],
            Command::AutoDevice => vec![Control::Switch(Switch::Device(DeviceChoice::Auto))],
            Command::Drain if !self.status.draining => vec![Control::Drain],
            Command::Quit if self.status.sessions.is_empty() || self.stopping => self.stop(),
            Command::Quit => {
                self.modal = Modal::ConfirmStop;
                vec![]
            }
            Command::Help => {
                self.modal = Modal::Help;
                vec![]
            }
            Command::LogOlder => {
                self.log_back = (self.log_back + 5).min(self.status.log.len().saturating_sub(1));
                vec![]
            }
            Command::LogNewer => {
                self.log_back = self.log_back.saturating_sub(5);
                vec![]
            }
            _ => vec![],
        }
    }

    fn stop(&mut self) -> Vec<Control> {
        if self.stopping {
            return vec![];
        }
        self.stopping = true;
        vec![Control::Stop]
    }

    /// The commands this view answers to, in the order the help line shows them.
    pub const COMMANDS: [(Command, &'static str); 8] = [
        (Command::CycleModel, "model"),
        (Command::CyclePrecision, "precision"),
        (Command::FallBackToCpu, "cpu"),
        (Command::AutoDevice, "auto device"),
        (Command::Drain, "drain"),
        (Command::Quit, "stop"),
        (Command::Help, "help"),
        (Command::LogOlder, "log back"),
    ];
}
