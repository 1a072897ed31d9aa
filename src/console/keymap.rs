//! Keys → actions. Defaults below; the config's `[keys]` table replaces the keys of any
//! command by name. The help overlay and the hint bar are generated from this table, so
//! what is shown is what is bound.
use super::action::{Action, Command, InputKey};
use crate::config::Config;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use std::collections::BTreeMap;

/// A key with its modifiers, normalised so that `H` and `shift-h` are the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub code: KeyCodeOrd,
    pub ctrl: bool,
    pub alt: bool,
    /// Only for non-character keys (shift-left); characters carry their case instead.
    pub shift: bool,
}

/// `KeyCode` subset that is orderable (for a stable help listing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyCodeOrd {
    Char(char),
    Enter,
    Esc,
    Tab,
    BackTab,
    Backspace,
    Delete,
    Left,
    Right,
    Up,
    Down,
    Home,
    End,
    PageUp,
    PageDown,
    F(u8),
}

impl Key {
    pub fn from_event(ev: &KeyEvent) -> Option<Key> {
        let m = ev.modifiers;
        let code = match ev.code {
            KeyCode::Char(' ') => KeyCodeOrd::Char(' '),
            KeyCode::Char(c) => KeyCodeOrd::Char(c),
            KeyCode::Enter => KeyCodeOrd::Enter,
            KeyCode::Esc => KeyCodeOrd::Esc,
            KeyCode::Tab => KeyCodeOrd::Tab,
            KeyCode::BackTab => KeyCodeOrd::BackTab,
            KeyCode::Backspace => KeyCodeOrd::Backspace,
            KeyCode::Delete => KeyCodeOrd::Delete,
            KeyCode::Left => KeyCodeOrd::Left,
            KeyCode::Right => KeyCodeOrd::Right,
            KeyCode::Up => KeyCodeOrd::Up,
            KeyCode::Down => KeyCodeOrd::Down,
            KeyCode::Home => KeyCodeOrd::Home,
            KeyCode::End => KeyCodeOrd::End,
            KeyCode::PageUp => KeyCodeOrd::PageUp,
            KeyCode::PageDown => KeyCodeOrd::PageDown,
            KeyCode::F(n) => KeyCodeOrd::F(n),
            _ => return None,
        };
        let is_char = matches!(code, KeyCodeOrd::Char(_));
        // Some terminals report ctrl-r as 'R' with shift on; lower-case under ctrl.
        let code = match code {
            KeyCodeOrd::Char(c) if m.contains(KeyModifiers::CONTROL) => KeyCodeOrd::Char(c.to_ascii_lowercase()),
            other => other,
        };
        Some(Key {
            code,
            ctrl: m.contains(KeyModifiers::CONTROL),
            alt: m.contains(KeyModifiers::ALT),
            shift: !is_char && m.contains(KeyModifiers::SHIFT),
        })
    }

    /// Parses `h`, `H`, `shift-left`, `ctrl-r`, `enter`, `space`, `esc`, `tab`, `f1`, `,`, `?`.
    pub fn parse(s: &str) -> Result<Key, String> {
        let mut ctrl = false;
        let mut alt = false;
        let mut shift = false;
        let mut rest = s;
        loop {
            let lower = rest.to_ascii_lowercase();
            if rest.len() > 1 && (lower.starts_with("ctrl-") || lower.starts_with("ctrl+")) {
                ctrl = true;
                rest = &rest[5..];
            } else if rest.len() > 1 && (lower.starts_with("alt-") || lower.starts_with("alt+")) {
                alt = true;
                rest = &rest[4..];
            } else if rest.len() > 1 && (lower.starts_with("shift-") || lower.starts_with("shift+")) {
                shift = true;
                rest = &rest[6..];
            } else {
                break;
            }
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => {
                let c = if shift { c.to_ascii_uppercase() } else { c };
                let c = if ctrl { c.to_ascii_lowercase() } else { c };
                shift = false;
                KeyCodeOrd::Char(c)
            }
            _ => match rest.to_ascii_lowercase().as_str() {
                "space" => {
                    shift = false;
                    KeyCodeOrd::Char(' ')
                }
                "enter" | "return" => KeyCodeOrd::Enter,
                "esc" | "escape" => KeyCodeOrd::Esc,
                "tab" => KeyCodeOrd::Tab,
                "backtab" => KeyCodeOrd::BackTab,
                "backspace" => KeyCodeOrd::Backspace,
                "delete" | "del" => KeyCodeOrd::Delete,
                "left" => KeyCodeOrd::Left,
                "right" => KeyCodeOrd::Right,
                "up" => KeyCodeOrd::Up,
                "down" => KeyCodeOrd::Down,
                "home" => KeyCodeOrd::Home,
                "end" => KeyCodeOrd::End,
                "pageup" => KeyCodeOrd::PageUp,
                "pagedown" => KeyCodeOrd::PageDown,
                f if f.starts_with('f') && f[1..].parse::<u8>().is_ok_and(|n| (1..=24).contains(&n)) => {
                    KeyCodeOrd::F(f[1..].parse().unwrap())
                }
                _ => return Err(format!("unknown key '{s}'")),
            },
        };
        Ok(Key { code, ctrl, alt, shift })
    }

