//! `sam2-tui engine`: the worker process the supervisor spawns. It speaks the framed
//! protocol of `worker::protocol` on stdin/stdout and logs on stderr; see `worker::server`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!("sam2-tui engine: this is the worker process; it speaks a binary protocol on stdin/stdout and is started by the console or `segment`");
    }
    crate::worker::server::serve()
}
