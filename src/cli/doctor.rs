//! `sam2-tui doctor`: what this machine offers (devices, libtorch, FFmpeg, terminal
//! graphics), the environment in effect, every tuning knob with its value and where it
//! came from (config < `--tune` < environment), recommended settings, and with
//! `--rehearse` a supervised smoke inference per device (with those knobs) that reports
//! crashes instead of crashing.
use crate::device::DeviceChoice;
use crate::supervisor::events::{EngineCommand, EngineEvent, EngineState, LogLevel};
use crate::supervisor::{start, SupervisorOptions};
use crate::tuning::{Knob, Tuning};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run a short supervised inference on every available device.
    #[arg(long)]
    pub rehearse: bool,
    /// Checkpoint for the rehearsal (default: a random-init tiny model).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Set an engine tuning knob as `segment --tune` does (shown with source `cli`, and
    /// used by the rehearsal).
    #[arg(long = "tune", value_name = "KEY=VALUE", value_parser = crate::tuning::parse_assignment)]
    pub tune: Vec<(String, String)>,
}

/// The environment worth showing besides the tuning knobs (`SAM2_TUI_<KNOB>`, listed with
/// them): libtorch's and the device's, the config file, the test hooks that are
/// environment-only on purpose (see `sam2_api::tuning`), the terminal.
const ENV_VARS: &[&str] = &[
    "PYTORCH_MPS_HIGH_WATERMARK_RATIO",
    "PYTORCH_MPS_LOW_WATERMARK_RATIO",
    "PYTORCH_ENABLE_MPS_FALLBACK",
    "PYTORCH_CUDA_ALLOC_CONF",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "SAM2_TUI_CONFIG",
    "SAM2_TUI_FAULT",
    "SAM2_TUI_FAULT_STATE",
    "SAM2_TUI_EMULATE_MPS",
    "TERM",
    "TERM_PROGRAM",
    "COLORTERM",
    "TMUX",
    "SSH_CONNECTION",
];

#[derive(Serialize)]
pub struct Report {
    pub devices: Devices,
    pub libtorch: String,
    pub ffmpeg: Vec<(String, String)>,
    pub terminal: Terminal,
    pub environment: Vec<(String, String)>,
    /// Every knob: name, value, source, environment variable.
    pub tuning: Vec<Knob>,
    /// What did not apply (a config that does not load, environment values ignored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tuning_notes: Vec<String>,
    pub recommended: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rehearsal: Vec<Rehearsal>,
}

#[derive(Serialize)]
pub struct Devices {
    pub cpu_threads: usize,
    pub torch_threads: i32,
    pub cuda: Option<String>,
    pub cuda_devices: i64,
    pub mps: bool,
}

#[derive(Serialize)]
pub struct Terminal {
    pub graphics_guess: String,
    pub tmux: bool,
    pub ssh: bool,
    pub notes: Vec<String>,
}

