//! One segmentation job — an input and its prompts or session in, a published output
//! folder out — shared by `segment` (one job) and `batch` (one per manifest item), so
//! both give the same guarantees: bad input judged before any model work, outputs staged
//! and swapped in whole, a worker crash replayed, an interrupt leaving nothing.
//! `streams` runs several jobs in one worker.
pub mod streams;
use crate::cli::interrupt;
use crate::config::{Config, EngineFlags};
use crate::device::{DeviceChoice, Precision};
use crate::media::output_dir::{OutputTarget, Staging};
use crate::media::outputs::{OutputWriter, VideoInfo};
use crate::model::config::ModelSize;
use crate::session::Journal;
use crate::supervisor::events::{EngineEvent, EngineState, LogLevel};
use crate::supervisor::store::MaskStore;
use crate::supervisor::{self, session_dirs, SupervisorOptions};
use crate::util::Interrupted;
use anyhow::{anyhow, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The flags of a segmentation job (`segment`, `batch`): the engine settings every command
/// shares (over the config file), plus what only a job writes.
#[derive(clap::Args, Debug, Clone)]
pub struct JobFlags {
    #[command(flatten)]
    pub engine: EngineFlags,
    /// Also write float32 logits as logits/<object>/<frame:05>.npy.
    #[arg(long)]
    pub logits: bool,
    /// Skip the reference's hole filling of small background holes.
    #[arg(long)]
    pub no_postprocess: bool,
}

/// Where a job's ops come from.
#[derive(Clone, Debug)]
pub enum OpsFile {
    /// The short form `{"objects":[...]}`.
    Prompts(PathBuf),
    /// A session journal `{"version":1,"ops":[...]}`.
    Session(PathBuf),
}

impl OpsFile {
    pub fn path(&self) -> &Path {
        match self {
            OpsFile::Prompts(p) | OpsFile::Session(p) => p,
        }
    }
}

/// Everything one job needs.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub input: PathBuf,
    pub ops: OpsFile,
    pub out: PathBuf,
    /// The config file with the command's flags applied: device, precision, model,
    /// checkpoint, the supervisor's policies.
    pub config: Config,
    /// A batch item's own checkpoint, over the config's.
    pub checkpoint: Option<PathBuf>,
    /// The model asked for by name (flag or batch item): the checkpoint must be it.
    pub model: Option<ModelSize>,
    pub logits: bool,
    pub overlay: Option<PathBuf>,
    pub fill_holes: bool,
    pub session_dir: Option<PathBuf>,
    /// Extra environment for the worker (e.g. `CUDA_VISIBLE_DEVICES` per batch worker).
    pub env: Vec<(String, String)>,
}

/// A job whose input, ops, output folder and checkpoint have been judged: nothing has
/// been written yet.
pub struct Prepared {
    spec: JobSpec,
    video: VideoInfo,
    journal: Journal,
    target: OutputTarget,
    checkpoint: PathBuf,
    det: crate::weights::Detected,
}

impl Prepared {
    pub fn frames(&self) -> usize {
        self.video.frames
    }

    /// The supervisor's options for this job's model and device: the config's, with what
    /// the checkpoint says it is (the file wins over the config's model name), the hole
    /// filling and the job's extra environment.
    fn worker_options(&self, media: Option<&Path>, ops: Vec<crate::session::Op>) -> anyhow::Result<SupervisorOptions> {
        let a = &self.spec;
        let mut opts = crate::config::supervisor_options(&a.config, self.checkpoint.clone(), media, ops)?;
        opts.size = Some(self.det.size);
        opts.version = Some(self.det.version);
        opts.fill_holes = a.fill_holes;
        for (k, v) in &a.env {
            opts.set_env(k, v);
        }
        Ok(opts)
    }

    /// What the worker this job needs is started with (`streams::execute_group`: jobs
    /// share a worker only where this is the same).
    pub fn worker_key(&self) -> String {
        match self.worker_options(None, vec![]) {
            Ok(opts) => format!("{}|logits={}", worker_key(&opts), self.spec.logits),
            Err(e) => format!("{e:#}"),
        }
    }
}

