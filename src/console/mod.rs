//! The operator console: a ratatui dashboard over the supervisor.
//!
//! * `action`     — everything that can change state; `app` — the state and `update`.
//! * `keymap`     — keys → actions (remappable; help and hints are generated from it).
//! * `view`       — pure drawing functions of `&App`.
//! * `preview`    — frame + masks + marks, encoded for the terminal off the UI thread.
//! * `event_loop` — terminal/engine/preview events in, effects out, redraws.
//! * `operator`   — `serve --console`: the web backend's operator view (its own state,
//!   view and loop over the server's published status).
//! * `tui`, `logging`, `engine_link`, `export` — the edges (terminal, log file,
//!   supervisor, output files).
pub mod action;
pub mod app;
pub mod engine_link;
pub mod event_loop;
pub mod export;
pub mod keymap;
pub mod layout;
pub mod logging;
pub mod operator;
pub mod preview;
pub mod testing;
pub mod tui;
pub mod view;

use crate::config::{Config, Graphics, Theme};
use crate::session::Journal;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Default, Clone)]
pub struct ConsoleArgs {
    /// Terminal graphics for the preview (auto asks the terminal; halfblocks works everywhere).
    #[arg(long, value_enum)]
    pub graphics: Option<Graphics>,
    /// Wrap image escapes for tmux even when TERM does not say tmux (ssh from inside tmux).
    #[arg(long)]
    pub tmux_passthrough: bool,
    /// Colour theme: dark, light, high-contrast, or a path to a theme file.
    #[arg(long)]
    pub theme: Option<String>,
    /// The engine settings every command shares (over the config file's `[engine]`).
    #[command(flatten)]
    pub engine: crate::config::EngineFlags,
    /// Session journal: resumed when it exists, and where `s` saves.
    #[arg(long)]
    pub session: Option<PathBuf>,
    /// Where `e` exports masks (default: <video name>_masks/).
    #[arg(long)]
    pub export_dir: Option<PathBuf>,
}

/// The config with the command line's overrides applied.
pub fn effective_config(args: &ConsoleArgs) -> anyhow::Result<Config> {
    let mut cfg = args.engine.effective_config()?;
    if let Some(g) = args.graphics {
        cfg.console.graphics = g;
    }
    if args.tmux_passthrough {
        cfg.console.tmux_passthrough = Some(true);
    }
    if let Some(t) = &args.theme {
        cfg.console.theme = t.clone();
    }
    Ok(cfg)
}

fn stem(input: Option<&Path>) -> String {
    input.and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sam2-tui".into())
}

