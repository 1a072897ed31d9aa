//! `sam2-tui serve --console` in a real terminal (tmux, a socket of its own), driven by a
//! scripted client: a session shows up with its frames streamed; the precision key
//! replays the open session on a bf16 worker and new sessions start on bf16; the drain key
//! makes startSession fail with a clear error, and the process exits 0 once the last
//! session has closed; on shared workers (`--streams`), the precision key moves each open
//! session to a worker of its own and replays it there. And headless `serve`: one log
//! line per request and per restart.
//! At a 256-pixel model input: this is about the operator's view, not the numbers.
mod common;

use common::serve::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The tmux server of these tests only, so that `kill-server` ends nothing else.
const SOCKET: &str = "sam2tui-serve-console";
const SESSION: &str = "operator";

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(["-L", SOCKET]).args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screen() -> String {
    tmux(&["capture-pane", "-p", "-t", SESSION])
}

fn wait_for(what: &str, timeout: Duration) -> String {
    wait_until(what, timeout, |s| s.contains(what))
}

/// Polls the screen (tmux has no event to await) until `ok` says so.
fn wait_until(what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let s = screen();
        if ok(&s) {
            return s;
        }
        assert!(t0.elapsed() < timeout, "{what}: not on screen within {timeout:?}; screen:\n{s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The screen row of the session whose id starts with `short`.
fn row<'a>(screen: &'a str, short: &str) -> &'a str {
    screen.lines().find(|l| l.contains(&format!("│{short}")) || l.contains(&format!(" {short} "))).unwrap_or("")
}

/// Ends the tmux server when the test ends, passed or not.
struct Tmux;
impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = tmux(&["kill-server"]);
    }
}

fn start_session(port: u16) -> String {
    let v = graphql(port, M_START, json!({"input": {"path": "gallery/01_testsrc.mp4"}}));
    v["data"]["startSession"]["sessionId"].as_str().unwrap_or_else(|| panic!("startSession: {v}")).to_string()
}

/// A positive point for `object` on frame 0; the objects the answer has masks for.
fn click(port: u16, sid: &str, object: i32, at: [f64; 2]) -> usize {
    let v = graphql(
        port,
        M_ADD,
        json!({"input": {"sessionId": sid, "frameIndex": 0, "clearOldPoints": true, "objectId": object, "labels": [1], "points": [at]}}),
    );
    assert!(v["errors"].is_null(), "addPoints: {v}");
    v["data"]["addPoints"]["rleMaskList"].as_array().map(|l| l.len()).unwrap_or(0)
}

