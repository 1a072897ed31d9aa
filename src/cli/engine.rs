//! `sam2-tui engine`: the worker process the supervisor spawns. It speaks the framed
//! protocol of `worker::protocol` on stdin/stdout and logs on stderr; see `worker::server`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!("sam2-tui engine: this is the worker process; it speaks a binary protocol on stdin/stdout and is started by the console or `segment`");
    }
    last_words_on_panic();
    crate::worker::server::serve()
}

/// After Rust's own panic report (with its backtrace when RUST_BACKTRACE is set), one
/// line with the message: the supervisor shows a dead worker's last stderr line as its
/// last words, and that line must say what went wrong, not how to get a backtrace.
fn last_words_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("sam2-tui engine panicked{at}: {message}");
    }));
}
