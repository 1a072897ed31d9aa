//! Eight sessions at once, each its own engine worker, finish with the masks a lone
//! session gets; while they run, bad input of every kind gets one clear error each, the
//! server stays up and the eight are not disturbed: malformed GraphQL, unknown session
//! ids, a frame index out of range, points outside 0..1, a session beyond --max-sessions,
//! oversized, non-video and too long uploads (nothing left behind), path traversal
//! (`..`, absolute paths, a symlink out of the data folder). A client that hangs up
//! while its session starts costs no place for good.
//! At a 256-pixel model input: this is about the serving logic, not the numbers.
mod common;

use common::serve::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

/// (frame, object) → RLE counts, from one session: two objects clicked on frame 0, then
/// the propagation from frame 0, then the session closed.
type Masks = BTreeMap<(i64, i64), String>;

/// A thread's place at a barrier: it waits there once, when told or, if it panics
/// first, as it unwinds. A session that fails must not leave the others and the test
/// waiting at the barrier forever: its panic shows at `join` instead.
struct Rendezvous<'a>(Option<&'a Barrier>);

impl Rendezvous<'_> {
    fn wait(&mut self) {
        if let Some(b) = self.0.take() {
            b.wait();
        }
    }
}

impl Drop for Rendezvous<'_> {
    fn drop(&mut self) {
        self.wait();
    }
}

fn one_session(port: u16, started: Option<&Barrier>, release: Option<&Barrier>) -> Masks {
    // Declared in this order so that unwinding passes `started` before `release`.
    let mut release = Rendezvous(release);
    let mut started = Rendezvous(started);
    let v = graphql(port, M_START, json!({"input": {"path": "gallery/01_testsrc.mp4"}}));
    let sid =
        v["data"]["startSession"]["sessionId"].as_str().unwrap_or_else(|| panic!("startSession: {v}")).to_string();
    started.wait();
    let mut masks = Masks::new();
    for (obj, p) in [(0, [0.3, 0.4]), (1, [0.7, 0.6])] {
        let v = graphql(
            port,
            M_ADD,
            json!({"input": {"sessionId": sid, "frameIndex": 0, "clearOldPoints": true, "objectId": obj, "labels": [1], "points": [p]}}),
        );
        assert!(v["errors"].is_null(), "addPoints: {v}");
    }
    let body = json!({"session_id": sid, "start_frame_index": 0}).to_string();
    let r =
        request(port, "POST", "/propagate_in_video", &[("Content-Type", "application/json")], body.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("multipart/x-savi-stream; boundary=frame"));
    for part in stream_parts(&r.body) {
        for res in part["results"].as_array().unwrap() {
            masks.insert(
                (part["frame_index"].as_i64().unwrap(), res["object_id"].as_i64().unwrap()),
                res["mask"]["counts"].as_str().unwrap().to_string(),
            );
        }
    }
    release.wait();
    let v = graphql(port, M_CLOSE, json!({"input": {"sessionId": sid}}));
    assert_eq!(v["data"]["closeSession"]["success"], true, "{v}");
    masks
}

