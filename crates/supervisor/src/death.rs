//! Names how a worker died, in the words an operator searches for.
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGTRAP => "SIGTRAP".into(),
        n => format!("signal {n}"),
    }
}

/// "SIGABRT (abort: a failed assertion …?)", "killed (OOM?) by SIGKILL", "exit status 1".
/// `killed_by_us` marks a SIGKILL the watchdog sent, so it is not blamed on memory.
pub fn describe(status: ExitStatus, killed_by_us: Option<&str>) -> String {
    if let Some(sig) = status.signal() {
        let name = signal_name(sig);
        return match sig {
            libc::SIGKILL => match killed_by_us {
                Some(why) => format!("SIGKILL by the watchdog ({why})"),
                None => "killed (OOM?) by SIGKILL".into(),
            },
            // Said for every device: on the CPU there is no Metal to blame.
            libc::SIGABRT => format!("{name} (abort: a failed assertion inside libtorch or the device driver?)"),
            libc::SIGSEGV | libc::SIGBUS => format!("{name} (invalid memory access)"),
            _ => name,
        } + if status.core_dumped() { ", core dumped" } else { "" };
    }
    match status.code() {
        Some(0) => "exited cleanly (status 0) while work was pending".into(),
        Some(c) => format!("exit status {c}"),
        None => "ended for an unknown reason".into(),
    }
}

/// Whether a worker's stderr line belongs in its "last words" (the tail shown when it
/// dies). Rust's `note: run with RUST_BACKTRACE=1 …` hint does not: it follows every
/// panic, so as the last line it hid the panic message that says what went wrong.
pub fn is_last_words(line: &str) -> bool {
    !line.starts_with("note: run with `RUST_BACKTRACE=1`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_signals_the_way_operators_search_for_them() {
        assert!(describe(ExitStatus::from_raw(libc::SIGABRT), None).starts_with("SIGABRT"));
        assert!(!describe(ExitStatus::from_raw(libc::SIGABRT), None).contains("Metal"), "a CPU abort is not Metal's");
        assert!(describe(ExitStatus::from_raw(libc::SIGSEGV), None).starts_with("SIGSEGV"));
        assert_eq!(describe(ExitStatus::from_raw(libc::SIGKILL), None), "killed (OOM?) by SIGKILL");
        assert!(describe(ExitStatus::from_raw(libc::SIGKILL), Some("no heartbeat")).contains("watchdog"));
        assert_eq!(describe(ExitStatus::from_raw(3 << 8), None), "exit status 3");
    }
}
