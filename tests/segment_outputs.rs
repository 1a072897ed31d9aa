//! What `segment` may write, replace and leave behind: it never touches what it did not
//! write, refuses a bad `--out` before any model work, swaps a finished output in whole,
//! fails instead of publishing an incomplete one, and leaves nothing behind when it is
//! interrupted or killed — the same command then gives the same masks.
mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Setup {
    dir: PathBuf,
    clip: PathBuf,
    prompts: PathBuf,
    checkpoint: PathBuf,
}

fn setup(name: &str, frames: u32) -> Setup {
    let dir = common::scratch(name);
    let clip = dir.join("clip.mp4");
    common::pattern_clip(&clip, frames, 0);
    let prompts = dir.join("prompts.json");
    std::fs::write(
        &prompts,
        r#"{"objects":[{"id":1,"frame":0,"points":[[40,30,1]]},{"id":2,"frame":0,"box":[70,10,110,50]}]}"#,
    )
    .unwrap();
    let checkpoint = common::present_tiny_checkpoint(&common::fixture_cache("segment-outputs"));
    Setup { dir, clip, prompts, checkpoint }
}

impl Setup {
    /// The data directory this test's runs use (one-shot session folders go there).
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, input: &Path, out: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(common::bin());
        c.arg("segment")
            .arg(input)
            .arg("--prompts")
            .arg(&self.prompts)
            .arg("--out")
            .arg(out)
            .arg("--checkpoint")
            .arg(&self.checkpoint);
        c.args(["--device", "cpu", "--image-size", "128"]).args(extra);
        c.env("OMP_NUM_THREADS", "1").env("XDG_DATA_HOME", self.data());
        c
    }

    fn run(&self, out: &Path, extra: &[&str]) -> Output {
        self.command(&self.clip, out, extra).output().unwrap()
    }

    /// The one-shot session folders left in the data directory.
    fn sessions_left(&self) -> Vec<PathBuf> {
        let root = self.data().join("sam2-tui/sessions");
        std::fs::read_dir(root).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    }
}

/// Every file below `dir` with its bytes: to show that nothing changed.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".sam2-tui"))
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn masks(out: &Path) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("masks.json")).unwrap()).unwrap();
    doc["frames"].clone()
}