/// The parts of a propagation from frame 0.
fn propagate(port: u16, sid: &str) -> usize {
    let body = json!({"session_id": sid, "start_frame_index": 0}).to_string();
    let r =
        request(port, "POST", "/propagate_in_video", &[("Content-Type", "application/json")], body.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    stream_parts(&r.body).len()
}

fn close(port: u16, sid: &str) {
    let v = graphql(port, M_CLOSE, json!({"input": {"sessionId": sid}}));
    assert_eq!(v["data"]["closeSession"]["success"], true, "{v}");
}

fn setup(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let work = common::scratch(name);
    let data = work.join("data");
    make_clip(&data, "01_testsrc.mp4", 1.0, "320x240");
    (work, data, present_checkpoint())
}

fn wait_file(path: &Path, timeout: Duration) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(t0.elapsed() < timeout, "{} not written within {timeout:?}; screen:\n{}", path.display(), screen());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `serve --console` (CPU fp32, model input 256, and `args`) in a tmux pane of 120×34,
/// serving: its port, the file its exit status goes to, and the guard that ends tmux.
fn console(work: &Path, data: &Path, ckpt: &Path, args: &str) -> (u16, PathBuf, Tmux) {
    let port = free_port();
    let exit = work.join("exit-status");
    let cmd = format!(
        "{} TERM=xterm-256color {} serve --console {args} --port {port} --data '{}' --checkpoint '{}' --device cpu --precision fp32 --image-size 256; echo $? > '{}'; sleep 60",
        common::pane_env(),
        common::bin().display(),
        data.display(),
        ckpt.display(),
        exit.display()
    );
    let _ = tmux(&["kill-server"]);
    let guard = Tmux;
    tmux(&["new-session", "-d", "-s", SESSION, "-x", "120", "-y", "34", &cmd]);
    wait_for("· serving ·", Duration::from_secs(60));
    (port, exit, guard)
}

#[test]
fn the_operator_sees_sessions_switches_precision_for_old_and_new_and_drains_to_exit_0() {
    let (work, data, ckpt) = setup("serve-console");
    let (port, exit, _guard) = console(&work, &data, &ckpt, "--warm-workers 0");
    assert!(screen().contains("new sessions: tiny · cpu · fp32"), "{}", screen());

    // A session started by a client shows up, with its objects and frames streamed.
    let first = start_session(port);
    let short1: String = first.chars().take(8).collect();
    assert_eq!(click(port, &first, 0, [0.3, 0.4]), 1);
    assert_eq!(click(port, &first, 1, [0.7, 0.6]), 2);
    assert_eq!(propagate(port, &first), 24);
    let s = wait_until("the first session's row, idle after 24 frames streamed", Duration::from_secs(30), |s| {
        let r = row(s, &short1);
        r.contains("gallery/01_testsrc.mp4") && r.contains(" 24 ") && r.contains("idle") && r.contains("cpu fp32")
    });
    assert!(row(&s, &short1).contains(" 2 "), "two objects: {}", row(&s, &short1));
    assert!(s.contains("24 frames streamed"), "the totals: {s}");
    assert!(s.contains("POST /propagate_in_video 200 stream started"), "the request log: {s}");

    // Precision: the open session is replayed on a bf16 worker, a new one starts on bf16.
    tmux(&["send-keys", "-t", SESSION, "r"]);
    wait_for("new sessions: tiny · cpu · bf16", Duration::from_secs(10));
    wait_until("the first session replayed on bf16", Duration::from_secs(120), |s| {
        row(s, &short1).contains("cpu bf16") && s.contains(&format!("session {short1}: 3 ops replayed"))
    });
    assert_eq!(click(port, &first, 0, [0.35, 0.45]), 2, "the replayed session answers with both objects");
    let second = start_session(port);
    let short2: String = second.chars().take(8).collect();
    let s = wait_until("the second session on bf16", Duration::from_secs(30), |s| row(s, &short2).contains("cpu bf16"));
    // Kept as a test artefact (the README shows one).
    std::fs::write(work.join("operator-view.txt"), &s).unwrap();

    // Drain: no new session, a clear error; the open ones go on until they close.
    tmux(&["send-keys", "-t", SESSION, "C-d"]);
    wait_for("draining: no new sessions", Duration::from_secs(10));
    let v = graphql(port, M_START, json!({"input": {"path": "gallery/01_testsrc.mp4"}}));
    let e = error_of(&v);
    assert!(
        e.contains("this server is draining: it starts no new sessions and stops once its 2 open sessions have closed"),
        "{v}"
    );
    assert!(v["data"].is_null(), "{v}");
    assert_eq!(click(port, &second, 0, [0.5, 0.5]), 1, "the open sessions go on while draining");
    close(port, &first);
    wait_until("one session left", Duration::from_secs(30), |s| s.contains("sessions: 1 open"));
    assert!(!Path::new(&exit).exists(), "still serving the last session");
    close(port, &second);
    assert_eq!(wait_file(&exit, Duration::from_secs(60)).trim(), "0", "a drained server exits 0");
    // The full screen is gone; its last log lines stay on the terminal.
    wait_for("serve: drained: the last session has closed; stopping", Duration::from_secs(5));
}

#[test]
fn headless_serve_logs_one_line_per_request_and_per_restart() {
    let (_work, data, ckpt) = setup("serve-headless-log");
    let server = Server::start(
        "headless-log",
        &data,
        &ckpt,
        &["--image-size", "256", "--warm-workers", "0"],
        &[("SAM2_TUI_FAULT", "abort@frame=5")],
    );
    let port = server.port;
    let sid = start_session(port);
    assert_eq!(click(port, &sid, 0, [0.3, 0.4]), 1);
    assert_eq!(propagate(port, &sid), 24, "the stream goes on after the crash");
    close(port, &sid);
    let log = server.log_text();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count(" serve: POST /graphql 200 S "), 1, "startSession:\n{log}");
    assert_eq!(count(" serve: POST /graphql 200 A "), 1, "addPoints:\n{log}");
    assert_eq!(count(" serve: POST /propagate_in_video 200 stream started"), 1, "{log}");
    assert_eq!(count(" serve: POST /graphql 200 C "), 1, "closeSession:\n{log}");
    assert_eq!(count("worker died (SIGABRT"), 1, "the crash:\n{log}");
    assert_eq!(count("restarted (restart 1)"), 1, "the restart:\n{log}");
    assert_eq!(count(" serve: POST "), 4, "nothing else was asked:\n{log}");
}