/// What a worker is started with: jobs that differ in it cannot share one.
fn worker_key(opts: &SupervisorOptions) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}|{:?}|{:?}|{}",
        opts.checkpoint,
        opts.size,
        opts.version,
        opts.device,
        opts.precision,
        opts.image_size,
        opts.fill_holes,
        opts.env,
        opts.worker_command,
        opts.restart,
        serde_json::to_string(&opts.tuning).unwrap_or_default()
    )
}

/// Gives `opts` a session folder of its own that lives only while this run does (its
/// journal and memory bank), and sweeps those that dead runs left.
fn one_shot_session_dir(opts: &mut SupervisorOptions) -> anyhow::Result<()> {
    // Numbered, so that batch workers starting in the same millisecond differ.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = opts.session_dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    opts.session_dir = opts.session_dir.with_file_name(format!("{name}-{n}"));
    session_dirs::sweep_one_shot(&session_dirs::root());
    session_dirs::mark_one_shot(&opts.session_dir)
}

/// What a finished job did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub masks: usize,
    pub frames: usize,
    pub frames_tracked: usize,
    pub restarts: u32,
    pub model_label: String,
    pub seconds: f32,
    pub out: PathBuf,
}

/// A frame delivered: (done, total, fps).
pub type OnFrame<'a> = &'a mut dyn FnMut(usize, usize, f32);

/// Checks everything that can be checked before the engine starts, so bad input is one
/// clear `BadInput` line and nothing is written.
pub fn prepare(spec: JobSpec) -> anyhow::Result<Prepared> {
    let source = crate::media::open(&spec.input)?;
    let (width, height) = source.size();
    let video =
        VideoInfo { width, height, frames: source.len(), fps: source.fps(), source: spec.input.display().to_string() };
    drop(source);
    let journal = match &spec.ops {
        OpsFile::Prompts(p) => Journal::load_prompts(p)?,
        OpsFile::Session(s) => Journal::load(s)?,
    };
    super::checks::ops_for_video(&journal, spec.ops.path(), &video)?;
    super::checks::overlay_target(&spec.overlay)?;
    let e = &spec.config.engine;
    let checkpoint = match spec.checkpoint.as_ref().or(e.checkpoint.as_ref()) {
        Some(c) => c.clone(),
        None => crate::weights::default_checkpoint(spec.model.unwrap_or(e.model), e.version),
    };
    // What sam2-tui may write, judged before the checkpoint is read: never the input,
    // never a folder or file it did not write itself.
    let target = OutputTarget::check(&spec.out, spec.overlay.as_deref(), &[&spec.input, spec.ops.path(), &checkpoint])?;
    let det = super::checks::checkpoint(&checkpoint, spec.model)?;
    Ok(Prepared { spec, video, journal, target, checkpoint, det })
}

/// A supervisor kept from one job to the next (`batch`): its worker keeps the model
/// loaded, so an item costs its frames, not a model load.
pub struct Engine {
    sup: supervisor::SupervisorHandle,
    /// What the worker was started with; a job that needs anything else gets a new one.
    key: String,
}

impl Engine {
    pub fn shutdown(self) {
        self.sup.shutdown();
    }
}

