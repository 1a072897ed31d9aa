//! `sam2-tui segment` (placeholder until its owner lands it).
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'segment' is not implemented yet")
}