#[test]
fn ctrl_c_at_the_terminal_closes_every_session_without_a_worker_death() {
    let (_work, data, ckpt) = setup("serve-ctrl-c");
    let mut server = Server::start("ctrl-c", &data, &ckpt, &["--image-size", "256", "--warm-workers", "1"], &[]);
    let sid = start_session(server.port);
    assert_eq!(click(server.port, &sid, 0, [0.3, 0.4]), 1);
    // SIGINT to serve's whole process group, its workers' too if they were in it.
    let status = server.interrupt().expect("serve was running");
    let log = server.log_text();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("shutting down: closing every session"), "{log}");
    assert!(!log.contains("worker died"), "the Ctrl-C is the server's to answer, not its workers':\n{log}");
}

/// `serve --streams 2`: two sessions on one shared worker; the precision key moves each to
/// a worker of its own on bf16, replaying its ops there, and each goes on with its objects.
#[test]
fn a_switch_moves_sessions_off_their_shared_worker_and_replays_them() {
    let (work, data, ckpt) = setup("serve-console-shared-switch");
    let (port, exit, _guard) = console(&work, &data, &ckpt, "--streams 2");

    let (first, second) = (start_session(port), start_session(port));
    let shorts: Vec<String> = [&first, &second].iter().map(|s| s.chars().take(8).collect()).collect();
    assert_eq!(click(port, &first, 0, [0.3, 0.4]), 1);
    assert_eq!(click(port, &first, 1, [0.7, 0.6]), 2);
    assert_eq!(click(port, &second, 0, [0.5, 0.5]), 1);
    assert_eq!(propagate(port, &first), 24);
    wait_until("both sessions on the shared fp32 worker", Duration::from_secs(30), |s| {
        shorts.iter().all(|short| row(s, short).contains("cpu fp32"))
    });

    tmux(&["send-keys", "-t", SESSION, "r"]);
    let s = wait_until("both sessions replayed on bf16 workers of their own", Duration::from_secs(180), |s| {
        shorts.iter().all(|short| row(s, short).contains("cpu bf16"))
            && s.contains(&format!("session {}: 3 ops replayed", shorts[0]))
            && s.contains(&format!("session {}: 1 op replayed", shorts[1]))
    });
    assert!(s.contains("(2 of them leave"), "both leave their shared worker: {s}");
    assert_eq!(click(port, &first, 0, [0.35, 0.45]), 2, "the first goes on with both objects");
    assert_eq!(click(port, &second, 1, [0.2, 0.2]), 2, "the second with its object and a new one");
    assert_eq!(propagate(port, &second), 24);

    tmux(&["send-keys", "-t", SESSION, "C-d"]);
    wait_for("draining: no new sessions", Duration::from_secs(10));
    close(port, &first);
    close(port, &second);
    assert_eq!(wait_file(&exit, Duration::from_secs(60)).trim(), "0", "a drained server exits 0");
}
