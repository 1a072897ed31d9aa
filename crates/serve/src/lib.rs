//! `sam2-tui serve`: a drop-in backend for the official SAM 2 web demo's front end
//! (facebookresearch/sam2 @ 2b90b9f, `demo/frontend`), API as in `docs/serve-api.md`.
//!
//! Unlike the official backend (one process, one lock, every session in one address
//! space), each session here is its own supervised engine worker (`sam2_supervisor`): a
//! crash, hang or OOM in one session's worker costs that session a restart and nothing
//! else, and sessions run side by side.
//!
//! * `data`     — the data folder: gallery, posters, uploads; paths that never leave it.
//! * `frames`   — video frames decoded as the official does (decord's scaling).
//! * `upload`   — `uploadVideo`: probe and transcode with the `ffmpeg` CLI, as the official.
//! * `sessions` — one supervisor per session, the demo's object ids and points over it.
//! * `schema`   — the GraphQL schema (async-graphql), the official's names and types.
//! * `stream`   — `POST /propagate_in_video`: the multipart/x-savi-stream of masks.
//! * `pages`    — HTML error pages as Flask and gunicorn write them.
//! * `http`     — the router: routes, CORS as flask-cors, static files, the request log.
//! * `operator` — what the server is doing, published for an operator view, and the
//!   operator's controls (switch settings, drain, stop); also the log.
pub mod cuda_mps;
pub mod data;
pub mod ffmpeg;
pub mod frames;
pub mod http;
pub mod log;
pub mod operator;
pub mod pages;
pub mod schema;
pub mod sessions;
pub mod shared_workers;
pub mod stream;
pub mod upload;

use sam2_supervisor::SupervisorOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything `serve` needs; `base` is what every session's supervisor starts from
/// (the shared engine flags and config file, through `config::supervisor_options`).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// The data folder: `gallery/`, `posters/`, `uploads/` (created when missing).
    pub data: PathBuf,
    /// What `Video.url` and `posterUrl` start with (the official's `API_URL`).
    pub api_url: String,
    /// The gallery video `defaultVideo` returns (relative to the data folder), else the first.
    pub default_video: Option<String>,
    /// Sessions open at once; `startSession` beyond it is refused.
    pub max_sessions: usize,
    /// A session nobody used for this long is closed (its worker stopped).
    pub idle_timeout: Duration,
    /// Uploads larger than this are refused.
    pub max_upload_bytes: u64,
    /// The transcode keeps at most this many seconds (the official's
    /// `MAX_UPLOAD_VIDEO_DURATION`).
    pub max_upload_seconds: f64,
    /// Uploads whose video is longer than this are refused.
    pub max_upload_input_seconds: f64,
    /// Decode video files as the official backend does (decord's bilinear scaling, see
    /// `frames`), so masks match its own; false: the engine's decoder (Pillow's bicubic).
    pub official_decode: bool,
    /// The engine scales video files' frames as decord does itself (built with FFmpeg):
    /// `official_decode` then extracts no frames. False: they are extracted with the
    /// `ffmpeg` CLI (`frames`), for a binary built without FFmpeg.
    pub engine_decord: bool,
    /// Spare workers kept started with the model loaded, so that `startSession` costs
    /// no process start nor model load (0: none).
    pub warm_workers: usize,
    /// Sessions that share one engine worker (`shared_workers`); 1: a worker per session.
    pub streams: usize,
    /// Whether the workers share an NVIDIA GPU through CUDA MPS (see `cuda_mps`).
    pub cuda_mps: cuda_mps::Mode,
    /// The MPS control program (`nvidia-cuda-mps-control`).
    pub mps_control: PathBuf,
    /// The `ffmpeg` and `ffprobe` programs.
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    /// Where sessions' journals and memory banks live while they are open.
    pub sessions_root: PathBuf,
    pub base: SupervisorOptions,
}

impl ServeOptions {
    pub fn new(data: PathBuf, base: SupervisorOptions) -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 7263,
            data,
            api_url: "http://localhost:7263".into(),
            default_video: None,
            max_sessions: 4,
            idle_timeout: Duration::from_secs(30 * 60),
            max_upload_bytes: 70 << 20,
            max_upload_seconds: 10.0,
            max_upload_input_seconds: 600.0,
            official_decode: true,
            engine_decord: false,
            warm_workers: 1,
            streams: 1,
            cuda_mps: cuda_mps::Mode::Off,
            mps_control: "nvidia-cuda-mps-control".into(),
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
            sessions_root: sam2_supervisor::session_dirs::root(),
            base,
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    pub opts: ServeOptions,
    pub data: data::DataDir,
    pub gallery: Vec<data::VideoEntry>,
    pub sessions: Arc<sessions::Sessions>,
    pub board: Arc<operator::Board>,
}

/// Prepares the data folder (posters included), binds, and serves until Ctrl-C or
/// SIGTERM; then closes every session (their workers stopped) and returns. Headless:
/// the log goes to stderr.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let (listener, addr) = bind(&opts).await?;
    let board = Arc::new(operator::Board::new(true));
    serve_on(opts, listener, addr, shutdown_signal(), board, None).await
}