/// Runs a prepared job under the supervisor and publishes its outputs. The caller
/// installs the interrupt handlers (`interrupt::install`) before. `engine` is the
/// supervisor an earlier job left (reused when it runs the same model the same way) and
/// receives this job's, still running, when it ended well; the caller shuts it down.
pub fn execute(p: &Prepared, engine: &mut Option<Engine>, on_frame: OnFrame) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let staging = p.target.stage()?;
    let a = &p.spec;
    let mut opts = p.worker_options(Some(&absolute(&a.input)?), p.journal.ops.clone())?;
    // A run without --session-dir keeps its journal and memory bank only while it runs.
    let one_shot = a.session_dir.is_none();
    match &a.session_dir {
        Some(d) => opts.session_dir = d.clone(),
        None => one_shot_session_dir(&mut opts)?,
    }
    let session_dir = opts.session_dir.clone();
    let logits_dir = staging.path().join("logits");
    // Logits go into the output this job stages, or nowhere: the job owns the knob. It is
    // also the worker's environment, which the worker applies on top of the protocol's
    // knobs, so an inherited SAM2_TUI_LOGITS_DIR cannot send them elsewhere.
    opts.tuning.logits_dir = a.logits.then(|| logits_dir.clone());
    let logits_env = if a.logits { logits_dir.to_string_lossy().into_owned() } else { String::new() };
    opts.set_env("SAM2_TUI_LOGITS_DIR", &logits_env);
    // The logits folder is fixed when the worker loads the model: such a job gets a worker
    // of its own. So does one with other knobs.
    let key = worker_key(&opts);
    let reusable = !a.logits;
    let previous = match engine.take() {
        Some(e) if reusable && e.key == key => Some(e),
        Some(stale) => {
            stale.shutdown();
            None
        }
        None => None,
    };
    let result = (|| {
        let sup = match previous {
            Some(mut e) => {
                e.sup.next_item(absolute(&a.input)?, opts.session_dir.clone(), opts.initial_ops.clone())?;
                e.sup
            }
            None => supervisor::start(opts)?,
        };
        let mut e = Engine { sup, key };
        match track(p, &mut e.sup, &staging, &logits_dir, on_frame) {
            Ok(r) if reusable => {
                *engine = Some(e);
                Ok(r)
            }
            other => {
                e.shutdown();
                other
            }
        }
    })();
    if one_shot {
        session_dirs::remove_one_shot(&session_dir);
    }
    let (masks, frames_tracked, restarts, model_label) = result?;
    publish(p, staging, Outcome::new(p, masks, frames_tracked, restarts, model_label, started))
}

impl Outcome {
    fn new(
        p: &Prepared,
        masks: usize,
        frames_tracked: usize,
        restarts: u32,
        model_label: String,
        started: Instant,
    ) -> Self {
        Outcome {
            masks,
            frames: p.video.frames,
            frames_tracked,
            restarts,
            model_label,
            seconds: started.elapsed().as_secs_f32(),
            out: p.target.out().to_path_buf(),
        }
    }
}

/// Swaps a job's staged outputs in, unless an interrupt came: the last instant one can
/// still leave everything as it was.
fn publish(p: &Prepared, staging: Staging, outcome: Outcome) -> anyhow::Result<Outcome> {
    if interrupt::requested() {
        return Err(anyhow::Error::new(Interrupted));
    }
    p.target.publish(staging)?;
    Ok(outcome)
}

