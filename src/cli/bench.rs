//! `sam2-tui bench` (placeholder until its owner lands it).
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'bench' is not implemented yet")
}
