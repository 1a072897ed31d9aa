//! End to end through a real terminal: the `sam2-tui` binary inside tmux on a synthetic
//! clip (a frame folder with a moving disc): place points and a box, propagate, kill the
//! worker with SIGABRT mid-propagation (the supervisor must restart it and finish), export,
//! save the session, and compare the export with `segment --session` on the same journal.
//!
//! Needs the engine, the supervisor and `segment`, and a checkpoint
//! (`SAM2_TUI_E2E_CHECKPOINT`, default: the official tiny one in weights/).
mod common;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SESSION: &str = "sam2tui-e2e";

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screen_of(session: &str) -> String {
    tmux(&["capture-pane", "-p", "-t", session])
}

fn keys(k: &[&str]) {
    keys_to(SESSION, k)
}

fn keys_to(session: &str, k: &[&str]) {
    let mut a = vec!["send-keys", "-t", session];
    a.extend_from_slice(k);
    tmux(&a);
    std::thread::sleep(Duration::from_millis(150));
}

fn wait_for(what: &str, timeout: Duration) -> String {
    wait_for_in(SESSION, what, timeout)
}

fn wait_for_in(session: &str, what: &str, timeout: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let s = screen_of(session);
        if s.contains(what) {
            return s;
        }
        if t0.elapsed() > timeout {
            panic!("'{what}' did not appear within {timeout:?}; screen:\n{s}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn make_clip(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..24u32 {
        let img = image::RgbImage::from_fn(320, 240, |x, y| {
            let (dx, dy) = (x as i32 - (100 + 4 * i) as i32, y as i32 - 120);
            if dx * dx + dy * dy < 40 * 40 {
                image::Rgb([230, 60, 40])
            } else {
                image::Rgb([30, 90 + (y / 4) as u8, 60])
            }
        });
        img.save(dir.join(format!("{i:05}.jpg"))).unwrap();
    }
}

/// A random-init tiny checkpoint in the official format, nudged so masks are not empty
/// (made by the reference package: tests/fixtures/sam2_reference.py).
fn checkpoint() -> String {
    if let Ok(c) = std::env::var("SAM2_TUI_E2E_CHECKPOINT") {
        return c;
    }
    let dir = common::fixture_cache(&format!("console-e2e-{}", common::fixtures_version()));
    let path = dir.join("sam2.1_hiera_tiny_random.pt");
    if !path.exists() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let script = format!(
            "import sys\nsys.path.insert(0, {:?})\nfrom sam2_reference import make_checkpoint\nmake_checkpoint({:?}, 'tiny', '2.1', seed=9)\n",
            fixtures.to_string_lossy(),
            path.to_string_lossy()
        );
        let out = Command::new(common::python()).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    path.to_string_lossy().into_owned()
}

/// Model input size for this test: small, it is about the console, not the numerics.
const IMAGE_SIZE: &str = "256";

#[test]
fn operator_session_in_tmux_survives_an_abort_and_matches_segment() {
    let dir = common::scratch("console_e2e");
    let clip = dir.join("clip");
    make_clip(&clip);
    let session = dir.join("session.json");
    let export = dir.join("export");
    let ckpt = checkpoint();
    let cmd = format!(
        "{} {} {} --graphics halfblocks --device cpu --image-size {IMAGE_SIZE} --checkpoint {ckpt} --session {} --export-dir {}; sleep 30",
        common::pane_env(),
        common::bin().display(),
        clip.display(),
        session.display(),
        export.display()
    );
    let _ = tmux(&["kill-session", "-t", SESSION]);
    tmux(&["new-session", "-d", "-s", SESSION, "-x", "140", "-y", "45", &cmd]);

    wait_for("● ready", Duration::from_secs(180));
    // Cursor starts at the centre (160, 120); the disc is at (100, 120) on frame 0.
    keys(&["H", "Enter"]); // 50 px left: inside the disc
    keys(&["l", "l", "l", "l", "l", "l", "l", "x"]); // a negative point outside it
    keys(&["H", "H", "k", "k", "k", "k", "k", "b", "j", "j", "j", "j", "j", "j", "j", "j", "j", "j", "L", "b"]);
    keys(&["p"]);
    let s = wait_for("propagating", Duration::from_secs(60));
    let pid: u32 = s
        .split("worker ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no worker pid on screen:\n{s}"));
    Command::new("kill").args(["-ABRT", &pid.to_string()]).status().unwrap();
    wait_for("restarting", Duration::from_secs(30));
    wait_for("propagation finished", Duration::from_secs(600));
    keys(&["e"]);
    wait_for("exported to", Duration::from_secs(60));
    keys(&["s"]);
    wait_for("saved session", Duration::from_secs(10));
    keys(&["q"]);
    let _ = tmux(&["kill-session", "-t", SESSION]);

    let reference = dir.join("segment");
    let out = Command::new(common::bin())
        .args([
            "segment",
            clip.to_str().unwrap(),
            "--session",
            session.to_str().unwrap(),
            "--device",
            "cpu",
            "--image-size",
            IMAGE_SIZE,
        ])
        .args(["--checkpoint", &ckpt, "--out", reference.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a: serde_json::Value = serde_json::from_slice(&std::fs::read(export.join("masks.json")).unwrap()).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(reference.join("masks.json")).unwrap()).unwrap();
    assert_eq!(a["frames"], b["frames"], "the console's export differs from segment's");
}

/// The terminal-graphics query at start-up (no `--graphics`: the console asks tmux) must
/// leave stdin alone once answered: the very first key typed is the console's.
/// A pane runs with its tmux server's environment, not the test's. A developer who runs
/// the tests with a tmux server up that has their own `SAM2_TUI_DATA` must not find the
/// tests' session folders in their data folder.
#[test]
fn a_pane_in_a_tmux_server_with_the_developers_data_folder_still_uses_the_tests_own() {
    let dir = common::scratch("pane-env");
    let theirs = dir.join("developer-data");
    let said = dir.join("sessions.txt");
    // A server of this test's own (its socket), started with the developer's setting.
    let socket = "sam2tui-pane-env";
    let server =
        |args: &[&str]| Command::new("tmux").args(["-L", socket]).args(args).env("SAM2_TUI_DATA", &theirs).output();
    let cmd = format!("{} {} sessions > {} 2>&1", common::pane_env(), common::bin().display(), said.display());
    server(&[
        "new-session",
        "-d",
        "-s",
        "p",
        "-x",
        "100",
        "-y",
        "10",
        &format!("{cmd}; tmux -L {socket} wait-for -S done"),
    ])
    .unwrap();
    // Waits for the pane's signal, not for a time.
    let waited = server(&["wait-for", "done"]);
    let _ = server(&["kill-server"]);
    assert!(waited.unwrap().status.success());
    let said = std::fs::read_to_string(&said).unwrap();
    let ours = std::env::var("XDG_DATA_HOME").unwrap();
    assert!(said.contains(&ours) && !said.contains(&theirs.display().to_string()), "{said}");
    assert!(!theirs.exists(), "nothing written in the developer's data folder");
}

#[test]
fn the_first_key_typed_after_start_up_reaches_the_console_in_tmux() {
    const FIRST_KEY: &str = "sam2tui-first-key";
    let dir = common::scratch("console_first_key");
    let clip = dir.join("clip");
    make_clip(&clip);
    let cmd = format!(
        "{} {} {} --device cpu --image-size 128 --checkpoint {} --session {}; echo CONSOLE-EXITED; sleep 30",
        common::pane_env(),
        common::bin().display(),
        clip.display(),
        checkpoint(),
        dir.join("session.json").display()
    );
    let _ = tmux(&["kill-session", "-t", FIRST_KEY]);
    tmux(&["new-session", "-d", "-s", FIRST_KEY, "-x", "140", "-y", "45", &cmd]);
    // Drawn after the probe: from here on a key is input, not an answer.
    wait_for_in(FIRST_KEY, "preview:", Duration::from_secs(30));
    keys_to(FIRST_KEY, &["q"]);
    let s = std::panic::catch_unwind(|| wait_for_in(FIRST_KEY, "CONSOLE-EXITED", Duration::from_secs(10)));
    let _ = tmux(&["kill-session", "-t", FIRST_KEY]);
    assert!(s.is_ok(), "the first q did not quit the console");
}

#[test]
fn term_dumb_gets_one_clear_line_and_exit_code_2_instead_of_a_truecolor_dashboard() {
    let dir = common::scratch("console_dumb");
    let clip = dir.join("clip");
    make_clip(&clip);
    let out = Command::new(common::bin()).arg(&clip).env("TERM", "dumb").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("TERM=dumb") && err.lines().count() == 1, "{err}");
    assert!(out.stdout.is_empty(), "nothing drawn: {:?}", String::from_utf8_lossy(&out.stdout));
}