fn upload(port: u16, name: &str, bytes: &[u8]) -> serde_json::Value {
    let boundary = "----sam2tuitestboundary";
    let q = "mutation U($file: Upload!) { uploadVideo(file: $file) { id path width height posterPath posterUrl } }";
    let mut body = vec![];
    let mut field = |name: &str, fname: Option<&str>, value: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = fname {
            body.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: video/mp4").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    };
    field("operations", None, json!({"query": q, "variables": {"file": null}}).to_string().as_bytes());
    field("map", None, br#"{"file": ["variables.file"]}"#);
    field("file", Some(name), bytes);
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = request(port, "POST", "/graphql", &[("Content-Type", &ct)], &body).unwrap();
    r.json()
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().count()).unwrap_or(0)
}

#[test]
fn eight_sessions_at_once_get_a_lone_sessions_masks_while_bad_input_gets_clear_errors() {
    let work = common::scratch("serve-concurrency");
    let data = work.join("data");
    make_clip(&data, "01_testsrc.mp4", 1.0, "320x240");
    let long = make_clip(&work.join("elsewhere"), "long.mp4", 3.0, "160x120");
    let ckpt = present_checkpoint();
    // Outside the data folder, and a symlink in the gallery that points at it.
    let secret = work.join("secret.txt");
    std::fs::write(&secret, "not for the web").unwrap();
    std::os::unix::fs::symlink(&secret, data.join("gallery/escape.mp4")).unwrap();
    let config = work.join("one-thread.toml");
    std::fs::write(&config, "[engine]\nthreads = 1\n").unwrap();
    let server = Server::start(
        "concurrency",
        &data,
        &ckpt,
        &[
            "--image-size",
            "256",
            "--max-sessions",
            "9",
            "--max-upload-mb",
            "1",
            "--max-upload-input-seconds",
            "2",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    let port = server.port;
    let v = graphql(port, "query { videos { edges { node { path } } } }", json!({}));
    let listed: Vec<&str> =
        v["data"]["videos"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["path"].as_str().unwrap()).collect();
    assert_eq!(listed, ["gallery/01_testsrc.mp4"], "a symlink out of the folder is not offered");

    let alone = one_session(port, None, None);
    assert_eq!(alone.len(), 24 * 2, "every frame has both objects");

    let started = Arc::new(Barrier::new(9));
    let release = Arc::new(Barrier::new(9));
    let t0 = std::time::Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, r) = (started.clone(), release.clone());
            std::thread::spawn(move || one_session(port, Some(&s), Some(&r)))
        })
        .collect();
    started.wait();

    // --- while eight sessions are open and working --------------------------------
    let v = graphql(port, M_START, json!({"input": {"path": "gallery/01_testsrc.mp4"}}));
    let sid =
        v["data"]["startSession"]["sessionId"].as_str().unwrap_or_else(|| panic!("ninth session: {v}")).to_string();
    let v = graphql(port, M_START, json!({"input": {"path": "gallery/01_testsrc.mp4"}}));
    assert!(error_of(&v).contains("too many sessions"), "{v}");
    assert!(v["data"].is_null());

    // Malformed GraphQL: a syntax error, an unknown field, a body that is not JSON.
    let v = graphql(port, "mutation { addPoints(input: {", json!({}));
    assert!(!error_of(&v).is_empty(), "{v}");
    let v = graphql(port, "query { noSuchField }", json!({}));
    assert!(error_of(&v).contains("noSuchField"), "{v}");
    let r = request(port, "POST", "/graphql", &[("Content-Type", "application/json")], b"{not json").unwrap();
    assert!(r.status == 400 && r.text().contains("errors"), "{} {}", r.status, r.text());

    // Unknown session ids.
    let add = |sid: &str, frame: i64, pts: serde_json::Value, labels: serde_json::Value| {
        graphql(
            port,
            M_ADD,
            json!({"input": {"sessionId": sid, "frameIndex": frame, "clearOldPoints": true, "objectId": 0, "labels": labels, "points": pts}}),
        )
    };
    let v = add("no-such-session", 0, json!([[0.5, 0.5]]), json!([1]));
    assert_eq!(error_of(&v), "Cannot find session no-such-session; it might have expired");
    let r = request(
        port,
        "POST",
        "/propagate_in_video",
        &[("Content-Type", "application/json")],
        br#"{"session_id": "no-such-session", "start_frame_index": 0}"#,
    )
    .unwrap();
    assert_eq!(r.status, 500);
    assert!(r.text().contains("Cannot find session"), "{}", r.text());

    // Frame index out of range, points outside 0..1, bad labels: refused before the
    // engine sees them, and the session still works afterwards.
    let v = add(&sid, 24, json!([[0.5, 0.5]]), json!([1]));
    assert!(error_of(&v).contains("frameIndex 24 is out of range"), "{v}");
    let v = add(&sid, -1, json!([[0.5, 0.5]]), json!([1]));
    assert!(error_of(&v).contains("out of range"), "{v}");
    let v = add(&sid, 0, json!([[1.5, 0.2]]), json!([1]));
    assert!(error_of(&v).contains("outside the frame"), "{v}");
    let v = add(&sid, 0, json!([[0.5, -0.01]]), json!([1]));
    assert!(error_of(&v).contains("outside the frame"), "{v}");
    let v = add(&sid, 0, json!([[0.5, 0.5]]), json!([1, 0]));
    assert!(error_of(&v).contains("labels"), "{v}");
    let v = add(&sid, 0, json!([[0.3, 0.4]]), json!([1]));
    assert!(v["errors"].is_null(), "a good click after the bad ones: {v}");
    let first = v["data"]["addPoints"]["rleMaskList"][0]["rleMask"]["counts"].as_str().unwrap().to_string();
    assert_eq!(first, alone[&(0, 0)], "the bad input left no trace in the session");

    // Uploads: too large, not a video, too long; none leaves a file behind.
    let before = files_in(&data.join("uploads"));
    let v = upload(port, "big.mp4", &vec![7u8; 3 << 20]);
    assert!(error_of(&v).contains("larger than"), "{v}");
    let v = upload(port, "notes.mp4", b"this is not a video at all");
    assert!(error_of(&v).contains("not valid video file"), "{v}");
    let v = upload(port, "long.mp4", &std::fs::read(&long).unwrap());
    assert!(error_of(&v).contains("long"), "{v}");
    assert_eq!(files_in(&data.join("uploads")), before, "a refused upload left a file in uploads/");
    assert_eq!(files_in(&data.join(".incoming")), 0, "a refused upload left a file behind");

    // Path traversal: never a file from outside the data folder.
    for path in [
        "/gallery/../../secret.txt",
        "/gallery/%2e%2e/%2e%2e/secret.txt",
        "/gallery/escape.mp4",
        "/posters/..%2f..%2fsecret.txt",
        "/uploads/%2fetc%2fpasswd",
    ] {
        let r = request(port, "GET", path, &[], b"").unwrap();
        assert!(r.status >= 400, "{path}: {} {}", r.status, r.text());
        assert!(!r.text().contains("not for the web") && !r.text().contains("root:"), "{path} leaked a file");
    }
    for path in ["../secret.txt", "/etc/passwd", "gallery/escape.mp4", "gallery/../../secret.txt"] {
        let v = graphql(port, M_START, json!({"input": {"path": path}}));
        assert!(error_of(&v).contains("cannot start a session"), "{path}: {v}");
    }
    let v = graphql(port, M_CLOSE, json!({"input": {"sessionId": sid}}));
    assert_eq!(v["data"]["closeSession"]["success"], true);

    // --- the eight ------------------------------------------------------------------
    release.wait();
    let results: Vec<Masks> = threads.into_iter().map(|t| t.join().expect("a session thread panicked")).collect();
    let secs = t0.elapsed().as_secs_f32();
    for (i, m) in results.iter().enumerate() {
        assert_eq!(m, &alone, "session {i} of 8 got other masks than a lone session");
    }
    println!(
        "8 sessions at once: {} frames each in {secs:.1} s all together ({:.2} frames/s aggregate)",
        24,
        8.0 * 24.0 / secs
    );
    let r = request(port, "GET", "/healthy", &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    // Left: at most the one spare worker (--warm-workers 1) waiting for the next session
    // (closeSession answers at once; the others stop in the background).
    let t1 = std::time::Instant::now();
    while children_of(server.pid()).len() > 1 {
        let left = children_of(server.pid());
        assert!(t1.elapsed().as_secs() < 60, "every closed session's worker but one spare stops; left: {left:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // A second server on the same port: exit 1, saying so.
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--port", &port.to_string(), "--checkpoint"])
        .arg(&ckpt)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

/// The serve-* session folders under `root`.
fn session_folders(root: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.retain(|n| n.starts_with("serve-"));
    v.sort();
    v
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool, log: impl Fn() -> String) {
    let t0 = std::time::Instant::now();
    while !done() {
        assert!(t0.elapsed().as_secs() < 120, "{what}; the server's log:\n{}", log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A closed session's worker serves the next session as a new one: it goes back to the
/// spares (one worker process all along, no new one started), the closed session's folder
/// is gone, and the next session on that worker gets exactly the first one's masks; a
/// session started right after a close waits for that worker instead of starting one.
#[test]
fn a_closed_sessions_worker_serves_the_next_session_as_new() {
    let work = common::scratch("serve-recycle");
    let data = work.join("data");
    make_clip(&data, "01_testsrc.mp4", 1.0, "320x240");
    let xdg = work.join("xdg");
    let server = Server::start(
        "recycle",
        &data,
        &present_checkpoint(),
        &["--image-size", "256", "--warm-workers", "1"],
        &[("XDG_DATA_HOME", xdg.to_str().unwrap())],
    );
    let root = xdg.join("sam2-tui/sessions");
    let log = || server.log_text();
    wait_for("the spare worker did not load", || log().contains("is ready as a spare"), log);
    let worker = children_of(server.pid());
    let mut folders = session_folders(&root);
    assert_eq!(folders.len(), 1, "the spare's folder: {folders:?}");
    let mut masks = vec![];
    for round in 1..=3 {
        masks.push(one_session(server.port, None, None));
        wait_for(
            &format!("session {round}'s worker did not become a spare again"),
            || log().matches("is a spare again").count() == round,
            log,
        );
        assert_eq!(children_of(server.pid()), worker, "round {round}: the same worker process, and no other");
        let now = session_folders(&root);
        assert_eq!(now.len(), 1, "round {round}: only the spare's folder is left: {now:?}");
        assert_ne!(now, folders, "round {round}: the closed session's folder is gone");
        folders = now;
    }
    // As the demo's front end does when its user picks another video: startSession right
    // after closeSession, while the worker is still on its way back. It waits for it.
    for _ in 4..=5 {
        masks.push(one_session(server.port, None, None));
    }
    wait_for("the last worker did not become a spare again", || log().matches("is a spare again").count() == 5, log);
    assert_eq!(children_of(server.pid()), worker, "the same worker process, and no other");
    assert_eq!(masks[0].len(), 24 * 2, "every frame has both objects");
    assert_eq!(masks[1], masks[0], "the second session on the worker got other masks");
    for (i, m) in masks.iter().enumerate().skip(2) {
        assert_eq!(m, &masks[0], "session {} on the worker got other masks", i + 1);
    }
    let started = log().matches(&format!("; worker {} on cpu", worker[0])).count();
    assert_eq!(started, 5, "all five sessions started on worker {}:\n{}", worker[0], log());
}

/// A server of one gallery video at a 256-pixel input whose idle sessions close after
/// 2 s and that keeps no spare worker (a start takes a process start and a model load);
/// `extra` arguments on top.
fn idle_server(name: &str, extra: &[&str]) -> Server {
    let data = common::scratch(&format!("serve-{name}")).join("data");
    make_clip(&data, "01_testsrc.mp4", 1.0, "320x240");
    let mut args = vec!["--image-size", "256", "--idle-timeout", "2", "--warm-workers", "0"];
    args.extend_from_slice(extra);
    Server::start(name, &data, &present_checkpoint(), &args, &[])
}

#[test]
fn an_idle_session_expires_and_its_worker_stops() {
    let server = idle_server("idle", &[]);
    let v = graphql(server.port, M_START, json!({"input": {"path": "gallery/01_testsrc.mp4"}}));
    let sid = v["data"]["startSession"]["sessionId"].as_str().unwrap().to_string();
    assert_eq!(children_of(server.pid()).len(), 1, "one worker for the session");
    let t0 = std::time::Instant::now();
    while !children_of(server.pid()).is_empty() {
        assert!(t0.elapsed().as_secs() < 30, "the idle session's worker is still running");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let v = graphql(
        server.port,
        M_ADD,
        json!({"input": {"sessionId": sid, "frameIndex": 0, "clearOldPoints": true, "objectId": 0, "labels": [1], "points": [[0.5, 0.5]]}}),
    );
    assert_eq!(error_of(&v), format!("Cannot find session {sid}; it might have expired"));
    // The close is logged once its folder is gone, which may be just after the worker.
    let t0 = std::time::Instant::now();
    while !server.log_text().contains("closed (idle for 2 s)") {
        assert!(t0.elapsed().as_secs() < 30, "no idle close in the log:\n{}", server.log_text());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_client_that_hangs_up_while_its_session_starts_gives_its_place_back() {
    // One place, no spare worker: a start takes a process start and a model load.
    let server = idle_server("hang-up", &["--max-sessions", "1"]);
    let body = json!({"query": M_START, "variables": {"input": {"path": "gallery/01_testsrc.mp4"}}}).to_string();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    std::io::Write::write_all(&mut client, [head.as_bytes(), body.as_bytes()].concat().as_slice()).unwrap();
    // The start is under way once its worker runs; the client hangs up before the answer.
    let t0 = std::time::Instant::now();
    while children_of(server.pid()).is_empty() {
        assert!(t0.elapsed().as_secs() < 60, "no worker started:\n{}", server.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(client);
    // The abandoned session still opens, nobody uses it, the reaper closes it: the one
    // place is free again. Before, the dropped start kept it reserved for good.
    let t0 = std::time::Instant::now();
    loop {
        let v = graphql(server.port, M_START, json!({"input": {"path": "gallery/01_testsrc.mp4"}}));
        if v["data"]["startSession"]["sessionId"].is_string() {
            break;
        }
        assert!(error_of(&v).contains("too many sessions"), "{v}");
        assert!(t0.elapsed().as_secs() < 90, "the hung-up start still holds the place: {v}\n{}", server.log_text());
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
