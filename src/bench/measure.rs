//! One bench row: a supervised propagation of one model on one device. The ops are one
//! click per object on frame 0 then `runs` forward propagations in the same worker (as the reference
//! benchmark loops `propagate_in_video` on one state), so a warm-up run warms the very
//! process that is measured. Everything is read from the supervisor's events, so a worker
//! crash is counted (the supervisor restarts it and resumes) rather than ending the bench.
use super::median;
use crate::device::{DeviceChoice, Precision};
use crate::model::config::{ModelSize, ModelVersion};
use crate::session::{Op, Point};
use crate::supervisor;
use crate::supervisor::events::{EngineEvent, EngineState, LogLevel, StageTimings};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RowSpec {
    /// The config the row's engine starts from (as every command's does).
    pub config: crate::config::Config,
    pub size: ModelSize,
    pub device: DeviceChoice,
    pub precision: Precision,
    pub image_size: i64,
    pub checkpoint: PathBuf,
    pub random_init: bool,
    pub frames_dir: PathBuf,
    /// One positive click per object (objects 1, 2, …) on frame 0.
    pub clicks: Vec<(f32, f32)>,
    pub runs: usize,
    /// Leading runs left out of the medians (CUDA: kernels load, allocator grows).
    pub warmup: usize,
    pub threads: Option<usize>,
    /// Gives up on the row when no event arrives for this long (the supervisor's own
    /// watchdog normally acts first).
    pub stall_timeout: Duration,
}

/// Per-stage latency of a frame, in milliseconds (medians over the measured frames).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StageMs {
    pub decode: f64,
    pub image_encoder: f64,
    pub memory_attention: f64,
    pub mask_decoder: f64,
    pub memory_encoder: f64,
    /// The host's share of writing a frame out (`StageTimings::write_out_ms`), and its
    /// parts: hole filling, the memory bank's write-through, the masks to video size.
    pub write_out: f64,
    pub fill_holes: f64,
    pub bank_write: f64,
    pub to_video: f64,
    pub total: f64,
}

