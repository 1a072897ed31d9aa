//! What the supervisor runs and how it reacts. Defaults follow the gunicorn master the
//! SAM 2 demo uses (`--timeout 60`), plus a crash-loop breaker and worker recycling.
use sam2_api::device::{DeviceChoice, PrecisionChoice};
use sam2_api::model::{ModelSize, ModelVersion};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RestartPolicy {
    /// Restarts allowed within `window` before the rung is abandoned.
    pub max_retries: u32,
    pub window: Duration,
    /// Backoff before restart k (1-based): initial × 2^(k-1), capped at `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The fallback ladder (config `fallback`): the devices to go to, in order, when retries
    /// are exhausted on the current one. Devices already given up on (the one the walk
    /// started from included) and `auto` are skipped; `[]` never changes device.
    pub fallback: Vec<DeviceChoice>,
    /// When the device ladder is exhausted, try the next smaller model (config
    /// `fallback_smaller_model`), down to tiny.
    pub smaller_model: bool,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_retries: 3,
            window: Duration::from_secs(120),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            fallback: vec![DeviceChoice::Cpu],
            smaller_model: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Watchdog {
    /// No heartbeat for this long → SIGKILL (the process is wedged).
    pub heartbeat_timeout: Duration,
    /// An op in flight with no frame or answer for this long → SIGKILL (a device hang
    /// while the heartbeat thread still runs, e.g. a stuck `mps synchronize`).
    pub progress_timeout: Duration,
    /// Model loading and media opening may take this long.
    pub load_timeout: Duration,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            heartbeat_timeout: Duration::from_secs(10),
            progress_timeout: Duration::from_secs(120),
            load_timeout: Duration::from_secs(300),
        }
    }
}

/// Restart a healthy worker at a frame boundary before it degrades (gunicorn's
/// `--max-requests`): after N frames, or when MPS driver memory passes a share of the
/// recommended maximum.
#[derive(Clone, Debug, Default)]
pub struct Recycling {
    pub after_frames: Option<u64>,
    pub mps_driver_share: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    /// The worker command line; default: this executable + `engine`. May be remote, e.g.
    /// `["ssh", "gpu-box", "sam2-tui", "engine"]`.
    pub worker_command: Vec<String>,
    pub checkpoint: PathBuf,
    pub size: Option<ModelSize>,
    pub version: Option<ModelVersion>,
    pub device: DeviceChoice,
    /// Resolved per rung: `auto` follows the device (bf16 on CUDA, fp32 after a fall-back to the CPU).
    pub precision: PrecisionChoice,
    pub image_size: i64,
    pub media: Option<PathBuf>,
    /// Journal, banks and fault state live here.
    pub session_dir: PathBuf,
    pub fill_holes: bool,
    /// Extra environment for the worker (watermarks, MPS fallback, thread counts).
    pub env: Vec<(String, String)>,
    pub restart: RestartPolicy,
    pub watchdog: Watchdog,
    pub recycling: Recycling,
    /// Names the first rung of the ladder regardless of its real device, so tests can
    /// make the CPU play the "accelerator" (the ladder code is the same).
    pub device_label: Option<String>,
    /// Ops of an earlier session to run first (e.g. `segment --session FILE`).
    pub initial_ops: Vec<sam2_api::session::Op>,
    /// The engine's knobs, sent with every `LoadModel` (the worker's environment still
    /// wins there).
    pub tuning: sam2_api::tuning::Tuning,
}

impl SupervisorOptions {
    /// Options with defaults for everything but the checkpoint and media.
    pub fn new(checkpoint: PathBuf, media: Option<PathBuf>) -> anyhow::Result<Self> {
        Ok(SupervisorOptions {
            worker_command: default_worker_command()?,
            checkpoint,
            size: None,
            version: None,
            device: DeviceChoice::Auto,
            precision: PrecisionChoice::Auto,
            image_size: 1024,
            media,
            session_dir: default_session_dir(),
            fill_holes: true,
            env: vec![],
            restart: RestartPolicy::default(),
            watchdog: Watchdog::default(),
            recycling: Recycling::default(),
            device_label: None,
            initial_ops: vec![],
            tuning: Default::default(),
        })
    }

    /// Sets `PYTORCH_MPS_HIGH_WATERMARK_RATIO` (replacing an earlier value).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }
}

pub fn default_worker_command() -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe().map_err(|e| anyhow::anyhow!("cannot find this executable: {e}"))?;
    Ok(vec![exe.to_string_lossy().into_owned(), "engine".into()])
}

/// A fresh directory per session under the data folder's `sessions/` (see `dirs`).
pub fn default_session_dir() -> PathBuf {
    let base = sam2_api::dirs::data_dir();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    base.join("sessions").join(format!("{stamp}-{}", std::process::id()))
}
