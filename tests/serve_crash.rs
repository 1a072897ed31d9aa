//! A session's worker that aborts mid-stream, or hangs until the watchdog kills it,
//! costs that session a restart and nothing else: the demo front end's whole scripted
//! session (tests/serve/conformance.py) gives the same masks as on a server where
//! nothing failed. The faults are real (`SAM2_TUI_FAULT`: SIGABRT, a wedged process).
//! At a 256-pixel model input: this is about the serving logic, not the numbers.
mod common;

use common::serve::*;
use std::path::PathBuf;

fn setup() -> (PathBuf, PathBuf, PathBuf) {
    let work = common::scratch("serve-crash");
    let data = work.join("data");
    make_clip(&data, "01_testsrc.mp4", 1.0, "320x240");
    (work, data, present_checkpoint())
}

const ARGS: &[&str] = &["--image-size", "256"];

fn run(
    work: &std::path::Path,
    data: &std::path::Path,
    ckpt: &std::path::Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (PathBuf, String) {
    let mut all = ARGS.to_vec();
    all.extend_from_slice(args);
    let mut server = Server::start(name, data, ckpt, &all, env);
    // The session takes the spare worker (so where it goes after the close is the
    // session's doing, not the timing's).
    let t0 = std::time::Instant::now();
    while !server.log_text().contains("is ready as a spare") {
        assert!(t0.elapsed().as_secs() < 120, "no spare worker; serve's log:\n{}", server.log_text());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = work.join(format!("{name}.json"));
    conformance_run(&server.url, &out, 0, &["--quiet", "--no-upload"]);
    assert!(server.is_running(), "serve died; its log:\n{}", server.log_text());
    server.stop();
    (out, server.log_text())
}

#[test]
fn a_worker_that_aborts_or_hangs_mid_stream_changes_no_mask_the_front_end_sees() {
    let (work, data, ckpt) = setup();
    let (clean, clean_log) = run(&work, &data, &ckpt, "clean", &[], &[]);
    assert!(!clean_log.contains("worker died"), "the clean run must not crash:\n{clean_log}");
    assert!(clean_log.contains("is a spare again"), "a clean session's worker serves the next one:\n{clean_log}");

    // SIGABRT while frame 17 of the first propagation is computed.
    let (aborted, log) = run(&work, &data, &ckpt, "abort", &[], &[("SAM2_TUI_FAULT", "abort@frame=17")]);
    assert!(log.contains("worker died (SIGABRT"), "the fault must have fired:\n{log}");
    // Its crash history (and any fall-back) is that session's: the worker is not handed on.
    let crashed = log
        .lines()
        .find_map(|l| l.split_once(": worker died (SIGABRT").and_then(|(head, _)| head.rsplit("session ").next()))
        .expect("the crashed session's id");
    let closed = log.lines().find(|l| l.contains(&format!("session {crashed} closed ("))).unwrap_or_default();
    assert!(closed.ends_with("its worker stopped"), "session {crashed}'s close: {closed:?}\n{log}");
    let (ok, report) = conformance_compare(&clean, &aborted);
    println!("abort@frame=17 vs clean:\n{report}");
    assert!(ok, "an aborted worker changed what the front end sees:\n{report}\nserve's log:\n{log}");

    // A hang at frame 19 (no heartbeat, no progress): the config file's short watchdog
    // kills it, the session's supervisor restarts it and the stream goes on.
    let config = work.join("watchdog.toml");
    std::fs::write(&config, "[supervisor]\nheartbeat_timeout_secs = 2\nprogress_timeout_secs = 5\n").unwrap();
    let (hung, log) = run(
        &work,
        &data,
        &ckpt,
        "hang",
        &["--config", config.to_str().unwrap()],
        &[("SAM2_TUI_FAULT", "hang@frame=19")],
    );
    assert!(
        log.contains("worker died") && log.contains("watchdog"),
        "the watchdog must have killed the hung worker:\n{log}"
    );
    let (ok, report) = conformance_compare(&clean, &hung);
    println!("hang@frame=19 vs clean:\n{report}");
    assert!(ok, "a hung worker changed what the front end sees:\n{report}\nserve's log:\n{log}");
}