#[derive(Serialize)]
pub struct Rehearsal {
    pub device: String,
    pub outcome: String,
    pub frames: usize,
    pub seconds: f32,
    pub crashes: Vec<String>,
    pub errors: Vec<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// An environment-based guess; the console queries the terminal itself at start-up.
pub fn guess_terminal() -> Terminal {
    let term = env("TERM").unwrap_or_default();
    let program = env("TERM_PROGRAM").unwrap_or_default();
    let tmux = env("TMUX").is_some() || term.starts_with("tmux") || term.starts_with("screen");
    let ssh = env("SSH_CONNECTION").is_some() || env("SSH_TTY").is_some();
    let graphics = if env("KITTY_WINDOW_ID").is_some() || term.contains("kitty") || program == "ghostty" {
        "kitty"
    } else if program.contains("iTerm")
        || program.contains("WezTerm")
        || env("LC_TERMINAL").is_some_and(|t| t.contains("iTerm"))
    {
        "iterm2"
    } else if term.contains("foot") || term.contains("mlterm") || term.contains("sixel") {
        "sixel"
    } else {
        "halfblocks (unknown terminal; the console's query may find more)"
    };
    let mut notes = vec![];
    if tmux {
        notes.push("tmux: set `allow-passthrough on` in your local tmux for images".into());
    }
    if ssh {
        notes
            .push("ssh: TERM_PROGRAM is not forwarded, so this guess is weak; the console queries the terminal".into());
    }
    Terminal { graphics_guess: graphics.into(), tmux, ssh, notes }
}

fn recommend(d: &Devices) -> Vec<String> {
    let mut r = vec![format!("OMP_NUM_THREADS={} (one inference thread pool per worker)", d.cpu_threads)];
    if d.mps {
        r.push(
            "device mps, precision fp32; if the worker aborts (MPSKey_Create…), the supervisor falls back to cpu"
                .into(),
        );
        r.push("PYTORCH_MPS_HIGH_WATERMARK_RATIO: keep the default 1.7; on out-of-memory aborts try 1.2-1.4 with worker recycling".into());
        r.push("PYTORCH_ENABLE_MPS_FALLBACK=1 (unsupported ops run on the CPU instead of failing)".into());
    }
    if d.cuda.is_some() {
        r.push("device cuda; precision bf16 is the fast mode, fp32 the exact one".into());
    }
    if d.cuda.is_none() && !d.mps {
        r.push("device cpu, precision fp32, model tiny or small for interactive use".into());
        if crate::device::cpu_native_bf16() {
            r.push("this CPU has native bf16: --precision bf16 is the CPU fast mode".into());
        } else {
            r.push("this CPU has no native bf16 (no avx512_bf16/amx_bf16): keep fp32, bf16 runs slower here".into());
        }
    }
    r
}

/// The knobs as `segment` would resolve them (config < `--tune` < environment), with what
/// did not apply. A config that does not load is reported here, not fatal: the doctor is
/// where one looks for why.
fn tuning(tune: &[(String, String)]) -> (Tuning, Vec<String>) {
    let mut notes = vec![];
    let flags = crate::config::EngineFlags { tune: tune.to_vec(), ..Default::default() };
    let config = flags.effective_config().unwrap_or_else(|e| {
        notes.push(format!("config not used: {e:#}"));
        let mut c = crate::config::Config::default();
        flags.apply(&mut c);
        c
    });
    let mut t = config.tuning;
    notes.extend(t.apply_env());
    (t, notes)
}

pub fn collect(rehearse: bool, checkpoint: Option<PathBuf>, tune: &[(String, String)]) -> Report {
    let (tuning, tuning_notes) = tuning(tune);
    let cuda_devices = tch::Cuda::device_count();
    let cuda =
        tch::Cuda::is_available().then(|| crate::worker::stats::cuda_device_name(0).unwrap_or_else(|| "cuda:0".into()));
    let devices = Devices {
        cpu_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        torch_threads: tch::get_num_threads(),
        cuda,
        cuda_devices,
        mps: tch::utils::has_mps(),
    };
    let ffmpeg = crate::media::library_versions();
    let environment = ENV_VARS.iter().filter_map(|k| env(k).map(|v| (k.to_string(), v))).collect();
    let mut rehearsal = vec![];
    if rehearse {
        let mut list = vec![DeviceChoice::Cpu];
        if devices.cuda.is_some() {
            list.push(DeviceChoice::Cuda);
        }
        if devices.mps {
            list.push(DeviceChoice::Mps);
        }
        for d in list {
            rehearsal.push(rehearse_on(d, checkpoint.clone(), &tuning));
        }
    }
    Report {
        recommended: recommend(&devices),
        devices,
        libtorch: crate::worker::stats::torch_version(),
        ffmpeg,
        terminal: guess_terminal(),
        environment,
        tuning: tuning.describe(),
        tuning_notes,
        rehearsal,
    }
}

/// A tiny generated clip: a square moving over a dark background.
fn tiny_clip(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames)?;
    for i in 0..4u32 {
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            if x.abs_diff(16 + 6 * i) < 8 && y.abs_diff(24) < 8 {
                image::Rgb([230, 200, 40])
            } else {
                image::Rgb([20, 30, 60])
            }
        });
        img.save(frames.join(format!("{i:05}.jpg")))?;
    }
    Ok(frames)
}