pub fn run(input: Option<PathBuf>, args: ConsoleArgs) -> anyhow::Result<()> {
    let cfg = effective_config(&args)?;
    // A terminal without cursor addressing cannot show a full-screen dashboard.
    if std::env::var("TERM").is_ok_and(|t| t == "dumb") {
        return Err(crate::util::bad_input(
            "TERM=dumb: this terminal cannot draw the console (no cursor addressing); run it in a real terminal, or use `sam2-tui segment` headless",
        ));
    }
    if crate::config::theme::no_color_requested() {
        crate::config::theme::set_monochrome(true);
        // crossterm honours NO_COLOR by dropping every colour, the image's too (halfblocks
        // are coloured cells): the interface goes monochrome above instead.
        crossterm::style::force_color_output(true);
    }
    let theme = Theme::load(&cfg.console.theme)?;
    let keymap = keymap::Keymap::from_config(&cfg)?;
    if let Some(p) = &input {
        // Before the terminal is taken over: a missing input, a FIFO or a device is one
        // line and exit 2, not an error note inside the console (or a hang on the FIFO).
        if !p.is_dir() {
            crate::limits::regular_file(p, "video or image")?;
        }
    }
    let session_path =
        args.session.clone().unwrap_or_else(|| PathBuf::from(format!("{}.session.json", stem(input.as_deref()))));
    let resumed = match &args.session {
        Some(p) if p.exists() => Some(Journal::load(p)?),
        _ => None,
    };
    // A session saved next to the video by an earlier run, not named on the command line:
    // offered once the console is up (resuming then sends its ops to the engine).
    let offered = match &args.session {
        None if session_path.is_file() => Journal::load(&session_path).ok().filter(|j| !j.ops.is_empty()),
        _ => None,
    };
    // A resumed session must fit the video (frames, points inside the frame), checked as
    // `segment` checks it and before the terminal is taken over. This opens the input
    // once more; only when a session is resumed.
    if let (Some(j), Some(p), Some(file)) = (&resumed, &input, &args.session) {
        let source = crate::media::open(p)?;
        let (width, height) = source.size();
        j.check_for_video(file, source.len(), width, height)?;
    }
    let export_dir =
        args.export_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}_masks", stem(input.as_deref()))));
    let (_log_guard, log_path) = logging::init(&Config::data_dir(), &cfg.console.log_level)?;
    tracing::info!(target: "console", "starting console on {:?}", input);

    let mut app = app::App::new(&cfg, theme, keymap, input.clone(), session_path.clone());
    let initial_ops = resumed.as_ref().map(|j| j.ops.clone()).unwrap_or_default();
    if let Some(j) = resumed {
        app.resume(j);
    }
    if let Some(j) = offered {
        app.offer_session(session_path.clone(), j);
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let mut tui = tui::enter(cfg.console.mouse)?;
        tui::install_panic_hook(cfg.console.mouse, log_path.clone());
        // The probe must run in the alternate screen and before the event stream starts.
        let picker = match cfg.console.graphics {
            Graphics::Halfblocks => ratatui_image::picker::Picker::halfblocks(),
            _ => match preview::probe::query(std::time::Duration::from_millis(1000)) {
                Ok(answer) => {
                    if !answer.complete {
                        app.note(
                            crate::supervisor::events::LogLevel::Warn,
                            "the terminal did not answer the graphics query in 1 s; guessing from the environment"
                                .into(),
                        );
                    }
                    preview::probe::picker(&answer)
                }
                Err(e) => {
                    app.note(
                        crate::supervisor::events::LogLevel::Warn,
                        format!("terminal graphics probe failed ({e}); using halfblocks"),
                    );
                    ratatui_image::picker::Picker::halfblocks()
                }
            },
        };
        let encoder = preview::protocol::Encoder::new(picker, cfg.console.graphics, cfg.console.tmux_passthrough);
        app.font = encoder.font();
        app.note(
            crate::supervisor::events::LogLevel::Info,
            format!(
                "preview: {:?}{} · log: {}",
                encoder.protocol_type(),
                if encoder.tmux { " via tmux" } else { "" },
                log_path.display()
            ),
        );
        let size = tui.terminal.size()?;
        app.update(action::Action::Resize { width: size.width, height: size.height });

        let mut source = None;
        if let Some(p) = input.clone() {
            match tokio::task::spawn_blocking(move || crate::media::open(&p)).await? {
                Ok(s) => {
                    let (w, h) = s.size();
                    app.update(action::Action::MediaOpened { width: w, height: h, frames: s.len(), fps: s.fps() });
                    source = Some(s);
                }
                Err(e) => app.note(crate::supervisor::events::LogLevel::Error, format!("{e:#}")),
            }
        }

        let ckpt = crate::config::checkpoint(&cfg, None);
        let missing = crate::config::missing_checkpoint(&cfg, &ckpt);
        if let Some(why) = &missing {
            app.engine.blocked = Some("no checkpoint (see the log)".into());
            app.note(crate::supervisor::events::LogLevel::Error, why.clone());
            if cfg.engine.checkpoint.is_none() && app.modal == app::Modal::None {
                app.modal = app::Modal::OfferDownload(cfg.engine.model);
            }
        }
        let link = match missing {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(ckpt),
        };
        let link = link
            .and_then(|ckpt| crate::config::supervisor_options(&cfg, ckpt, input.as_deref(), initial_ops))
            .and_then(engine_link::start);
        let (commands, events) = match link {
            Ok(l) => (Some(l.commands), l.events),
            Err(e) => {
                if app.engine.blocked.is_none() {
                    app.note(crate::supervisor::events::LogLevel::Error, format!("engine not started: {e:#}"));
                }
                let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (None, rx)
            }
        };
        let opts = event_loop::LoopOptions {
            max_redraw_fps: cfg.console.max_redraw_fps,
            tick: std::time::Duration::from_millis(cfg.console.tick_ms.max(10)),
            preview: source.map(|s| (s, encoder, cfg.console.preview_fps)),
            draws: None,
            synchronized: true,
            export_dir,
        };
        let events_stream = crossterm::event::EventStream::new();
        let r = event_loop::run(&mut tui.terminal, &mut app, events_stream, events, commands, opts).await;
        drop(tui);
        r
    })
}
