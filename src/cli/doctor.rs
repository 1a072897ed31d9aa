//! `sam2-tui doctor` (placeholder until its owner lands it).
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'doctor' is not implemented yet")
}
