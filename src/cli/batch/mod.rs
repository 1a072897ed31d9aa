//! `sam2-tui batch`: a manifest of items (JSON Lines) run locally, as one shard of many
//! (`--shard I/N`, for any scheduler), or as a Slurm job array (`--slurm`); `--status`
//! reads what a batch's report files (and Slurm) say.
pub mod local;
pub mod manifest;
pub mod report;
pub mod slurm;
pub mod status;

use crate::util::bad_input;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The manifest: JSON Lines, one item a line:
    /// {"input": PATH, "prompts"|"session": PATH, "out": NAME, "model"?: SIZE, "checkpoint"?: PATH}
    /// (paths relative to the manifest's folder).
    #[arg(required_unless_present = "status")]
    pub manifest: Option<PathBuf>,
    /// The folder that receives one output folder per item (`out`) and the report.
    #[arg(long, required_unless_present = "status")]
    pub out: Option<PathBuf>,
    /// Run only the items whose index is I modulo N (0-based).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<manifest::Shard>,
    /// GPUs to run on, one worker each (default: every GPU; the CPU where there is none).
    #[arg(long, value_delimiter = ',')]
    pub devices: Option<Vec<usize>>,
    /// Videos tracked at once by each worker, in lockstep: their frames share the image
    /// encoder's batches and one tracking step (issue #18). Items are grouped in manifest
    /// order, so put videos of similar length next to each other; 1 runs one after
    /// another.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub streams: u32,
    #[command(flatten)]
    pub job: crate::cli::job::JobFlags,

    /// Write a Slurm job array script into --out and submit it with sbatch.
    #[arg(long)]
    pub slurm: bool,
    /// Tasks in the array (default: one per item, at most 100).
    #[arg(long, requires = "slurm")]
    pub array_size: Option<usize>,
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// e.g. gpu:1
    #[arg(long, requires = "slurm")]
    pub gres: Option<String>,
    /// Time limit per task, e.g. 02:00:00.
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    /// Write the script and print it, submit nothing.
    #[arg(long, requires = "slurm")]
    pub dry_run: bool,

    /// Show the progress of the batch whose --out is DIR (report files, squeue/sacct).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["manifest", "out", "slurm", "shard"])]
    pub status: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(dir) = &a.status {
        return status::run(dir);
    }
    let manifest = a.manifest.clone().ok_or_else(|| bad_input("give the manifest"))?;
    let out = a.out.clone().ok_or_else(|| bad_input("give --out DIR"))?;
    if a.slurm {
        return slurm::run(&a, &manifest, &out);
    }
    local::run(&a, &manifest, &out, a.shard.unwrap_or(manifest::Shard::ALL))
}