impl StageMs {
    pub fn median_of(timings: &[StageTimings]) -> Option<StageMs> {
        let m = |f: fn(&StageTimings) -> f32| median(&timings.iter().map(|t| f(t) as f64).collect::<Vec<_>>());
        Some(StageMs {
            decode: m(|t| t.decode_ms)?,
            image_encoder: m(|t| t.image_encoder_ms)?,
            memory_attention: m(|t| t.memory_attention_ms)?,
            mask_decoder: m(|t| t.mask_decoder_ms)?,
            memory_encoder: m(|t| t.memory_encoder_ms)?,
            write_out: m(|t| t.write_out_ms)?,
            fill_holes: m(|t| t.fill_holes_ms)?,
            bank_write: m(|t| t.bank_write_ms)?,
            to_video: m(|t| t.to_video_ms)?,
            total: m(|t| t.total_ms)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// Every op finished (crashes may still have happened and been recovered from).
    Ok,
    /// The device is not present on this machine (or in this build of libtorch).
    Unavailable,
    /// The row could not be measured; `error` says why.
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct RowResult {
    pub size: ModelSize,
    pub device: DeviceChoice,
    pub precision: Precision,
    /// Objects tracked (one click each on frame 0).
    pub objects: usize,
    pub status: RowStatus,
    pub checkpoint: Option<String>,
    /// True when the weights are random-init (same cost, meaningless masks).
    pub random_init: bool,
    pub frames: usize,
    /// Propagation frames per second: median over the measured runs.
    pub fps: Option<f64>,
    /// Every run's FPS, warm-up runs included (they come first).
    pub fps_runs: Vec<f64>,
    pub warmup_runs: usize,
    pub stages_ms: Option<StageMs>,
    /// The last propagation's time per frame in order (ms between consecutive outputs):
    /// where the medians hide the ramp-up while the memory bank fills.
    pub frame_ms: Vec<f64>,
    /// From supervisor start (worker spawn, model load, first frame) to the click's mask.
    pub time_to_first_mask_s: Option<f64>,
    /// Click-to-mask latency on an already-encoded frame (decoder only, as when the
    /// console has encoded the frame under the cursor): median over the repeated clicks
    /// that follow the propagations, from the previous op's end to this one's (the ops
    /// are queued back to back, so this includes the pipe both ways).
    pub click_ms: Option<f64>,
    /// From supervisor start to the end of the first propagation.
    pub whole_run_s: Option<f64>,
    /// The worker's peak resident memory (VmHWM when readable, else the heartbeats' max).
    pub peak_rss_bytes: Option<u64>,
    /// The CUDA caching allocator's peak allocated bytes.
    pub cuda_peak_allocated_bytes: Option<u64>,
    pub device_name: Option<String>,
    pub threads: Option<i32>,
    /// How each worker that died went (signal name or exit status).
    pub crashes: Vec<String>,
    pub error: Option<String>,
    /// The official predictor on the same frames, when `--reference` asked for it.
    pub reference: Option<super::reference::ReferenceResult>,
}

impl RowResult {
    pub fn empty(size: ModelSize, device: DeviceChoice, precision: Precision, status: RowStatus) -> Self {
        RowResult {
            size,
            device,
            precision,
            objects: 1,
            status,
            checkpoint: None,
            random_init: false,
            frames: 0,
            fps: None,
            fps_runs: vec![],
            warmup_runs: 0,
            stages_ms: None,
            frame_ms: vec![],
            time_to_first_mask_s: None,
            click_ms: None,
            whole_run_s: None,
            peak_rss_bytes: None,
            cuda_peak_allocated_bytes: None,
            device_name: None,
            threads: None,
            crashes: vec![],
            error: None,
            reference: None,
        }
    }

    pub fn unavailable(size: ModelSize, device: DeviceChoice, precision: Precision, why: &str) -> Self {
        let mut r = Self::empty(size, device, precision, RowStatus::Unavailable);
        r.error = Some(why.to_string());
        r
    }
}

/// Runs one row. Errors that stop the row become `status: failed` with the reason.
/// Clicks on an already-encoded frame whose latency is measured.
const CLICKS: usize = 5;

pub fn measure(spec: &RowSpec, version: ModelVersion) -> RowResult {
    let mut row = RowResult::empty(spec.size, spec.device, spec.precision, RowStatus::Ok);
    row.objects = spec.clicks.len();
    row.checkpoint = Some(spec.checkpoint.display().to_string());
    row.random_init = spec.random_init;
    row.warmup_runs = spec.warmup.min(spec.runs.saturating_sub(1));
    if let Err(e) = run(spec, version, &mut row) {
        row.status = RowStatus::Failed;
        row.error = Some(format!("{e:#}"));
    }
    row
}

/// The worker's options for a row: its model, device, precision and threads, session
/// files under `session_dir`. The bench of one video and `--streams` both start from it.
pub(super) fn worker_options(
    spec: &RowSpec,
    version: ModelVersion,
    session_dir: &std::path::Path,
) -> anyhow::Result<supervisor::SupervisorOptions> {
    let mut opts =
        crate::config::supervisor_options(&spec.config, spec.checkpoint.clone(), Some(&spec.frames_dir), vec![])?;
    opts.size = Some(spec.size);
    opts.version = Some(version);
    opts.device = spec.device;
    opts.precision = spec.precision.into();
    opts.image_size = spec.image_size;
    opts.session_dir = session_dir.to_path_buf();
    // A row measures one device: falling back to the CPU would report the wrong thing.
    opts.restart.fallback.clear();
    opts.restart.smaller_model = false;
    if let Some(t) = spec.threads {
        opts.set_env("OMP_NUM_THREADS", &t.to_string());
        opts.set_env("MKL_NUM_THREADS", &t.to_string());
    }
    // A crash is reported by its panic line, which a backtrace would push out of the
    // stderr tail the supervisor keeps.
    opts.set_env("RUST_BACKTRACE", "0");
    Ok(opts)
}

fn run(spec: &RowSpec, version: ModelVersion, row: &mut RowResult) -> anyhow::Result<()> {
    let session = tempfile::Builder::new().prefix("sam2-tui-bench-").tempdir()?;
    let mut opts = worker_options(spec, version, session.path())?;
    anyhow::ensure!(
        (1..crate::limits::MAX_OBJECT_ID as usize).contains(&spec.clicks.len()),
        "{} objects: the bench tracks 1 to {}",
        spec.clicks.len(),
        crate::limits::MAX_OBJECT_ID - 1
    );
    let click = |object: usize, (x, y): (f32, f32)| Op::AddPrompt {
        frame: 0,
        object: object as u32,
        points: vec![Point::new(x, y, true)],
        bbox: None,
    };
    // The objects' clicks come first: ops 0..first.
    let first = spec.clicks.len();
    // After the propagations, clicks for one more object on frame 0: the first re-encodes
    // the frame; the CLICKS after it find it encoded and, the object being new there
    // (an initial conditioning frame), run only the prompt encoder and mask decoder — a
    // click on a tracked frame would be a correction, which also runs memory attention.
    opts.initial_ops = spec
        .clicks
        .iter()
        .enumerate()
        .map(|(i, &xy)| click(i + 1, xy))
        .chain((0..spec.runs).map(|_| Op::Propagate { start: None, reverse: false, max_frames: None }))
        .chain(std::iter::repeat_n(click(first + 1, spec.clicks[0]), 1 + CLICKS))
        .collect();
    let n_ops = opts.initial_ops.len();

    let started = Instant::now();
    let mut sup = supervisor::start(opts)?;
    let mut op_ended: Vec<Instant> = vec![];
    let mut frames_in_run = vec![0usize; spec.runs];
    let mut timings: Vec<StageTimings> = vec![];
    let mut first_mask: Option<Instant> = None;
    let mut worker_pid: Option<u32> = None;
    let mut peak_hwm = 0u64;
    let mut last_event = Instant::now();
    let outcome: anyhow::Result<()> = loop {
        if op_ended.len() >= n_ops {
            break Ok(());
        }
        let Some(ev) = sup.recv_timeout(Duration::from_millis(200)) else {
            if sup.has_ended() {
                break Err(anyhow::anyhow!("the supervisor ended without finishing the ops"));
            }
            if last_event.elapsed() > spec.stall_timeout {
                break Err(anyhow::anyhow!("no word from the engine for {:.0}s", spec.stall_timeout.as_secs_f32()));
            }
            continue;
        };
        last_event = Instant::now();
        match ev {
            EngineEvent::WorkerStarted { pid, .. } => worker_pid = Some(pid),
            EngineEvent::Masks(_) if first_mask.is_none() => first_mask = Some(Instant::now()),
            EngineEvent::Progress { timings: t, .. } => {
                // Ops finish in order: the propagation under way is op `op_ended.len()`.
                if let Some(run) = op_ended.len().checked_sub(first) {
                    if run < spec.runs {
                        frames_in_run[run] += 1;
                        if run + 1 == spec.runs {
                            row.frame_ms.push(t.total_ms as f64);
                        }
                        if run >= row.warmup_runs {
                            timings.push(t);
                        }
                    }
                }
                if let Some(pid) = worker_pid {
                    peak_hwm = peak_hwm.max(vm_hwm(pid).unwrap_or(0));
                }
            }
            EngineEvent::Stats(s) => {
                row.peak_rss_bytes = Some(row.peak_rss_bytes.unwrap_or(0).max(s.rss_bytes));
                if let Some(c) = &s.cuda {
                    row.cuda_peak_allocated_bytes =
                        Some(row.cuda_peak_allocated_bytes.unwrap_or(0).max(c.peak_allocated));
                }
                if !s.device_name.is_empty() {
                    row.device_name = Some(s.device_name.clone());
                }
                row.threads = Some(s.threads);
                if let Some(pid) = worker_pid {
                    peak_hwm = peak_hwm.max(vm_hwm(pid).unwrap_or(0));
                }
            }
            EngineEvent::OpFinished { index, cancelled } => {
                if cancelled {
                    break Err(anyhow::anyhow!("op {index} was cancelled"));
                }
                if let Some(pid) = worker_pid {
                    peak_hwm = peak_hwm.max(vm_hwm(pid).unwrap_or(0));
                }
                op_ended.push(Instant::now());
            }
            EngineEvent::OpFailed { index, message } => break Err(anyhow::anyhow!("op {index} failed: {message}")),
            EngineEvent::WorkerDied { reason, stderr_tail } => {
                // The worker's last words (a panic message, a CUDA error) say more than
                // its exit status.
                match last_words(&stderr_tail) {
                    Some(words) => row.crashes.push(format!("{reason}: {words}")),
                    None => row.crashes.push(reason),
                }
            }
            EngineEvent::FellBack { from, to, reason } => {
                break Err(anyhow::anyhow!("fell back from {from} to {to}: {reason}"))
            }
            EngineEvent::State(EngineState::Stopped) => {
                break Err(anyhow::anyhow!(
                    "the engine stopped: {}",
                    row.crashes.last().map(String::as_str).unwrap_or("see the log")
                ))
            }
            EngineEvent::Log { level: LogLevel::Error, message } => tracing::warn!("bench: {message}"),
            _ => {}
        }
    };
    sup.shutdown();
    outcome?;

    row.peak_rss_bytes = row.peak_rss_bytes.max((peak_hwm > 0).then_some(peak_hwm));
    row.time_to_first_mask_s = first_mask.map(|t| (t - started).as_secs_f64());
    row.whole_run_s = op_ended.get(first).map(|t| (*t - started).as_secs_f64());
    row.fps_runs = (0..spec.runs)
        .map(|r| {
            let secs = (op_ended[first + r] - op_ended[first + r - 1]).as_secs_f64();
            frames_in_run[r] as f64 / secs
        })
        .collect();
    row.frames = frames_in_run.first().copied().unwrap_or(0);
    row.fps = median(&row.fps_runs[row.warmup_runs..]);
    let clicks: Vec<f64> =
        op_ended.windows(2).skip(first + spec.runs).map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0).collect();
    row.click_ms = median(&clicks);
    row.stages_ms = StageMs::median_of(&timings);
    anyhow::ensure!(row.frames > 0, "the propagation produced no frames");
    Ok(())
}

/// A panic's location and message (`thread … panicked at FILE:LINE:COL:` then the message,
/// before any backtrace), else the last line that is not backtrace noise.
fn last_words(stderr: &[String]) -> Option<String> {
    if let Some(i) = stderr.iter().rposition(|l| l.contains("panicked at")) {
        let at = stderr[i].split("panicked at").nth(1).unwrap_or("").trim().trim_end_matches(':');
        // Torch errors carry their C++ stack after an escaped newline: keep the first line.
        let msg = stderr.get(i + 1).map(|m| m.trim()).unwrap_or("");
        let msg = msg.split("\\n").next().unwrap_or(msg);
        return Some(format!("panicked at {at}: {msg}"));
    }
    stderr
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("note:")
                && !l.starts_with("at ")
                && !l.starts_with(|c: char| c.is_ascii_digit())
        })
        .map(str::to_string)
}

/// The peak resident set of a process (`VmHWM`), while it still exists.
fn vm_hwm(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::last_words;

    #[test]
    fn a_dead_workers_last_words_are_its_panic_not_the_backtrace_note() {
        let tail: Vec<String> = [
            "thread 'main' panicked at src/model/layers.rs:42:9:",
            "expected BFloat16 but got Float",
            "stack backtrace:",
            "   0: rust_begin_unwind",
            "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(last_words(&tail).unwrap(), "panicked at src/model/layers.rs:42:9: expected BFloat16 but got Float");
        assert_eq!(last_words(&["CUDA error: out of memory".into(), "".into()]).unwrap(), "CUDA error: out of memory");
        assert_eq!(last_words(&[]), None);
    }
}