/// `serve` for an operator view: the log stays on `board` (stderr is the view's
/// terminal), and `controls` carry the operator's wishes. Returns once the server has
/// stopped: a signal, `Control::Stop`, or a drain whose last session closed.
pub async fn serve_operated(
    opts: ServeOptions,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    board: Arc<operator::Board>,
    controls: tokio::sync::mpsc::UnboundedReceiver<operator::Control>,
) -> anyhow::Result<()> {
    serve_on(opts, listener, addr, shutdown_signal(), board, Some(controls)).await
}

/// Binds the listening socket (a taken port is one clear error).
pub async fn bind(opts: &ServeOptions) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", opts.host, opts.port))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves on `listener` until `shutdown` resolves, or the operator stops or drains it.
pub async fn serve_on(
    opts: ServeOptions,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    board: Arc<operator::Board>,
    controls: Option<tokio::sync::mpsc::UnboundedReceiver<operator::Control>>,
) -> anyhow::Result<()> {
    board.update(|s| {
        s.address = format!("http://{addr}");
        s.settings = sessions::settings_of(&opts.base);
        s.max_sessions = opts.max_sessions;
    });
    // Set up before any worker starts, let go (the private daemon told to quit) only
    // once every session has closed, at the end of this function.
    let mut opts = opts;
    let operators = std::env::var_os("CUDA_MPS_PIPE_DIRECTORY").map(PathBuf::from);
    let gpu_sharing = cuda_mps::start(opts.cuda_mps, opts.base.device, &opts.mps_control, operators)?;
    if !matches!((opts.cuda_mps, &gpu_sharing), (cuda_mps::Mode::Off, cuda_mps::Sharing::None(_))) {
        board.info(gpu_sharing.describe());
    }
    if let Some((key, value)) = gpu_sharing.worker_env() {
        opts.base.set_env(key, &value);
    }
    let data = data::DataDir::open(&opts.data)?;
    let gallery = data.scan_gallery(&opts.ffmpeg, &opts.ffprobe, &board)?;
    sam2_supervisor::session_dirs::sweep_one_shot(&opts.sessions_root);
    let sessions = sessions::Sessions::new(
        sessions::SessionsConfig {
            base: opts.base.clone(),
            root: opts.sessions_root.clone(),
            max_sessions: opts.max_sessions,
            idle_timeout: opts.idle_timeout,
            official_decode: opts.official_decode,
            engine_decord: opts.engine_decord,
            warm_workers: opts.warm_workers,
            streams: opts.streams,
            ffmpeg: opts.ffmpeg.clone(),
            ffprobe: opts.ffprobe.clone(),
        },
        board.clone(),
    );
    board.info(format!(
        "serving {} on http://{addr} ({} gallery video{}, at most {} session{}, idle sessions closed after {} s)",
        data.root().display(),
        gallery.len(),
        if gallery.len() == 1 { "" } else { "s" },
        opts.max_sessions,
        if opts.max_sessions == 1 { "" } else { "s" },
        opts.idle_timeout.as_secs()
    ));
    sessions.refill();
    board.update(|s| s.serving = true);
    let state = Arc::new(AppState { opts, data, gallery, sessions: sessions.clone(), board: board.clone() });
    let reaper = tokio::spawn(sessions::reap_idle(sessions.clone()));
    let app = http::router(state);
    // The operator's controls; a stop (or the view going away) ends the server.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let operated = controls.map(|rx| tokio::spawn(operate(rx, sessions.clone(), stop_tx)));
    // Sessions close first: that ends their streams, which graceful shutdown waits for.
    let closing = sessions.clone();
    let drained = sessions.clone();
    let log = board.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown => log.info("shutting down: closing every session".to_string()),
            // Headless, the sender is gone at once: that is no stop (the branch is off).
            Ok(()) = stop_rx => log.info("stopping as the operator asked: closing every session".to_string()),
            _ = drained.drained() => log.info("drained: the last session has closed; stopping".to_string()),
        }
        closing.close_all().await;
    };
    let result = axum::serve(listener, app).with_graceful_shutdown(stop).await;
    reaper.abort();
    if let Some(t) = operated {
        t.abort();
    }
    sessions.close_all().await;
    drop(gpu_sharing);
    result.map_err(|e| anyhow::anyhow!("server error: {e}"))
}

/// Carries out the operator's controls, one at a time, in order.
async fn operate(
    mut controls: tokio::sync::mpsc::UnboundedReceiver<operator::Control>,
    sessions: Arc<sessions::Sessions>,
    stop: tokio::sync::oneshot::Sender<()>,
) {
    while let Some(c) = controls.recv().await {
        match c {
            operator::Control::Switch(s) => sessions.switch(s).await,
            operator::Control::Drain => sessions.drain().await,
            operator::Control::Stop => break,
        }
    }
    let _ = stop.send(());
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
