//! `sam2-tui segment`: a video, frame folder or image in, masks out — headless, through
//! the same supervisor as the console, so an engine crash mid-run costs a restart, not
//! the run.
use super::checks;
use crate::cli::interrupt;
use crate::device::{DeviceChoice, PrecisionChoice};
use crate::media::output_dir::{OutputTarget, Staging};
use crate::media::outputs::{OutputWriter, VideoInfo};
use crate::model::config::{ModelSize, ModelVersion};
use crate::session::Journal;
use crate::supervisor::events::{EngineEvent, EngineState, LogLevel};
use crate::supervisor::{self, session_dirs, SupervisorOptions};
use crate::util::{bad_input, Interrupted};
use anyhow::{anyhow, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("ops").required(true).args(["prompts", "session"])))]
pub struct Args {
    /// Video file (anything FFmpeg reads), frame folder, or single image.
    pub input: PathBuf,
    /// Output folder: written next to it and swapped in whole; only a folder that
    /// sam2-tui wrote (or an empty one) is ever replaced.
    #[arg(long)]
    pub out: PathBuf,
    /// Short form: objects with points/box on a frame, then one forward propagation.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// A session journal (`{"version":1,"ops":[...]}`), run in order.
    #[arg(long)]
    pub session: Option<PathBuf>,
    /// Checkpoint file (default: the official file for --model in weights/).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[arg(long)]
    pub model: Option<ModelSize>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// auto: bf16 on CUDA, fp32 on the CPU and MPS (what the official demo uses).
    #[arg(long, default_value = "auto")]
    pub precision: PrecisionChoice,
    /// Also write float32 logits as logits/<object>/<frame:05>.npy.
    #[arg(long)]
    pub logits: bool,
    /// Also write the video with the masks blended in (put in place with the masks;
    /// an existing file is replaced only if the output being replaced wrote it).
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// Skip the reference's hole filling of small background holes.
    #[arg(long)]
    pub no_postprocess: bool,
    /// Model input size (1024 for the official models; smaller only for tests).
    #[arg(long, default_value_t = 1024, hide = true, value_parser = crate::model::config::parse_image_size)]
    pub image_size: i64,
    /// Keep the session journal and memory bank in this folder (default: a folder in
    /// the data directory, removed when the run ends).
    #[arg(long)]
    pub session_dir: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    // Everything that can be checked before the engine starts is checked here (see
    // `checks`), so bad input is one clear line, exit 2, and nothing is written.
    let source = crate::media::open(&a.input)?;
    let (width, height) = source.size();
    let video = VideoInfo { width, height, frames: source.len(), fps: source.fps(), source: a.input.display().to_string() };
    drop(source);
    let (ops_file, journal) = match (&a.prompts, &a.session) {
        (Some(p), _) => (p, Journal::load_prompts(p)?),
        (None, Some(s)) => (s, Journal::load(s)?),
        _ => return Err(bad_input("give --prompts FILE or --session FILE")),
    };
    checks::ops_for_video(&journal, ops_file, &video)?;
    checks::overlay_target(&a.overlay)?;
    let checkpoint = match &a.checkpoint {
        Some(c) => c.clone(),
        None => crate::weights::default_checkpoint(a.model.unwrap_or(ModelSize::Tiny), ModelVersion::V2_1),
    };
    // What sam2-tui may write, judged before the checkpoint is read: never the input,
    // never a folder or file it did not write itself.
    let target = OutputTarget::check(&a.out, a.overlay.as_deref(), &[&a.input, ops_file, &checkpoint])?;
    let det = checks::checkpoint(&checkpoint, a.model)?;
    interrupt::install();
    let staging = target.stage()?;

    let mut opts = SupervisorOptions::new(checkpoint.clone(), Some(absolute(&a.input)?))?;
    opts.size = Some(det.size);
    opts.version = Some(det.version);
    opts.device = a.device;
    opts.precision = a.precision;
    opts.image_size = a.image_size;
    opts.fill_holes = !a.no_postprocess;
    opts.initial_ops = journal.ops.clone();
    // A run without --session-dir keeps its journal and memory bank only while it runs.
    let one_shot = a.session_dir.is_none();
    match &a.session_dir {
        Some(d) => opts.session_dir = d.clone(),
        None => {
            session_dirs::sweep_one_shot(&session_dirs::root());
            session_dirs::mark_one_shot(&opts.session_dir)?;
        }
    }
    let session_dir = opts.session_dir.clone();
    let logits_dir = staging.path().join("logits");
    if a.logits {
        opts.set_env("SAM2_TUI_LOGITS_DIR", &logits_dir.to_string_lossy());
    }
    let result = track(&a, opts, &journal, &video, &det, &staging, &logits_dir);
    if one_shot {
        session_dirs::remove_one_shot(&session_dir);
    }
    let (n_masks, frames_done, restarts, label) = result?;
    // The last instant an interrupt can still leave everything as it was.
    if interrupt::requested() {
        return Err(anyhow::Error::new(Interrupted));
    }
    target.publish(staging)?;
    let secs = started.elapsed().as_secs_f32();
    eprintln!(
        "segment: {} masks over {} frames ({frames_done} tracked) in {secs:.1}s with {label}; {restarts} worker restart(s); wrote {}",
        n_masks,
        video.frames,
        target.out().display()
    );
    let _ = std::io::stderr().flush();
    Ok(())
}

