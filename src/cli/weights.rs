//! `sam2-tui weights …` (placeholder until its owner lands it).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print what a checkpoint file is.
    Inspect { file: std::path::PathBuf },
}

pub fn run(_cmd: Command) -> anyhow::Result<()> {
    anyhow::bail!("'weights' is not implemented yet")
}