    /// The label shown in help and hints (`ctrl-r`, `⇧←`, `H`, `space`).
    pub fn label(&self) -> String {
        let mut s = String::new();
        if self.ctrl {
            s.push_str("ctrl-");
        }
        if self.alt {
            s.push_str("alt-");
        }
        if self.shift {
            s.push_str("shift-");
        }
        match self.code {
            KeyCodeOrd::Char(' ') => s.push_str("space"),
            KeyCodeOrd::Char(c) => s.push(c),
            KeyCodeOrd::Enter => s.push_str("enter"),
            KeyCodeOrd::Esc => s.push_str("esc"),
            KeyCodeOrd::Tab => s.push_str("tab"),
            KeyCodeOrd::BackTab => s.push_str("backtab"),
            KeyCodeOrd::Backspace => s.push_str("backspace"),
            KeyCodeOrd::Delete => s.push_str("delete"),
            KeyCodeOrd::Left => s.push('←'),
            KeyCodeOrd::Right => s.push('→'),
            KeyCodeOrd::Up => s.push('↑'),
            KeyCodeOrd::Down => s.push('↓'),
            KeyCodeOrd::Home => s.push_str("home"),
            KeyCodeOrd::End => s.push_str("end"),
            KeyCodeOrd::PageUp => s.push_str("pageup"),
            KeyCodeOrd::PageDown => s.push_str("pagedown"),
            KeyCodeOrd::F(n) => s.push_str(&format!("f{n}")),
        }
        s
    }
}

/// Which keys mean what depends on what is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    ConfirmQuit,
    Question,
    Input,
}

pub const DEFAULT_BINDINGS: &[(Command, &[&str])] = &[
    (Command::CursorLeft, &["h", "left"]),
    (Command::CursorRight, &["l", "right"]),
    (Command::CursorUp, &["k", "up"]),
    (Command::CursorDown, &["j", "down"]),
    (Command::CursorLeftFast, &["H", "shift-left"]),
    (Command::CursorRightFast, &["L", "shift-right"]),
    (Command::CursorUpFast, &["K", "shift-up"]),
    (Command::CursorDownFast, &["J", "shift-down"]),
    (Command::PointPositive, &["enter", "space"]),
    (Command::PointNegative, &["x"]),
    (Command::BoxToggle, &["b"]),
    (Command::Undo, &["u"]),
    (Command::Redo, &["ctrl-r"]),
    (Command::NextObject, &["tab"]),
    (Command::NewObject, &["n"]),
    (Command::DeleteObject, &["d"]),
    (Command::PrevFrame, &[","]),
    (Command::NextFrame, &["."]),
    (Command::FirstFrame, &["g"]),
    (Command::LastFrame, &["G"]),
    (Command::JumpToFrame, &["f"]),
    (Command::PropagateForward, &["p"]),
    (Command::PropagateBackward, &["P"]),
    (Command::Cancel, &["esc"]),
    (Command::CycleModel, &["m"]),
    (Command::CyclePrecision, &["r"]),
    (Command::FallBackToCpu, &["c"]),
    (Command::AutoDevice, &["D"]),
    (Command::SetWatermark, &["w"]),
    (Command::Drain, &["ctrl-d"]),
    (Command::Export, &["e"]),
    (Command::Save, &["s"]),
    (Command::Quit, &["q", "ctrl-c"]),
    (Command::Help, &["?"]),
    (Command::LogOlder, &["pageup"]),
    (Command::LogNewer, &["pagedown"]),
];

#[derive(Clone, Debug)]
pub struct Keymap {
    by_key: BTreeMap<Key, Command>,
    /// Command → its keys in the order given, for help and hints.
    by_command: BTreeMap<Command, Vec<Key>>,
}

impl Default for Keymap {
    fn default() -> Self {
        let mut k = Keymap { by_key: BTreeMap::new(), by_command: BTreeMap::new() };
        for (cmd, keys) in DEFAULT_BINDINGS {
            let keys = keys.iter().map(|s| Key::parse(s).expect("default keys parse")).collect();
            k.bind(*cmd, keys);
        }
        k
    }
}

impl Keymap {
    /// The overlay's lines: a heading per group, then `keys  description` per bound command.
    pub fn help_lines(&self) -> Vec<(Option<&'static str>, String, String)> {
        let mut out = vec![];
        let mut group = "";
        for (cmd, keys) in self.bindings() {
            if cmd.group() != group {
                group = cmd.group();
                out.push((Some(group), String::new(), String::new()));
            }
            out.push((None, keys, cmd.describe().to_string()));
        }
        out.push((Some("other"), String::new(), String::new()));
        out.push((None, "0-9".into(), "count prefix (12f, 5.)".into()));
        out.push((None, "mouse".into(), "left click +point · right click −point".into()));
        out
    }

