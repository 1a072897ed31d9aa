//! `sam2-tui serve`: a drop-in backend for the official SAM 2 web demo's front end
//! (GraphQL on /graphql, the mask stream on /propagate_in_video, the data folder's
//! files), with one supervised engine worker per session (crate `sam2-serve`); with
//! `--console`, the operator view of it in the same process (`console::operator`).
use crate::config::{Config, EngineFlags, Theme};
use crate::console::{keymap::Keymap, logging, operator, tui};
use crate::util::bad_input;
use sam2_serve::operator::Board;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface —
    /// there is no authentication, as in the official backend).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (the demo's front end expects 7263).
    #[arg(long, default_value_t = 7263)]
    pub port: u16,
    /// The data folder: gallery/ (the videos offered), posters/ (made at start),
    /// uploads/ (default: `serve-data` in sam2-tui's data directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Sessions (engine workers) open at once; startSession beyond it is refused.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_sessions: u32,
    /// What video and poster URLs start with (default: http://localhost:PORT).
    #[arg(long)]
    pub api_url: Option<String>,
    /// The gallery video the demo opens first, relative to the data folder
    /// (default: the first one).
    #[arg(long)]
    pub default_video: Option<String>,
    /// Close a session nobody used for this many seconds.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Refuse uploads larger than this many megabytes (the front end's own cap is 70).
    #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_upload_mb: u64,
    /// Keep at most this many seconds of an upload (the official's MAX_UPLOAD_VIDEO_DURATION).
    #[arg(long, default_value_t = 10.0)]
    pub max_upload_seconds: f64,
    /// Refuse uploads whose video is longer than this many seconds.
    #[arg(long, default_value_t = 600.0)]
    pub max_upload_input_seconds: f64,
    /// Let the engine decode video files itself (faster to start a session) instead of
    /// scaling frames as the official backend does; masks then differ from the official's
    /// on about 1 % of the pixels at object edges.
    #[arg(long)]
    pub engine_decode: bool,
    /// Extract each session's frames, scaled as the official's decord does, with the
    /// `ffmpeg` CLI (S×S PNGs; masks read back from the worker's logits), instead of the
    /// engine scaling them that way itself. What a binary built without FFmpeg always does.
    #[arg(long, conflicts_with = "engine_decode")]
    pub extract_frames: bool,
    /// Spare workers kept started with the model loaded, so a new session starts without
    /// a process start and a model load (0: none; each holds a model's memory). A closed
    /// session's worker becomes a spare again, and open sessions' workers count towards
    /// this number, so a burst of sessions starts no new workers while it runs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub warm_workers: u32,
    /// Sessions that share one engine worker (1: a worker of its own per session). Shared,
    /// the sessions' propagations run in lockstep (one image-encoder batch and one
    /// tracking step a frame for all) and a click runs between two of their steps; a
    /// crash replays every session of that worker and changes no mask. A worker of its
    /// own has the fallback ladder (MPS to CPU) and keeps one session's fatal GPU fault
    /// from the others. Needs the engine to read the videos itself (not --extract-frames).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub streams: u32,
    /// Share an NVIDIA GPU between the session workers through CUDA MPS (NVIDIA's
    /// Multi-Process Service): auto starts a private daemon when the engine may run on
    /// CUDA and nvidia-cuda-mps-control is on PATH (a daemon named by
    /// CUDA_MPS_PIPE_DIRECTORY is used as it is); on insists; off leaves the GPU
    /// time-sliced between workers (on an H100 with the tiny model MPS gained nothing
    /// to speak of: one session keeps the GPU about 92 % busy).
    #[arg(long, default_value = "off", value_parser = ["auto", "on", "off"])]
    pub cuda_mps: String,
    /// Show the operator view full screen (sessions, FPS, device memory, restarts, the
    /// log; keys switch model, device or precision and drain the server) instead of
    /// logging to stderr.
    #[arg(long)]
    pub console: bool,
    #[command(flatten)]
    pub engine: EngineFlags,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    for (name, v) in
        [("--max-upload-seconds", a.max_upload_seconds), ("--max-upload-input-seconds", a.max_upload_input_seconds)]
    {
        if !(v.is_finite() && v > 0.0) {
            return Err(bad_input(format!("{name} must be a positive number of seconds, got {v}")));
        }
    }
    let cfg = a.engine.effective_config()?;
    let checkpoint = crate::config::checkpoint(&cfg, None);
    if let Some(why) = crate::config::missing_checkpoint(&cfg, &checkpoint) {
        return Err(bad_input(why));
    }
    // The file says what model it is (as `segment`): judged once, before any session.
    let det = super::checks::checkpoint(&checkpoint, a.engine.model)?;
    let mut base = crate::config::supervisor_options(&cfg, checkpoint, None, vec![])?;
    base.size = Some(det.size);
    base.version = Some(det.version);
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = std::process::Command::new(tool)
            .arg("-version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        anyhow::ensure!(
            ok,
            "serve needs the `{tool}` command (posters, uploads, decoding as the official does): install FFmpeg"
        );
    }
    let data = match &a.data {
        Some(d) => d.clone(),
        None => crate::dirs::data_dir().join("serve-data"),
    };
    let mut opts = sam2_serve::ServeOptions::new(data, base);
    opts.host = a.host.clone();
    opts.port = a.port;
    opts.api_url = a.api_url.clone().unwrap_or_else(|| format!("http://localhost:{}", a.port));
    opts.default_video = a.default_video.clone();
    opts.max_sessions = a.max_sessions as usize;
    opts.idle_timeout = Duration::from_secs(a.idle_timeout);
    opts.max_upload_bytes = a.max_upload_mb << 20;
    opts.max_upload_seconds = a.max_upload_seconds;
    opts.max_upload_input_seconds = a.max_upload_input_seconds;
    opts.official_decode = !a.engine_decode;
    // A binary with FFmpeg scales video frames as decord does in its workers; one without
    // has the `ffmpeg` CLI extract them.
    opts.engine_decord = cfg!(feature = "video") && !a.extract_frames;
    opts.warm_workers = a.warm_workers as usize;
    opts.streams = a.streams as usize;
    if opts.streams > 1 && opts.official_decode && !opts.engine_decord {
        return Err(bad_input(
            "--streams shares workers, whose engine must read the videos itself: not with --extract-frames (nor a binary built without FFmpeg, unless --engine-decode)",
        ));
    }
    opts.cuda_mps = a.cuda_mps.parse().map_err(|e: String| bad_input(format!("--cuda-mps: {e}")))?;
    if opts.cuda_mps == sam2_serve::cuda_mps::Mode::On
        && !matches!(opts.base.device, sam2_api::device::DeviceChoice::Cuda | sam2_api::device::DeviceChoice::Auto)
    {
        return Err(bad_input(format!(
            "--cuda-mps on shares an NVIDIA GPU, but the engine runs on {} (--device)",
            opts.base.device
        )));
    }
    if a.console {
        return with_console(opts, &cfg);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(sam2_serve::serve(opts))
}

