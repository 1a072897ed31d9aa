//! Keys and configuration: remapping, errors that point into the file, and a help overlay
//! that lists every bound command.
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use sam2_tui::config::Config;
use sam2_tui::console::action::{Action, Command};
use sam2_tui::console::keymap::{Keymap, Mode};
use sam2_tui::console::testing::app_with_video;
use std::path::Path;

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

#[test]
fn default_keys_follow_the_brief() {
    let k = Keymap::default();
    let t = |ev: KeyEvent| k.translate(Mode::Normal, &ev);
    assert!(matches!(t(key('h')), Some(Action::Command(Command::CursorLeft))));
    assert!(matches!(
        t(KeyEvent::new(KeyCode::Char('H'), KeyModifiers::SHIFT)),
        Some(Action::Command(Command::CursorLeftFast))
    ));
    assert!(matches!(
        t(KeyEvent::new(KeyCode::Left, KeyModifiers::SHIFT)),
        Some(Action::Command(Command::CursorLeftFast))
    ));
    assert!(matches!(
        t(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
        Some(Action::Command(Command::PointPositive))
    ));
    assert!(matches!(t(key(' ')), Some(Action::Command(Command::PointPositive))));
    assert!(matches!(
        t(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL)),
        Some(Action::Command(Command::Redo))
    ));
    assert!(matches!(
        t(KeyEvent::new(KeyCode::Char('P'), KeyModifiers::SHIFT)),
        Some(Action::Command(Command::PropagateBackward))
    ));
    assert!(matches!(t(key('7')), Some(Action::Digit(7))));
}

#[test]
fn a_config_remaps_a_command_and_frees_its_old_keys() {
    let cfg =
        Config::parse("[keys]\npoint_negative = [\"z\", \"ctrl-x\"]\nundo = [\"x\"]\n", Path::new("c.toml")).unwrap();
    let k = Keymap::from_config(&cfg).unwrap();
    assert!(matches!(k.translate(Mode::Normal, &key('z')), Some(Action::Command(Command::PointNegative))));
    assert!(matches!(
        k.translate(Mode::Normal, &KeyEvent::new(KeyCode::Char('x'), KeyModifiers::CONTROL)),
        Some(Action::Command(Command::PointNegative))
    ));
    assert!(matches!(k.translate(Mode::Normal, &key('x')), Some(Action::Command(Command::Undo))));
    assert!(k.translate(Mode::Normal, &key('u')).is_none(), "undo's old key is free");
    assert_eq!(k.label(Command::PointNegative), "z/ctrl-x");
}

#[test]
fn taking_a_default_key_moves_it() {
    let cfg = Config::parse("[keys]\nsave = [\"q\"]\n", Path::new("c.toml")).unwrap();
    let k = Keymap::from_config(&cfg).unwrap();
    assert!(matches!(k.translate(Mode::Normal, &key('q')), Some(Action::Command(Command::Save))));
    assert_eq!(k.label(Command::Quit), "ctrl-c", "quit keeps its other key");
}

#[test]
fn a_bad_config_names_file_line_and_column_on_one_line() {
    let text = "[console]\ntheme = \"dark\"\npreview_fps = \"fast\"\n";
    let e = Config::parse(text, Path::new("/etc/sam2.toml")).unwrap_err().to_string();
    assert!(e.starts_with("/etc/sam2.toml:3:15: "), "{e}");
    assert!(!e.contains('\n'), "{e}");

    let e = Config::parse("[engine\n", Path::new("x.toml")).unwrap_err().to_string();
    assert!(e.starts_with("x.toml:1:"), "{e}");

    let cfg = Config::parse("[keys]\nundo = [\"u\"]\npoint_positiv = [\"p\"]\n", Path::new("k.toml")).unwrap();
    let e = Keymap::from_config(&cfg).unwrap_err().to_string();
    assert!(e.starts_with("k.toml:3:17: "), "{e}");
    assert!(e.contains("point_positiv"), "{e}");

    let cfg = Config::parse("[keys]\nundo = [\"ctrll-u\"]\n", Path::new("k.toml")).unwrap();
    let e = Keymap::from_config(&cfg).unwrap_err().to_string();
    assert!(e.starts_with("k.toml:2:8: ") && e.contains("unknown key 'ctrll-u'"), "{e}");

    let cfg = Config::parse("[keys]\nundo = [\"z\"]\nredo = [\"z\"]\n", Path::new("k.toml")).unwrap();
    let e = Keymap::from_config(&cfg).unwrap_err().to_string();
    assert!(e.contains("bound to both"), "{e}");
}

