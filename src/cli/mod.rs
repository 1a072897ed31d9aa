//! Command-line surface: the console (default) and the headless subcommands that script
//! the same engine. Each subcommand lives in its own file with its `Args` and `run`.
pub mod batch;
pub mod bench;
pub mod checks;
pub mod doctor;
pub mod engine;
pub mod interrupt;
pub mod job;
pub mod preview;
pub mod segment;
pub mod serve;
pub mod sessions;
pub mod weights;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sam2-tui",
    version,
    about = "SAM 2 in your terminal: a native engine, a supervisor that survives crashes, and a dashboard"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Video, frame folder or image to open in the console.
    pub input: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub console: crate::console::ConsoleArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Segment a video, frame folder or image headlessly from a prompts or session file.
    Segment(segment::Args),
    /// Segment every item of a manifest (JSON Lines): locally, one shard (--shard I/N), or as a Slurm job array (--slurm).
    Batch(batch::Args),
    /// Measure FPS, per-stage latency and memory per model size and device.
    Bench(bench::Args),
    /// Report devices, libtorch, FFmpeg, terminal graphics and recommended settings.
    Doctor(doctor::Args),
    /// List or prune the session folders kept in the data directory.
    Sessions(sessions::Args),
    /// List installed checkpoints and where they are looked for; inspect or download one.
    Weights(weights::Args),
    /// Print one frame with its mask overlay straight to the terminal.
    Preview(preview::Args),
    /// Serve the official SAM 2 web demo's front end (its GraphQL API and mask stream), one engine worker per session.
    Serve(serve::Args),
    /// The engine worker (spoken to by the supervisor over stdin/stdout).
    #[command(hide = true)]
    Engine(engine::Args),
}
