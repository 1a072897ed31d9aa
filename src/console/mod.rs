//! The operator console (placeholder until its owner lands it).
#[derive(clap::Args, Debug, Default)]
pub struct ConsoleArgs {}

pub fn run(_input: Option<std::path::PathBuf>, _args: ConsoleArgs) -> anyhow::Result<()> {
    anyhow::bail!("the console is not implemented yet")
}