/// Runs the journal under the supervisor and writes every output into `staging`:
/// (masks, frames tracked, worker restarts, model label).
fn track(
    a: &Args,
    opts: SupervisorOptions,
    journal: &Journal,
    video: &VideoInfo,
    det: &crate::weights::Detected,
    staging: &Staging,
    logits_dir: &Path,
) -> anyhow::Result<(usize, usize, u32, String)> {
    let n_ops = journal.ops.len();
    let mut sup = supervisor::start(opts)?;
    let mut restarts = 0u32;
    let mut frames_done = 0usize;
    let mut failure: Option<String> = None;
    let mut finished = 0usize;
    let progress_to_tty = atty_stderr();
    while finished < n_ops {
        if interrupt::requested() {
            break;
        }
        let Some(ev) = sup.recv_timeout(Duration::from_millis(200)) else { continue };
        match ev {
            EngineEvent::OpFinished { .. } => finished += 1,
            EngineEvent::OpFailed { index, message } => {
                failure = Some(format!("op {index} ({}) failed: {message}", op_name(&journal.ops[index])));
                break;
            }
            EngineEvent::Progress { done, total, fps, .. } => {
                frames_done += 1;
                let eta = if fps > 0.0 { (total.saturating_sub(done)) as f32 / fps } else { 0.0 };
                let line = format!("segment: {done}/{total} frames  {fps:.2} FPS  ETA {eta:.0}s");
                if progress_to_tty {
                    eprint!("\r{line}   ");
                } else if done == total || done % 25 == 0 {
                    eprintln!("{line}");
                }
            }
            EngineEvent::WorkerDied { reason, stderr_tail } => {
                restarts += 1;
                let last = stderr_tail.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default();
                eprintln!("\nsegment: engine worker died: {reason} (last words: {last}); restarting and resuming");
            }
            EngineEvent::FellBack { from, to, reason } => eprintln!("\nsegment: fell back from {from} to {to}: {reason}"),
            EngineEvent::State(EngineState::Stopped) => {
                failure = Some("the engine stopped: every rung of the fallback ladder failed (see the log)".into());
                break;
            }
            EngineEvent::Log { level: LogLevel::Error, message } => {
                eprintln!("\nsegment: {message}");
            }
            _ => {}
        }
    }
    if progress_to_tty {
        eprintln!();
    }
    let masks = sup.masks.clone();
    sup.shutdown();
    if interrupt::requested() {
        return Err(anyhow::Error::new(Interrupted));
    }
    if let Some(f) = failure {
        bail!("{}: {f}", a.input.display());
    }

    // Outputs: from the supervisor's store of finished masks (latest per frame/object).
    let label = format!("SAM {} {}", det.version, det.size);
    let mut writer = OutputWriter::new(staging.path(), video.clone(), &label, false)?;
    let store = masks.lock().unwrap_or_else(|p| p.into_inner());
    for ((frame, object), m) in store.iter() {
        writer.add_rle(*frame, *object, m.rle.clone(), m.score)?;
    }
    let n_masks = store.len();
    writer.finish()?;
    if a.logits {
        check_logits(logits_dir, &store, video)?;
    }
    if let Some(path) = staging.overlay_path() {
        write_overlay(&a.input, path, video, &store)?;
    }
    Ok((n_masks, frames_done, restarts, label))
}

/// Every mask in masks.json has its logits file, whole; files of objects removed later
/// in the journal are dropped so that the folder says what masks.json says.
fn check_logits(dir: &Path, store: &crate::supervisor::store::MaskStore, video: &VideoInfo) -> anyhow::Result<()> {
    let want = crate::media::npy::f32_array_len(&[video.height as usize, video.width as usize]) as u64;
    for ((frame, object), _) in store.iter() {
        let path = dir.join(object.to_string()).join(format!("{frame:05}.npy"));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        anyhow::ensure!(len == want, "{}: --logits output missing or incomplete ({len} of {want} bytes)", path.display());
    }
    for obj in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let kept = obj.file_name().to_str().and_then(|n| n.parse::<u32>().ok()).is_some_and(|id| store.iter().any(|((_, o), _)| *o == id));
        if !kept {
            std::fs::remove_dir_all(obj.path())?;
        }
    }
    Ok(())
}

fn op_name(op: &crate::session::Op) -> &'static str {
    use crate::session::Op;
    match op {
        Op::AddPrompt { .. } => "add_prompt",
        Op::Propagate { .. } => "propagate",
        Op::ClearFrame { .. } => "clear_frame",
        Op::RemoveObject { .. } => "remove_object",
        Op::Reset => "reset",
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) })
}

fn atty_stderr() -> bool {
    unsafe { libc::isatty(2) == 1 }
}

fn write_overlay(input: &Path, path: &Path, video: &VideoInfo, store: &crate::supervisor::store::MaskStore) -> anyhow::Result<()> {
    let mut source = crate::media::open(input)?;
    let mut writer = crate::media::overlay::OverlayWriter::create(path, video.width, video.height, video.fps)?;
    for frame in 0..video.frames {
        let img = source.frame(frame)?;
        let decoded: Vec<(u32, Vec<u8>)> = store
            .iter()
            .filter(|((f, _), _)| *f == frame)
            .map(|((_, o), m)| Ok((*o, m.rle.decode().map_err(|e| anyhow!(e))?)))
            .collect::<anyhow::Result<_>>()?;
        let masks: Vec<(u32, &[u8])> = decoded.iter().map(|(o, m)| (*o, m.as_slice())).collect();
        writer.write(&img, &masks)?;
    }
    writer.finish()?;
    Ok(())
}