fn rehearse_on(device: DeviceChoice, checkpoint: Option<PathBuf>, tuning: &Tuning) -> Rehearsal {
    let mut r = Rehearsal {
        device: device.to_string(),
        outcome: String::new(),
        frames: 0,
        seconds: 0.0,
        crashes: vec![],
        errors: vec![],
    };
    let t = Instant::now();
    let result = (|| -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        // Without a checkpoint, rehearse on a random-init tiny one: the point is whether the
        // device survives the arithmetic, not what the masks mean.
        let checkpoint = match checkpoint {
            Some(c) => c,
            None => {
                let c = tmp.path().join("sam2.1_hiera_tiny.random-init.safetensors");
                crate::model::random_init::write_random_checkpoint(
                    &c,
                    crate::model::ModelSize::Tiny,
                    crate::model::ModelVersion::V2_1,
                    0,
                )?;
                c
            }
        };
        let mut o = SupervisorOptions::new(checkpoint, Some(tiny_clip(tmp.path())?))?;
        o.device = device;
        o.session_dir = tmp.path().join("session");
        o.restart.fallback.clear();
        o.restart.max_retries = 1;
        o.tuning = tuning.clone();
        for (k, v) in tuning.process_env() {
            o.set_env(&k, &v);
        }
        let mut h = start(o)?;
        h.send(EngineCommand::Op(crate::session::Op::AddPrompt {
            frame: 0,
            object: 1,
            points: vec![crate::session::Point::new(16.0, 24.0, true)],
            bbox: None,
        }));
        h.send(EngineCommand::Op(crate::session::Op::Propagate { start: None, reverse: false, max_frames: None }));
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            match h.recv_timeout(Duration::from_millis(200)) {
                Some(EngineEvent::Masks(_)) => r.frames += 1,
                Some(EngineEvent::WorkerDied { reason, .. }) => r.crashes.push(reason),
                Some(EngineEvent::Log { level: LogLevel::Error, message }) => r.errors.push(message),
                Some(EngineEvent::PropagationFinished { .. }) => {
                    r.outcome = "ok".into();
                    break;
                }
                Some(EngineEvent::State(EngineState::Stopped)) => break,
                _ => {}
            }
        }
        h.shutdown();
        Ok(())
    })();
    r.seconds = t.elapsed().as_secs_f32();
    if let Err(e) = result {
        r.errors.push(format!("{e:#}"));
    }
    if r.outcome.is_empty() {
        r.outcome = if r.crashes.is_empty() { "failed".into() } else { "crashed".into() };
    }
    r
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // A checkpoint given by name is checked up front (exit 2), not reported as a crash of
    // the rehearsal.
    if let Some(c) = &args.checkpoint {
        super::checks::checkpoint(c, None)?;
    }
    let report = collect(args.rehearse, args.checkpoint, &args.tune);
    let text = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { render(&report) };
    // A closed pipe (`doctor | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    macro_rules! println {
        ($($t:tt)*) => {{ let _ = writeln!(out, $($t)*); }};
    }
    let d = &report.devices;
    println!("devices");
    println!("  cpu     {} hardware threads, libtorch uses {}", d.cpu_threads, d.torch_threads);
    println!(
        "  cuda    {}",
        d.cuda.as_deref().map(|n| format!("{n} ({} devices)", d.cuda_devices)).unwrap_or("not available".into())
    );
    println!("  mps     {}", if d.mps { "available" } else { "not available" });
    if crate::device::emulating_mps() {
        println!(
            "  cpu     takes the MPS branches (SAM2_TUI_EMULATE_MPS=1): {}",
            crate::device::cpu_label(d.torch_threads)
        );
    }
    println!("libtorch  {}", report.libtorch);
    println!("ffmpeg    {}", report.ffmpeg.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
    let t = &report.terminal;
    println!(
        "terminal  graphics: {}{}{}",
        t.graphics_guess,
        if t.tmux { ", inside tmux" } else { "" },
        if t.ssh { ", over ssh" } else { "" }
    );
    for n in &t.notes {
        println!("          {n}");
    }
    println!("environment");
    if report.environment.is_empty() {
        println!("  (none of the relevant variables are set)");
    }
    for (k, v) in &report.environment {
        println!("  {k}={v}");
    }
    println!("tuning (default < config [tuning] < --tune < environment)");
    let width = report.tuning.iter().map(|k| k.name.len()).max().unwrap_or(0);
    for k in &report.tuning {
        let value = match k.value.as_str() {
            "" => "none".to_string(),
            "0" if k.name.ends_with("_depth") || k.name.ends_with("_batch") || k.name.ends_with("_threads") => {
                "0 (auto)".to_string()
            }
            v => v.to_string(),
        };
        println!("  {:<width$}  {:<10} {:<8} {}", k.name, value, k.source.to_string(), k.env);
    }
    for n in &report.tuning_notes {
        println!("  note: {n}");
    }
    println!("recommended");
    for r in &report.recommended {
        println!("  {r}");
    }
    if !report.rehearsal.is_empty() {
        println!("rehearsal");
        for r in &report.rehearsal {
            println!("  {:<5} {} ({} frames in {:.1}s)", r.device, r.outcome, r.frames, r.seconds);
            for c in &r.crashes {
                println!("        crash: {c}");
            }
            for e in &r.errors {
                println!("        error: {e}");
            }
        }
    }
    out
}
