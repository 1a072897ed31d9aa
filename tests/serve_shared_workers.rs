//! `serve --streams 2`: two web sessions share one engine worker, their propagations run
//! in lockstep and a click of one runs between two steps of the other's. Each runs the
//! demo front end's whole scripted session (tests/serve/conformance.py: clicks on two
//! frames, a propagation, a cancel, corrections, a removal, a reset, close) at the same
//! time as the other, and sees the masks it sees on a worker of its own; a worker that
//! aborts mid-stream is replaced, both sessions are replayed on the new one, and still no
//! mask changes; a shared worker that gives up hands each session to a worker of its own,
//! and still no mask changes. A closed session's stream is let go before its folder is
//! removed.
//! At a 256-pixel model input: this is about the serving logic, not the numbers.
mod common;

use common::serve::*;
use std::path::{Path, PathBuf};

const ARGS: &[&str] = &["--image-size", "256"];

/// The scripted session with seeds 0 and 1, both at once, on a server with `args` and
/// `env`: their transcripts and serve's log.
fn two_at_once(
    work: &Path,
    data: &Path,
    ckpt: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> ([PathBuf; 2], String) {
    let mut all = ARGS.to_vec();
    all.extend_from_slice(args);
    let mut server = Server::start(name, data, ckpt, &all, env);
    let outs = [0, 1].map(|seed| work.join(format!("{name}-{seed}.json")));
    std::thread::scope(|scope| {
        for (seed, out) in outs.iter().enumerate() {
            let url = server.url.clone();
            scope.spawn(move || conformance_run(&url, out, seed as u32, &["--quiet", "--no-upload"]));
        }
    });
    assert!(server.is_running(), "serve died; its log:\n{}", server.log_text());
    server.stop();
    (outs, server.log_text())
}

/// The worker each session started on, from serve's log ("… (320x240, 30 frames;
/// worker 123 on cpu fp32, shared) in …").
fn shared_workers_of(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" started on ") && l.contains(", shared) in "))
        .filter_map(|l| l.split("; worker ").nth(1).and_then(|rest| rest.split(' ').next()).map(String::from))
        .collect()
}

fn assert_same_masks(own: &[PathBuf; 2], shared: &[PathBuf; 2], what: &str, log: &str) {
    for (a, b) in own.iter().zip(shared) {
        let (ok, report) = conformance_compare(a, b);
        println!("{what}, {}:\n{report}", b.display());
        assert!(ok, "{what}: a session's masks differ from a worker of its own:\n{report}\nserve's log:\n{log}");
    }
}

#[test]
fn sessions_sharing_a_worker_see_the_masks_of_a_worker_of_their_own_crash_or_not() {
    let work = common::scratch("serve-shared-workers");
    let data = work.join("data");
    make_clip(&data, "01_testsrc.mp4", 1.0, "320x240");
    let ckpt = present_checkpoint();

    let (own, own_log) = two_at_once(&work, &data, &ckpt, "own", &[], &[]);
    assert!(shared_workers_of(&own_log).is_empty(), "without --streams no session shares:\n{own_log}");

    let (shared, log) = two_at_once(&work, &data, &ckpt, "shared", &["--streams", "2"], &[]);
    let workers = shared_workers_of(&log);
    assert_eq!(workers.len(), 2, "both sessions start on a shared worker:\n{log}");
    assert_eq!(workers[0], workers[1], "one worker for both:\n{log}");
    assert!(!log.contains("worker died"), "nothing crashed here:\n{log}");
    assert_eq!(log.matches("its stream was let go").count(), 2, "each close lets its stream go:\n{log}");
    assert_same_masks(&own, &shared, "shared", &log);

    // SIGABRT while frame 17 of the first propagation (either session's) is computed:
    // the worker of both dies, and both are replayed on the new one.
    let (crashed, log) =
        two_at_once(&work, &data, &ckpt, "shared-abort", &["--streams", "2"], &[("SAM2_TUI_FAULT", "abort@frame=17")]);
    assert!(log.contains("worker died (SIGABRT"), "the fault must have fired:\n{log}");
    assert_eq!(shared_workers_of(&log).len(), 2, "both sessions start on a shared worker:\n{log}");
    assert_same_masks(&own, &crashed, "shared, the worker aborted", &log);

    // Allowed no restart, the shared worker gives up at that death: each session is
    // handed to a worker of its own, restored from its bank and the ops it ran (its
    // propagation resumed, the cancelled one as the frames it delivered), and goes on.
    let config = work.join("no-restarts.toml");
    std::fs::write(&config, "[supervisor]\nmax_restarts = 0\n").unwrap();
    let args = ["--streams", "2", "--config", config.to_str().unwrap()];
    let (handed, log) =
        two_at_once(&work, &data, &ckpt, "shared-gives-up", &args, &[("SAM2_TUI_FAULT", "abort@frame=17")]);
    let gave_up = "handed to a worker of its own: the shared worker gave up (the worker died 1 times";
    assert_eq!(log.matches(gave_up).count(), 2, "both sessions handed over at the first death:\n{log}");
    assert!(log.contains("SIGABRT"), "the fault must have fired:\n{log}");
    assert!(!log.contains("close it and start a new session"), "no session stopped:\n{log}");
    assert_eq!(log.matches("its stream was let go").count(), 2, "each close ends its worker:\n{log}");
    assert_same_masks(&own, &handed, "shared, the worker gave up", &log);
}

#[test]
fn streams_needs_a_worker_that_reads_the_videos_itself() {
    let work = common::scratch("serve-shared-workers-refused");
    let data = work.join("data");
    std::fs::create_dir_all(data.join("gallery")).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--port", "0", "--streams", "2", "--extract-frames", "--data"])
        .arg(&data)
        .arg("--checkpoint")
        .arg(present_checkpoint())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "bad input: exit 2; stderr:\n{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line:\n{err}");
    assert!(err.contains("--streams") && err.contains("--extract-frames"), "{err}");
}

/// A video the shared worker cannot open fails that session's start with the reason, its
/// folder removed once the worker has let its stream go; the worker serves the next
/// session as before.
#[test]
fn a_video_the_shared_worker_cannot_open_fails_its_start_alone() {
    let work = common::scratch("serve-shared-workers-broken");
    let data = work.join("data");
    make_clip(&data, "01_testsrc.mp4", 1.0, "320x240");
    std::fs::write(data.join("gallery/02_broken.mp4"), b"not a video at all").unwrap();
    let mut all = ARGS.to_vec();
    all.extend_from_slice(&["--streams", "2"]);
    let mut server = Server::start("shared-broken", &data, &present_checkpoint(), &all, &[]);
    let v = graphql(server.port, M_START, serde_json::json!({"input": {"path": "gallery/02_broken.mp4"}}));
    let err = error_of(&v);
    assert!(err.contains("cannot start a session on gallery/02_broken.mp4"), "{v}");
    let v = graphql(server.port, M_START, serde_json::json!({"input": {"path": "gallery/01_testsrc.mp4"}}));
    let sid = v["data"]["startSession"]["sessionId"].as_str().unwrap_or_else(|| panic!("startSession: {v}"));
    let v = graphql(server.port, M_CLOSE, serde_json::json!({"input": {"sessionId": sid}}));
    assert_eq!(v["data"]["closeSession"]["success"], true, "{v}");
    assert!(server.is_running(), "serve died; its log:\n{}", server.log_text());
    server.stop();
    let log = server.log_text();
    assert_eq!(shared_workers_of(&log).len(), 1, "the good session started on the shared worker:\n{log}");
    assert!(!log.contains("worker died"), "a video that does not open kills no worker:\n{log}");
}
