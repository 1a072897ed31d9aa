//! `sam2-tui engine` (placeholder until its owner lands it).
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'engine' is not implemented yet")
}