#[test]
fn an_out_that_is_the_input_or_anything_sam2_tui_did_not_write_is_refused_before_the_model_loads() {
    let s = setup("segment-outputs-refused", 3);
    let frames = s.dir.join("frames");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..3u32 {
        image::RgbImage::from_fn(128, 64, |x, y| image::Rgb([x as u8, (y * 3 + i) as u8, 90]))
            .save(frames.join(format!("{i:05}.png")))
            .unwrap();
    }
    let users = s.dir.join("holiday");
    std::fs::create_dir(&users).unwrap();
    std::fs::write(users.join("beach.jpg"), b"a user's photo").unwrap();
    let before = tree(&s.dir);
    // The checkpoint does not exist: an error about --out proves it was judged first.
    let no_model = Setup { checkpoint: s.dir.join("missing.pt"), ..s.clone() };
    let cases: [(&Path, &Path, &str); 5] = [
        (&frames, &frames, "is or contains the input"),
        (&frames, &s.dir, "is or contains the input"),
        (&frames, &frames.join("masks"), "inside the input"),
        (&s.clip, &users, "not written by sam2-tui"),
        (&frames, &s.clip, "not a folder"),
    ];
    for (input, out, why) in cases {
        let o = no_model.command(input, out, &[]).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", out.display());
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(why) && err.contains(&*out.display().to_string()), "{}: {err}", out.display());
    }
    let o = s.run(Path::new("/"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(tree(&s.dir), before, "a refused run changed files");
    assert!(leftovers(&s.dir).is_empty());
}

#[test]
fn a_second_run_replaces_its_own_output_whole_and_leaves_nothing_else() {
    let s = setup("segment-outputs-replace", 3);
    let out = s.dir.join("out");
    let overlay = s.dir.join("overlay.mp4");
    for _ in 0..2 {
        let o = s.run(&out, &["--overlay", overlay.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(out.join(".sam2-tui-output").is_file() && out.join("masks.json").is_file());
        assert!(std::fs::metadata(&overlay).unwrap().len() > 0);
    }
    assert!(leftovers(&s.dir).is_empty(), "{:?}", leftovers(&s.dir));
    assert!(s.sessions_left().is_empty(), "a one-shot run kept its memory bank: {:?}", s.sessions_left());
    // The user's own video at the overlay path is not overwritten.
    std::fs::write(&overlay, b"the user's edit").unwrap();
    let o = s.run(&out, &["--overlay", overlay.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::read(&overlay).unwrap(), b"the user's edit");
}

#[test]
fn logits_that_cannot_be_written_fail_the_run_and_publish_nothing() {
    let s = setup("segment-outputs-full-disk", 4);
    let out = s.dir.join("out");
    let overlay = s.dir.join("overlay.mp4");
    // A file-size limit the 32 KB logits files exceed and every other file fits in:
    // writes past it fail with EFBIG, as on a full disk.
    let mut c = s.command(&s.clip, &out, &["--logits", "--overlay", overlay.to_str().unwrap()]);
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 20_000, rlim_max: 20_000 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let o = c.output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--logits"), "{err}");
    assert!(!out.exists() && !overlay.exists(), "an incomplete run published its outputs");
    assert!(leftovers(&s.dir).is_empty(), "{:?}", leftovers(&s.dir));
}

/// Runs the command until `moment`, then `signal`s it; returns its exit status.
fn interrupt_at(mut c: Command, moment: Duration, signal: i32) -> std::process::ExitStatus {
    let mut child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while t.elapsed() < moment {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait().unwrap()
}

/// Waits until no process of ours runs `sam2-tui engine` (the killed run's worker dies
/// with its parent, a moment later).
fn await_no_workers() {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        let ours = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            cmd.starts_with(common::bin().to_string_lossy().as_bytes())
                && cmd.windows(7).any(|w| w == b"\0engine")
                && !stat.contains(") Z ")
        });
        if !ours {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("an engine worker outlived its killed parent");
}

#[test]
fn a_run_killed_at_any_moment_leaves_nothing_behind_and_the_same_command_gives_the_same_masks() {
    let s = setup("segment-outputs-killed", 6);
    let clean = s.dir.join("clean");
    let t = Instant::now();
    let o = s.run(&clean, &[]);
    let took = t.elapsed();
    assert!(o.status.success(), "{}", stderr(&o));
    let want = masks(&clean);
    let out = s.dir.join("out");
    // Moments spread over the whole run, start-up and publishing included; the seed is
    // printed so a failure can be replayed.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    println!("seed {seed}, a clean run takes {took:?}");
    let mut rng = seed;
    for round in 0..4 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let fraction = (rng >> 33) as f64 / (1u64 << 31) as f64;
        let moment = took.mul_f64(0.1 + fraction);
        let (signal, name) = if round % 2 == 0 { (libc::SIGKILL, "SIGKILL") } else { (libc::SIGTERM, "SIGTERM") };
        let status = interrupt_at(s.command(&s.clip, &out, &[]), moment, signal);
        await_no_workers();
        println!("round {round}: {name} at {moment:?}: {status:?}");
        if signal == libc::SIGTERM && status.code().is_some() && !status.success() {
            assert_eq!(status.code(), Some(130), "an interrupted run exits 130");
        }
        // Killed outright, the run may leave its staging folder: the next run sweeps it.
        if out.exists() {
            assert_eq!(masks(&out), want, "{name} at {moment:?} left a different output in place");
        }
        if signal == libc::SIGTERM {
            assert!(leftovers(&s.dir).is_empty(), "SIGTERM left {:?}", leftovers(&s.dir));
            assert!(s.sessions_left().is_empty(), "SIGTERM left {:?}", s.sessions_left());
        }
        let o = s.run(&out, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(masks(&out), want, "the rerun after {name} at {moment:?} gave other masks");
        assert!(leftovers(&s.dir).is_empty(), "after the rerun: {:?}", leftovers(&s.dir));
        assert!(s.sessions_left().is_empty(), "after the rerun: {:?}", s.sessions_left());
    }
}

#[test]
fn sam2_tui_data_moves_every_session_folder_and_the_weights_searched() {
    let s = setup("segment-outputs-data-folder", 40);
    let moved = s.dir.join("moved-data");
    let sessions = moved.join("sessions");
    let out = s.dir.join("out");
    let with_data = |mut c: Command| {
        c.env("SAM2_TUI_DATA", &moved);
        c
    };
    // A run's one-shot session folder is made in the moved data folder; killed (SIGKILL)
    // while that folder is there, the run leaves it for the next run to sweep.
    let mut child =
        with_data(s.command(&s.clip, &out, &[])).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while std::fs::read_dir(&sessions).map_or(true, |mut d| d.next().is_none()) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended without a session folder in {}", moved.display());
        assert!(t.elapsed() < Duration::from_secs(60), "no session folder in {}", sessions.display());
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    await_no_workers();
    assert_eq!(std::fs::read_dir(&sessions).unwrap().count(), 1);
    assert!(!s.data().join("sam2-tui").exists(), "nothing in the platform's data folder");
    // `sessions` looks there, and the next run sweeps the killed run's folder.
    let listed = with_data(Command::new(common::bin())).arg("sessions").output().unwrap();
    let said = String::from_utf8_lossy(&listed.stdout);
    assert!(said.contains(&format!("in {}", sessions.display())), "{said}");
    let rerun = with_data(s.command(&s.clip, &out, &[])).output().unwrap();
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert_eq!(std::fs::read_dir(&sessions).unwrap().count(), 0, "swept, and the rerun's own folder removed");
    // Downloaded weights are looked for there too.
    let weights = with_data(Command::new(common::bin())).arg("weights").output().unwrap();
    let said = String::from_utf8_lossy(&weights.stdout) + String::from_utf8_lossy(&weights.stderr);
    assert!(said.contains(&moved.join("weights").display().to_string()), "{said}");
}
