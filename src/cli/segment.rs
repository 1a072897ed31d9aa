//! `sam2-tui segment`: a video, frame folder or image in, masks out — headless, through
//! the same supervisor as the console, so an engine crash mid-run costs a restart, not
//! the run.
use crate::cli::interrupt;
use crate::cli::job::{self, JobFlags, JobSpec, OpsFile};
use crate::util::bad_input;
use std::io::Write;
use std::path::PathBuf;

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
    #[command(flatten)]
    pub job: JobFlags,
    /// Also write the video with the masks blended in (put in place with the masks;
    /// an existing file is replaced only if the output being replaced wrote it).
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// Keep the session journal and memory bank in this folder (default: a folder in
    /// the data directory, removed when the run ends).
    #[arg(long)]
    pub session_dir: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let ops = match (&a.prompts, &a.session) {
        (Some(p), _) => OpsFile::Prompts(p.clone()),
        (None, Some(s)) => OpsFile::Session(s.clone()),
        _ => return Err(bad_input("give --prompts FILE or --session FILE")),
    };
    let spec = JobSpec {
        input: a.input.clone(),
        ops,
        out: a.out.clone(),
        config: a.job.engine.effective_config()?,
        checkpoint: None,
        model: a.job.engine.model,
        logits: a.job.logits,
        overlay: a.overlay.clone(),
        fill_holes: !a.job.no_postprocess,
        session_dir: a.session_dir.clone(),
        env: vec![],
    };
    // Everything that can be checked before the engine starts is checked here, so bad
    // input is one clear line and nothing is written.
    let prepared = job::prepare(spec)?;
    interrupt::install();
    let progress_to_tty = job::atty_stderr();
    let mut on_frame = |done: usize, total: usize, fps: f32| {
        let eta = if fps > 0.0 { (total.saturating_sub(done)) as f32 / fps } else { 0.0 };
        let line = format!("segment: {done}/{total} frames  {fps:.2} FPS  ETA {eta:.0}s");
        if progress_to_tty {
            eprint!("\r{line}   ");
        } else if done == total || done.is_multiple_of(25) {
            eprintln!("{line}");
        }
    };
    let mut engine = None;
    let result = job::execute(&prepared, &mut engine, &mut on_frame);
    if let Some(e) = engine {
        e.shutdown();
    }
    if progress_to_tty {
        eprintln!();
    }
    let o = result?;
    eprintln!(
        "segment: {} masks over {} frames ({} tracked) in {:.1}s with {}; {} worker restart(s); wrote {}",
        o.masks,
        o.frames,
        o.frames_tracked,
        o.seconds,
        o.model_label,
        o.restarts,
        o.out.display()
    );
    let _ = std::io::stderr().flush();
    Ok(())
}
