//! `[engine]` and `[supervisor]` as the supervisor's options: the one path from the config
//! file (with the command's `EngineFlags` applied) to a running engine, for every command.
use super::Config;
use crate::session::Op;
use crate::supervisor::{RestartPolicy, SupervisorOptions, Watchdog};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The checkpoint to load: the flag, else the config, else the official file's usual place.
pub fn checkpoint(cfg: &Config, flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| cfg.engine.checkpoint.clone())
        .unwrap_or_else(|| crate::weights::official::default_checkpoint(cfg.engine.model, cfg.engine.version))
}

/// Why the engine cannot start for want of a checkpoint, in one line that says how to
/// get one (size, destination) — checked before any worker is spawned, so a first run
/// shows this instead of a crash-and-fall-back cascade. None when the file is there.
pub fn missing_checkpoint(cfg: &Config, path: &Path) -> Option<String> {
    if path.is_file() {
        return None;
    }
    let size = cfg.engine.model;
    if cfg.engine.checkpoint.is_some() {
        return Some(format!("{}: no such checkpoint file (given with --checkpoint or in the config)", path.display()));
    }
    let looked: Vec<String> = crate::weights::official::checkpoint_candidates(size, cfg.engine.version)
        .iter()
        .map(|p| p.parent().unwrap_or(p).display().to_string())
        .collect();
    Some(format!(
        "no {} checkpoint (looked in {}): `sam2-tui weights download {}` fetches it, about {} MB, into weights/ — then start again",
        crate::weights::official::file_name(size, cfg.engine.version),
        looked.join(", "),
        size.name(),
        crate::weights::official::approx_megabytes(size)
    ))
}

/// The supervisor's options from the config (`[engine]`, `[supervisor]`): what every
/// command that starts the engine begins from.
pub fn supervisor_options(
    cfg: &Config,
    checkpoint: PathBuf,
    media: Option<&Path>,
    initial_ops: Vec<Op>,
) -> anyhow::Result<SupervisorOptions> {
    let e = &cfg.engine;
    let s = &cfg.supervisor;
    let mut o = SupervisorOptions::new(checkpoint, media.map(Path::to_path_buf))?;
    if !e.command.is_empty() {
        o.worker_command = e.command.clone();
    }
    o.size = Some(e.model);
    o.version = Some(e.version);
    o.device = e.device;
    o.precision = e.precision;
    o.image_size = e.image_size;
    if let Some(r) = e.mps_high_watermark_ratio {
        o.set_env("PYTORCH_MPS_HIGH_WATERMARK_RATIO", &r.to_string());
    }
    if let Some(r) = e.mps_low_watermark_ratio {
        o.set_env("PYTORCH_MPS_LOW_WATERMARK_RATIO", &r.to_string());
    }
    if e.mps_cpu_fallback {
        o.set_env("PYTORCH_ENABLE_MPS_FALLBACK", "1");
    }
    if e.threads > 0 {
        o.set_env("OMP_NUM_THREADS", &e.threads.to_string());
    }
    for (k, v) in &e.env {
        o.set_env(k, v);
    }
    // The knobs: the config's [tuning] with the command's --tune, the environment on top
    // (the worker applies its own again, and warns about values it cannot read). Those a
    // worker reads before the protocol reaches it travel as its environment.
    let mut tuning = cfg.tuning.clone();
    let _ = tuning.apply_env();
    for (k, v) in tuning.process_env() {
        o.set_env(&k, &v);
    }
    o.tuning = tuning;
    o.restart = RestartPolicy {
        max_retries: s.max_restarts,
        window: Duration::from_secs(s.restart_window_secs),
        initial_backoff: Duration::from_millis(s.backoff_initial_ms),
        max_backoff: Duration::from_millis(s.backoff_max_ms),
        fallback: e.fallback.clone(),
        smaller_model: s.fallback_smaller_model,
    };
    let never = Duration::from_secs(365 * 24 * 3600);
    let secs = |v: u64| if v == 0 { never } else { Duration::from_secs(v) };
    o.watchdog = Watchdog {
        heartbeat_timeout: secs(s.heartbeat_timeout_secs),
        progress_timeout: secs(s.progress_timeout_secs),
        load_timeout: secs(s.load_timeout_secs),
    };
    o.recycling.after_frames =
        (s.recycle_after_frames > 0).then_some(s.recycle_after_frames + jitter(s.recycle_jitter_frames));
    o.recycling.mps_driver_share = (s.recycle_memory_fraction > 0.0).then_some(s.recycle_memory_fraction as f64);
    o.initial_ops = initial_ops;
    Ok(o)
}

/// A cheap random 0..=max (no rand dependency: the clock's low bits are enough here).
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    nanos as u64 % (max + 1)
}