#[test]
fn the_example_config_parses_and_documents_every_command() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Every line of the example is commented out, so it parses to the defaults...
    let cfg = Config::parse(&text, &path).unwrap();
    assert_eq!(cfg.console, Config::default().console);
    // ...and uncommenting it gives the same values the defaults have, key names included.
    let uncommented: String = text
        .lines()
        .map(|l| l.strip_prefix("# ").filter(|r| r.starts_with('[') || r.contains(" = ")).unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut cfg = Config::parse(&uncommented, &path).unwrap_or_else(|e| panic!("{e}"));
    Keymap::from_config(&cfg).unwrap();
    // Settings that are unset by default show an example value instead.
    assert_eq!(cfg.console.tmux_passthrough, Some(true));
    assert_eq!(cfg.engine.mps_high_watermark_ratio, Some(1.4));
    cfg.console.tmux_passthrough = None;
    cfg.engine.checkpoint = None;
    cfg.engine.mps_high_watermark_ratio = None;
    cfg.engine.mps_low_watermark_ratio = None;
    cfg.engine.env.clear();
    assert_eq!(cfg.tuning.trace, Some("trace.json".into()));
    cfg.tuning.trace = None;
    for c in Command::ALL {
        assert!(cfg.keys.contains_key(c.name()), "config.example.toml does not document [keys] {}", c.name());
    }
    assert_eq!(cfg.engine, Config::default().engine);
    assert_eq!(cfg.supervisor, Config::default().supervisor);
    assert_eq!(cfg.console, Config::default().console);
    // Every knob but logits_dir (the job's own) is documented, with its default.
    let values = |t: &sam2_tui::tuning::Tuning| t.describe().into_iter().map(|k| (k.name, k.value)).collect::<Vec<_>>();
    assert_eq!(values(&cfg.tuning), values(&Default::default()));
    for k in cfg.tuning.describe() {
        let documented = k.source == sam2_tui::tuning::Source::Config;
        assert_eq!(documented, k.name != "logits_dir", "config.example.toml and [tuning] {}", k.name);
    }
}

#[test]
fn the_help_overlay_lists_every_bound_command_with_its_keys() {
    let cfg = Config::parse("[keys]\nexport = [\"E\", \"f5\"]\n", Path::new("c.toml")).unwrap();
    let mut app = app_with_video(200, 60);
    app.keymap = Keymap::from_config(&cfg).unwrap();
    let lines = app.keymap.help_lines();
    for c in Command::ALL {
        let keys = app.keymap.label(c);
        assert!(lines.iter().any(|(_, k, d)| *k == keys && d == c.describe()), "help is missing {} ({keys})", c.name());
    }
    assert!(lines.iter().any(|(_, k, _)| k == "E/f5"), "remapped keys show as remapped");
}

#[test]
fn config_is_found_through_the_environment() {
    let dir = std::env::temp_dir().join(format!("sam2-tui-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mine.toml");
    std::fs::write(&file, "[console]\ntheme = \"light\"\n").unwrap();
    // One test owns these variables in this binary.
    std::env::set_var("SAM2_TUI_CONFIG", &file);
    let cfg = Config::load(None).unwrap();
    assert_eq!(cfg.console.theme, "light");
    std::env::set_var("SAM2_TUI_CONFIG", dir.join("missing.toml"));
    let e = Config::load(None).unwrap_err().to_string();
    assert!(e.contains("missing.toml") && e.contains("cannot read config"), "{e}");
    std::env::remove_var("SAM2_TUI_CONFIG");
    let xdg = dir.join("xdg");
    std::fs::create_dir_all(xdg.join("sam2-tui")).unwrap();
    std::fs::write(xdg.join("sam2-tui/config.toml"), "[console]\ntheme = \"high-contrast\"\n").unwrap();
    std::env::set_var("XDG_CONFIG_HOME", &xdg);
    assert_eq!(Config::load(None).unwrap().console.theme, "high-contrast");
    // An explicit path wins over everything.
    assert_eq!(Config::load(Some(&file)).unwrap().console.theme, "light");
    std::env::remove_var("XDG_CONFIG_HOME");
    std::fs::remove_dir_all(&dir).unwrap();
}
