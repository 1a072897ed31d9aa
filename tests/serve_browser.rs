//! The official SAM 2 web demo's front end (facebookresearch/sam2 @ 2b90b9f, demo/frontend,
//! built with its own package manager and lock file by scripts/official_frontend.sh) in
//! Debian's headless Chromium, driven over CDP (tests/serve/browser/drive.cjs), against
//! `sam2-tui serve`: the default video loads, a click on an object draws its mask on the
//! canvas, a second object is added, "Track objects" streams both to the last frame, the
//! second object is removed. Then the same flow with a worker that aborts (SIGABRT) in the
//! middle of the stream, and with one that hangs until the watchdog kills it: the page
//! receives the same masks, RLE string for RLE string, as in the clean run.
//!
//! The front end is pointed at the server through its own settings (the endpoints it keeps
//! in localStorage), its source unchanged (three of its dependencies that the npm registry
//! no longer has are replaced: README, "Serve"). Screenshots, every backend answer the page got
//! (network.json, and the masks in it one a line: masks.txt), its console and serve's log:
//! target/test-artifacts/serve-browser/<run>/.
//! At a 256-pixel model input on a one-second clip: this is about the serving, not the numbers.
//!
//! No official source, no Chromium or no Node: one `SKIPPED:` line and a pass, unless
//! SAM2_TUI_REQUIRE_OFFICIAL=1 (then a failure).
mod common;

use common::serve::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The clip: one second at 24 fps.
const FRAMES: u64 = 24;

struct FrontEnd {
    dist: PathBuf,
    driver: PathBuf,
    chromium: PathBuf,
}

fn skip(why: &str) -> Option<FrontEnd> {
    if std::env::var("SAM2_TUI_REQUIRE_OFFICIAL").as_deref() == Ok("1") {
        panic!("SAM2_TUI_REQUIRE_OFFICIAL=1 and the browser test cannot run: {why}");
    }
    // Straight to the process's stderr: libtest captures eprintln!, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED: serve_browser: {why}");
    None
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n))).find(|p| p.is_file())
}

/// `scripts/official_frontend.sh <what>`: the folder it prints, or why not (exit 77: no source).
fn frontend_script(what: &str) -> Result<PathBuf, (Option<i32>, String)> {
    let out = Command::new("bash")
        .arg(repo().join("scripts/official_frontend.sh"))
        .arg(what)
        .output()
        .expect("cannot run scripts/official_frontend.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err((out.status.code(), text));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim()))
}

fn front_end() -> Option<FrontEnd> {
    let chromium = match std::env::var_os("SAM2_TUI_CHROMIUM") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "SAM2_TUI_CHROMIUM={}: no such file", p.display());
            p
        }
        None => match on_path(&["chromium", "chromium-browser"]) {
            Some(p) => p,
            None => return skip("no chromium on PATH (scripts/setup.sh --test installs Debian's)"),
        },
    };
    if on_path(&["node"]).is_none() {
        return skip("no node on PATH (scripts/setup.sh --test installs it)");
    }
    let dist = match frontend_script("build") {
        Ok(d) => d,
        Err((Some(77), text)) => return skip(&format!("no source of the official front end:\n{text}")),
        Err((_, text)) => panic!("scripts/official_frontend.sh build failed:\n{text}"),
    };
    let driver = frontend_script("driver").unwrap_or_else(|(_, t)| panic!("official_frontend.sh driver failed:\n{t}"));
    Some(FrontEnd { dist, driver, chromium })
}

