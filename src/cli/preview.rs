//! `sam2-tui preview` (placeholder until its owner lands it).
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'preview' is not implemented yet")
}