    /// Defaults with the config's `[keys]` applied. An unknown command or key, or a key
    /// bound twice, is an error naming file:line:column.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Keymap> {
        let mut k = Keymap::default();
        for (name, keys) in &cfg.keys {
            let at = cfg.locate(keys.span().start);
            let cmd = Command::from_name(name).ok_or_else(|| {
                anyhow::anyhow!("{at}: [keys] has no command '{name}' (see config.example.toml for the names)")
            })?;
            let parsed: Vec<Key> = keys
                .get_ref()
                .iter()
                .map(|s| Key::parse(s).map_err(|e| anyhow::anyhow!("{at}: [keys] {name}: {e}")))
                .collect::<anyhow::Result<_>>()?;
            // Keys rebound here are taken from whatever had them by default.
            k.bind(cmd, parsed);
        }
        // Two configured commands on one key: the later would silently win; refuse instead.
        for (name, keys) in &cfg.keys {
            let cmd = Command::from_name(name).unwrap();
            for s in keys.get_ref() {
                let key = Key::parse(s).unwrap();
                if k.by_key.get(&key) != Some(&cmd) {
                    let other = k.by_key.get(&key).map(|c| c.name()).unwrap_or("?");
                    anyhow::bail!(
                        "{}: [keys] '{s}' is bound to both {name} and {other}",
                        cfg.locate(keys.span().start)
                    );
                }
            }
        }
        Ok(k)
    }

    fn bind(&mut self, cmd: Command, keys: Vec<Key>) {
        if let Some(old) = self.by_command.remove(&cmd) {
            for key in old {
                self.by_key.remove(&key);
            }
        }
        for key in &keys {
            if let Some(prev) = self.by_key.insert(*key, cmd) {
                if prev != cmd {
                    if let Some(v) = self.by_command.get_mut(&prev) {
                        v.retain(|k| k != key);
                    }
                }
            }
        }
        self.by_command.insert(cmd, keys);
    }

    pub fn command_for(&self, key: &Key) -> Option<Command> {
        self.by_key.get(key).copied()
    }

    pub fn keys_for(&self, cmd: Command) -> &[Key] {
        self.by_command.get(&cmd).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// "enter/space" — every key of a command, for help and hints.
    pub fn label(&self, cmd: Command) -> String {
        self.keys_for(cmd).iter().map(|k| k.label()).collect::<Vec<_>>().join("/")
    }

    /// Every bound command with its keys, in `Command` order.
    pub fn bindings(&self) -> Vec<(Command, String)> {
        Command::ALL.iter().filter(|c| !self.keys_for(**c).is_empty()).map(|c| (*c, self.label(*c))).collect()
    }

    /// Turns a terminal key into an action given what is open.
    pub fn translate(&self, mode: Mode, ev: &KeyEvent) -> Option<Action> {
        if ev.kind == KeyEventKind::Release {
            return None;
        }
        let key = Key::from_event(ev)?;
        let plain = !key.ctrl && !key.alt;
        match mode {
            Mode::Input => match ev.code {
                KeyCode::Enter => Some(Action::Input(InputKey::Submit)),
                KeyCode::Esc => Some(Action::Input(InputKey::Abort)),
                KeyCode::Backspace => Some(Action::Input(InputKey::Backspace)),
                KeyCode::Char('c') if key.ctrl => Some(Action::Input(InputKey::Abort)),
                KeyCode::Char(c) if plain => Some(Action::Input(InputKey::Char(c))),
                _ => None,
            },
            Mode::ConfirmQuit => match key.code {
                KeyCodeOrd::Char('y') | KeyCodeOrd::Char('Y') if plain => Some(Action::QuitAnyway),
                KeyCodeOrd::Char('s') | KeyCodeOrd::Char('S') if plain => Some(Action::SaveAndQuit),
                KeyCodeOrd::Char('c') if key.ctrl => Some(Action::QuitAnyway),
                _ => Some(Action::Dismiss),
            },
            Mode::Question => match key.code {
                KeyCodeOrd::Char('y') | KeyCodeOrd::Char('Y') if plain => Some(Action::Yes),
                _ => Some(Action::Dismiss),
            },
            Mode::Help => match self.command_for(&key) {
                Some(Command::Quit) if key.ctrl => Some(Action::Command(Command::Quit)),
                Some(Command::CursorDown) => Some(Action::HelpScroll(1)),
                Some(Command::CursorUp) => Some(Action::HelpScroll(-1)),
                Some(Command::CursorDownFast) => Some(Action::HelpScroll(10)),
                Some(Command::CursorUpFast) => Some(Action::HelpScroll(-10)),
                _ => Some(Action::Dismiss),
            },
            Mode::Normal => {
                if let (KeyCodeOrd::Char(c @ '0'..='9'), true) = (key.code, plain) {
                    if self.command_for(&key).is_none() {
                        return Some(Action::Digit(c as u8 - b'0'));
                    }
                }
                self.command_for(&key).map(Action::Command)
            }
        }
    }
}