/// The server with its operator view: the log goes to the view (and the tracing log
/// file), not to stderr, which is the view's terminal.
fn with_console(opts: sam2_serve::ServeOptions, cfg: &Config) -> anyhow::Result<()> {
    if std::env::var("TERM").is_ok_and(|t| t == "dumb") {
        return Err(bad_input(
            "TERM=dumb: this terminal cannot draw the operator view (no cursor addressing); run `serve` without --console to log to stderr",
        ));
    }
    let theme = Theme::load(&cfg.console.theme)?;
    let keymap = Keymap::from_config(cfg)?;
    let (_log_guard, log_path) = logging::init(&Config::data_dir(), &cfg.console.log_level)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // Before the terminal is taken over: a taken port is one line on a normal screen.
        let (listener, addr) = sam2_serve::bind(&opts).await?;
        // And a terminal that cannot be taken over ends it before any worker starts.
        let mut tui = tui::enter(false)?;
        tui::install_panic_hook(false, log_path);
        let board = Arc::new(Board::new(false));
        let status = board.subscribe();
        let (controls, controls_rx) = tokio::sync::mpsc::unbounded_channel();
        let server = tokio::spawn(sam2_serve::serve_operated(opts, listener, addr, board.clone(), controls_rx));
        let mut app = operator::app::OperatorApp::new(theme, keymap, status.borrow().clone());
        let size = tui.terminal.size()?;
        app.update(operator::app::Action::Resize { width: size.width, height: size.height });
        let server = async { server.await.map_err(|e| anyhow::anyhow!("the server task failed: {e}"))? };
        let events = crossterm::event::EventStream::new();
        let r = operator::run(&mut tui.terminal, &mut app, events, status, controls, server).await;
        drop(tui);
        // The view is gone with the screen: its last lines say how the server ended.
        let log = board.status().log;
        for l in log.iter().skip(log.len().saturating_sub(3)) {
            eprintln!("{} serve: {}", l.time, l.text);
        }
        r
    })
}