/// NO_COLOR drops the interface's colours, not the image's: with halfblocks the preview is
/// coloured cells, and those must keep their colours.
#[test]
fn no_color_keeps_the_preview_image_in_colour_and_drops_the_interface_colours() {
    const NO_COLOR: &str = "sam2tui-no-color";
    let dir = common::scratch("console_no_color");
    let clip = dir.join("clip");
    make_clip(&clip);
    let cmd = format!(
        "{} NO_COLOR=1 {} {} --graphics halfblocks --device cpu --image-size 128 --checkpoint {} --session {}; sleep 30",
        common::pane_env(),
        common::bin().display(),
        clip.display(),
        checkpoint(),
        dir.join("session.json").display()
    );
    let _ = tmux(&["kill-session", "-t", NO_COLOR]);
    tmux(&["new-session", "-d", "-s", NO_COLOR, "-x", "140", "-y", "45", &cmd]);
    wait_for_in(NO_COLOR, "preview:", Duration::from_secs(30));
    // Only the preview may carry true colours now: wait for it to be drawn.
    let t0 = Instant::now();
    let coloured = loop {
        let s = tmux(&["capture-pane", "-e", "-p", "-t", NO_COLOR]);
        if s.contains("48;2;") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    keys_to(NO_COLOR, &["q"]);
    let _ = tmux(&["kill-session", "-t", NO_COLOR]);
    assert!(coloured.contains("48;2;"), "the preview lost its colours:\n{coloured}");
    let header = coloured.lines().next().unwrap_or_default();
    assert!(!header.contains("38;2;"), "the interface is still coloured: {header:?}");
}