/// Runs the journal under the supervisor and writes every output into `staging`:
/// (masks, frames tracked, worker restarts, model label).
fn track(
    p: &Prepared,
    sup: &mut supervisor::SupervisorHandle,
    staging: &Staging,
    logits_dir: &Path,
    on_frame: OnFrame,
) -> anyhow::Result<(usize, usize, u32, String)> {
    let (a, journal) = (&p.spec, &p.journal);
    let n_ops = journal.ops.len();
    let mut restarts = 0u32;
    let mut ran_on: Option<(DeviceChoice, Precision)> = None;
    let mut frames_done = 0usize;
    let mut failure: Option<String> = None;
    let mut finished = 0usize;
    while finished < n_ops {
        if interrupt::requested() {
            break;
        }
        let Some(ev) = sup.recv_timeout(Duration::from_millis(200)) else {
            if sup.has_ended() {
                // Only a bug in the supervisor ends it without saying why (a panic).
                failure = Some("the supervisor ended without finishing the ops (see the log)".into());
                break;
            }
            continue;
        };
        match ev {
            EngineEvent::OpFinished { .. } => finished += 1,
            EngineEvent::WorkerStarted { device, precision, .. } => ran_on = Some((device, precision)),
            EngineEvent::OpFailed { index, message } => {
                failure = Some(format!("op {index} ({}) failed: {message}", op_name(&journal.ops[index])));
                break;
            }
            EngineEvent::Progress { done, total, fps, .. } => {
                frames_done += 1;
                on_frame(done, total, fps);
            }
            // A signal to the whole process group (Ctrl-C, scancel) reaches the worker
            // too: that is the interrupt, not a crash to report.
            EngineEvent::WorkerDied { .. } if interrupt::requested() => break,
            EngineEvent::WorkerDied { reason, stderr_tail } => {
                restarts += 1;
                let last = stderr_tail.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default();
                eprintln!(
                    "\n{}: engine worker died: {reason} (last words: {last}); restarting and resuming",
                    a.input.display()
                );
            }
            EngineEvent::FellBack { from, to, reason } => {
                eprintln!("\n{}: fell back from {from} to {to}: {reason}", a.input.display())
            }
            EngineEvent::State(EngineState::Stopped) => {
                failure = Some("the engine stopped: every rung of the fallback ladder failed (see the log)".into());
                break;
            }
            EngineEvent::Log { level: LogLevel::Error, message } => {
                eprintln!("\n{}: {message}", a.input.display());
            }
            _ => {}
        }
    }
    let masks = sup.masks.clone();
    if interrupt::requested() {
        return Err(anyhow::Error::new(Interrupted));
    }
    if let Some(f) = failure {
        bail!("{}: {f}", a.input.display());
    }

    let store = masks.lock().unwrap_or_else(|p| p.into_inner());
    let (n_masks, label) = write_outputs(p, staging, &store, ran_on, restarts, logits_dir)?;
    Ok((n_masks, frames_done, restarts, label))
}

/// Writes a finished job's outputs into `staging` from its store of finished masks
/// (latest per frame and object): masks.json with the engine it ran on, the logits'
/// check, the overlay. Returns (masks, model label).
fn write_outputs(
    p: &Prepared,
    staging: &Staging,
    store: &MaskStore,
    ran_on: Option<(DeviceChoice, Precision)>,
    restarts: u32,
    logits_dir: &Path,
) -> anyhow::Result<(usize, String)> {
    let (a, video, det) = (&p.spec, &p.video, &p.det);
    let label = format!("SAM {} {}", det.version, det.size);
    let mut writer = OutputWriter::new(staging.path(), video.clone(), &label, false)?;
    writer.defer_annotations();
    if let Some((device, precision)) = ran_on {
        writer.set_engine(crate::media::outputs::EngineInfo { device, precision, worker_restarts: restarts });
    }
    for ((frame, object), m) in store.iter() {
        writer.add_rle(*frame, *object, m.rle.clone(), m.score)?;
    }
    writer.finish()?;
    if a.logits {
        check_logits(logits_dir, store, video)?;
    }
    if let Some(path) = staging.overlay_path() {
        write_overlay(&a.input, path, video, store)?;
    }
    Ok((store.len(), label))
}

/// Every mask in masks.json has its logits file, whole; files of objects removed later
/// in the journal are dropped so that the folder says what masks.json says.
fn check_logits(dir: &Path, store: &MaskStore, video: &VideoInfo) -> anyhow::Result<()> {
    let want = crate::media::npy::f32_array_len(&[video.height as usize, video.width as usize]) as u64;
    for ((frame, object), _) in store.iter() {
        let path = dir.join(object.to_string()).join(format!("{frame:05}.npy"));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        anyhow::ensure!(
            len == want,
            "{}: --logits output missing or incomplete ({len} of {want} bytes)",
            path.display()
        );
    }
    for obj in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let kept = obj
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|id| store.iter().any(|((_, o), _)| *o == id));
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

pub fn atty_stderr() -> bool {
    // SAFETY: isatty only inspects a file descriptor number.
    unsafe { libc::isatty(2) == 1 }
}

fn write_overlay(input: &Path, path: &Path, video: &VideoInfo, store: &MaskStore) -> anyhow::Result<()> {
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