/// One browser session against a fresh server; its artefact folder.
fn run(fe: &FrontEnd, data: &Path, ckpt: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> (PathBuf, String) {
    let out = repo().join("target/test-artifacts/serve-browser").join(name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let mut all = vec!["--image-size", "256"];
    all.extend_from_slice(args);
    let mut server = Server::start(&format!("browser-{name}"), data, ckpt, &all, env);
    let t0 = std::time::Instant::now();
    let o = Command::new("node")
        .arg(repo().join("tests/serve/browser/drive.cjs"))
        .arg("--app")
        .arg(&fe.dist)
        .args(["--api", &server.url, "--out"])
        .arg(&out)
        .arg("--driver")
        .arg(&fe.driver)
        .arg("--chromium")
        .arg(&fe.chromium)
        .output()
        .expect("cannot run node");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    println!("{name}: the browser flow took {:.1} s\n{text}", t0.elapsed().as_secs_f64());
    let running = server.is_running();
    server.stop();
    let log = server.log_text();
    std::fs::write(out.join("serve.log"), &log).unwrap();
    assert!(running, "{name}: serve died; its log:\n{log}");
    assert!(
        o.status.success(),
        "{name}: the browser flow failed (screenshots and console in {}):\n{text}\nserve's log:\n{log}",
        out.display()
    );
    (out, log)
}

fn network(out: &Path) -> Vec<Value> {
    serde_json::from_slice(&std::fs::read(out.join("network.json")).unwrap()).unwrap()
}

fn rle_list(v: &Value) -> Vec<(u64, String)> {
    v["rleMaskList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["objectId"].as_u64().unwrap(), format!("{} {}", m["rleMask"]["size"], m["rleMask"]["counts"])))
        .collect()
}

/// Every mask the page received, in the order it received them, one line each:
/// `<answer> frame <f> object <o> <size> <counts>`.
fn masks(out: &Path) -> Vec<String> {
    let mut lines = vec![];
    for e in network(out) {
        if let Some(parts) = e["parts"].as_array() {
            for p in parts {
                for r in p["results"].as_array().unwrap() {
                    lines.push(format!(
                        "stream frame {} object {} {} {}",
                        p["frame_index"], r["object_id"], r["mask"]["size"], r["mask"]["counts"]
                    ));
                }
            }
        }
        let data = &e["response"]["data"];
        if let Some(a) = data.get("addPoints") {
            for (o, m) in rle_list(a) {
                lines.push(format!("addPoints frame {} object {o} {m}", a["frameIndex"]));
            }
        }
        if let Some(frames) = data.get("removeObject").and_then(Value::as_array) {
            for f in frames {
                for (o, m) in rle_list(f) {
                    lines.push(format!("removeObject frame {} object {o} {m}", f["frameIndex"]));
                }
            }
        }
    }
    // Beside the run's other artefacts, so two runs can be diffed by hand.
    std::fs::write(out.join("masks.txt"), lines.join("\n") + "\n").unwrap();
    lines
}

/// What the clean run must show: the flow's answers, the stream covering every frame once.
fn check_clean(out: &Path) {
    let net = network(out);
    let ops: Vec<&str> = net.iter().filter_map(|e| e["operation"].as_str()).collect();
    for op in ["SAM2ModelStartSessionMutation", "SAM2ModelAddNewPointsMutation", "SAM2ModelRemoveObjectMutation"] {
        assert!(ops.contains(&op), "the page never got a {op} answer: {ops:?}");
    }
    for e in &net {
        assert_eq!(e["status"], 200, "a backend answer that is not 200: {e}");
        assert!(e["response"].get("errors").is_none(), "a GraphQL error reached the page: {e}");
    }
    let streams: Vec<&Value> = net.iter().filter(|e| e["path"] == "/propagate_in_video").collect();
    assert_eq!(streams.len(), 1, "one propagation");
    let parts = streams[0]["parts"].as_array().unwrap();
    let frames: Vec<u64> = parts.iter().map(|p| p["frame_index"].as_u64().unwrap()).collect();
    assert_eq!(frames, (0..FRAMES).collect::<Vec<_>>(), "the stream reaches the last frame, each frame once");
    for p in parts {
        let objects: Vec<u64> =
            p["results"].as_array().unwrap().iter().map(|r| r["object_id"].as_u64().unwrap()).collect();
        assert_eq!(objects, [0, 1], "both objects on frame {}", p["frame_index"]);
    }
    let removed = net.iter().find(|e| e["operation"] == "SAM2ModelRemoveObjectMutation").unwrap();
    let left = removed["response"]["data"]["removeObject"].as_array().unwrap();
    assert!(
        left.iter().all(|f| rle_list(f).iter().all(|(o, _)| *o == 0)),
        "object 1 is gone from what removeObject answers: {removed}"
    );
    let steps: Vec<Value> = serde_json::from_slice(&std::fs::read(out.join("steps.json")).unwrap()).unwrap();
    let click = steps.iter().find(|s| s["step"] == "click-object").unwrap();
    println!(
        "clean: the first mask changed {:.1} % of the canvas's pixels",
        click["canvas_changed"].as_f64().unwrap() * 100.0
    );
}

fn assert_same_masks(clean: &[String], other: &[String], what: &str, log: &str) {
    assert_eq!(clean.len(), other.len(), "{what}: a different number of masks reached the page; serve's log:\n{log}");
    for (i, (a, b)) in clean.iter().zip(other).enumerate() {
        assert_eq!(a, b, "{what}: mask {i} differs from the clean run's; serve's log:\n{log}");
    }
}

#[test]
fn the_official_front_end_in_a_browser_gets_the_same_masks_through_a_worker_abort_and_hang() {
    let Some(fe) = front_end() else { return };
    let work = common::scratch("serve-browser");
    let data = work.join("data");
    make_clip(&data, "01_testsrc.mp4", 1.0, "320x240");
    let ckpt = present_checkpoint();

    let (clean, log) = run(&fe, &data, &ckpt, "clean", &[], &[]);
    assert!(!log.contains("worker died"), "the clean run must not crash:\n{log}");
    check_clean(&clean);
    let clean_masks = masks(&clean);

    // SIGABRT while frame 12 of the stream is computed: the session's supervisor replays
    // its journal on a fresh worker and the stream goes on from the next frame.
    let (aborted, log) = run(&fe, &data, &ckpt, "abort", &[], &[("SAM2_TUI_FAULT", "abort@frame=12")]);
    assert!(log.contains("worker died (SIGABRT"), "the fault must have fired:\n{log}");
    assert_same_masks(&clean_masks, &masks(&aborted), "abort@frame=12", &log);

    // A hang at frame 15 (no heartbeat, no progress): a short watchdog kills it.
    let config = work.join("watchdog.toml");
    std::fs::write(&config, "[supervisor]\nheartbeat_timeout_secs = 2\nprogress_timeout_secs = 5\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let (hung, log) = run(&fe, &data, &ckpt, "hang", &args, &[("SAM2_TUI_FAULT", "hang@frame=15")]);
    assert!(log.contains("worker died") && log.contains("watchdog"), "the watchdog must have killed it:\n{log}");
    assert_same_masks(&clean_masks, &masks(&hung), "hang@frame=15", &log);
    println!("{} masks, the same in the clean, aborted and hung runs", clean_masks.len());
}
