//! One exit-code scheme for every command (README, "Exit codes"): 0 ok, 1 a run that
//! failed, 2 bad input or usage, 130 interrupted. Each command is run for real with one
//! bad input; bad input is exit 2 and exactly one stderr line naming the file, before any
//! model work (the checkpoint these runs name does not even exist unless it is the point).
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> Output {
    Command::new(common::bin()).args(args).env("OMP_NUM_THREADS", "1").env("RUST_BACKTRACE", "0").output().unwrap()
}

/// Exit 2, one line on stderr, and that line names `file`.
fn assert_bad_input(out: &Output, file: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(file), "names {file}: {err}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 128×64 PNG (the frame every segment case below runs on).
fn frame(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_pixel(w, h, image::Rgb([90, 120, 150])).save(path).unwrap();
}

/// A PNG whose header claims `w`×`h` pixels and whose data is one empty IDAT: cheap to
/// write, ruinous to decode.
fn png_header_only(path: &Path, w: u32, h: u32) {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    std::fs::write(path, png).unwrap();
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(s(path)).unwrap();
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

struct Scene {
    dir: PathBuf,
    image: PathBuf,
    prompts: PathBuf,
}

fn scene(name: &str) -> Scene {
    let dir = common::scratch(&format!("exit-codes-{name}"));
    let image = dir.join("still.png");
    frame(&image, 128, 64);
    let prompts = dir.join("prompts.json");
    std::fs::write(&prompts, r#"{"objects":[{"id":1,"points":[[40,30,1]]}]}"#).unwrap();
    Scene { dir, image, prompts }
}

fn segment(input: &Path, ops: (&str, &Path), sc: &Scene, extra: &[&str]) -> Output {
    let out = sc.dir.join("out");
    let ckpt = sc.dir.join("no-such.random-init.safetensors");
    let mut args = vec![
        "segment",
        s(input),
        ops.0,
        s(ops.1),
        "--out",
        s(&out),
        "--checkpoint",
        s(&ckpt),
        "--device",
        "cpu",
        "--image-size",
        "128",
    ];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert!(!out.exists(), "nothing is written for bad input");
    r
}

#[test]
fn each_command_exits_2_with_one_line_naming_the_file_for_a_bad_input() {
    let sc = scene("commands");
    let missing = sc.dir.join("missing.mp4");
    assert_bad_input(&segment(&missing, ("--prompts", &sc.prompts), &sc, &[]), "missing.mp4");
    assert_bad_input(&run(&["preview", s(&missing)]), "missing.mp4");
    assert_bad_input(&run(&["bench", "--frames-dir", s(&missing), "--devices", "cpu"]), "missing.mp4");
    assert_bad_input(&run(&[s(&missing)]), "missing.mp4");
    // The console checks a resumed session against the video before it takes the terminal.
    let far = sc.dir.join("far.session.json");
    std::fs::write(&far, r#"{"version":1,"ops":[{"op":"add_prompt","frame":0,"object":1,"points":[[500,30,1]]}]}"#)
        .unwrap();
    let r = run(&[s(&sc.image), "--session", s(&far)]);
    assert_bad_input(&r, "far.session.json");
    assert!(String::from_utf8_lossy(&r.stderr).contains("outside the 128x64 frame"));
    let ckpt = sc.dir.join("gone.pt");
    assert_bad_input(&run(&["weights", "inspect", s(&ckpt)]), "gone.pt");
    assert_bad_input(&run(&["doctor", "--checkpoint", s(&ckpt)]), "gone.pt");
    assert_bad_input(&run(&["serve", "--checkpoint", s(&ckpt), "--port", "0"]), "gone.pt");
    let not_random = sc.dir.join("tiny.safetensors");
    assert_bad_input(&run(&["weights", "init-random", s(&not_random)]), "tiny.safetensors");
    assert!(!not_random.exists());
    // Usage errors are clap's, also 2 (several lines: the usage).
    for args in [
        &["engine", "--bogus"][..],
        &["segment", s(&sc.image), "--out", "x", "--prompts", s(&sc.prompts), "--image-size", "100"],
    ] {
        let r = run(args);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&r.stderr));
    }
}

#[test]
fn an_image_size_the_model_cannot_take_is_refused_at_argument_parsing() {
    let sc = scene("image-size");
    let out = sc.dir.join("out");
    let r = run(&["segment", s(&sc.image), "--prompts", s(&sc.prompts), "--out", s(&out), "--image-size", "100"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("multiple of 64"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_prompts_are_refused_by_name_before_any_model_work() {
    let sc = scene("prompts");
    let cases: &[(&str, &str, &str)] = &[
        ("outside.json", r#"{"objects":[{"id":1,"points":[[3e38,3e38,1]]}]}"#, "outside the 128x64 frame"),
        ("outside-box.json", r#"{"objects":[{"id":1,"box":[0,0,129,10]}]}"#, "outside the 128x64 frame"),
        ("typo.json", r#"{"objects":[{"id":1,"pointz":[[4,3,1]],"box":[0,0,5,5]}]}"#, "pointz"),
        ("empty.json", r#"{"objects":[]}"#, "no objects"),
        ("twice.json", r#"{"objects":[{"id":2,"points":[[4,3,1]]},{"id":2,"box":[0,0,5,5]}]}"#, "given twice"),
    ];
    for (name, text, why) in cases {
        let p = sc.dir.join(name);
        std::fs::write(&p, text).unwrap();
        let r = segment(&sc.image, ("--prompts", &p), &sc, &[]);
        assert_bad_input(&r, name);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains(why), "{name}: {err}");
    }
    let session = sc.dir.join("typo.session.json");
    std::fs::write(&session, r#"{"version":1,"ops":[{"op":"propagate","revers":true}]}"#).unwrap();
    assert_bad_input(&segment(&sc.image, ("--session", &session), &sc, &[]), "typo.session.json");
}

#[test]
fn endless_huge_and_special_files_are_refused_without_hanging_or_reading_them() {
    let sc = scene("limits");
    let t = Instant::now();
    let fifo = sc.dir.join("prompts.fifo");
    mkfifo(&fifo);
    assert_bad_input(&segment(&sc.image, ("--prompts", &fifo), &sc, &[]), "prompts.fifo");
    assert_bad_input(&segment(&sc.image, ("--prompts", Path::new("/dev/zero")), &sc, &[]), "/dev/zero");
    assert_bad_input(&segment(&sc.image, ("--session", &sc.dir), &sc, &[]), "is a directory");
    let big = sc.dir.join("big.json");
    std::fs::File::create(&big).unwrap().set_len(17 << 20).unwrap();
    assert_bad_input(&segment(&sc.image, ("--session", &big), &sc, &[]), "big.json");
    let many = sc.dir.join("many-points.json");
    let pts = vec!["[4,3,1]"; 300].join(",");
    std::fs::write(&many, format!(r#"{{"objects":[{{"id":1,"points":[{pts}]}}]}}"#)).unwrap();
    assert_bad_input(&segment(&sc.image, ("--prompts", &many), &sc, &[]), "many-points.json");
    let input_fifo = sc.dir.join("video.fifo");
    mkfifo(&input_fifo);
    assert_bad_input(&segment(&input_fifo, ("--prompts", &sc.prompts), &sc, &[]), "video.fifo");
    let ckpt_fifo = sc.dir.join("ckpt.random-init.safetensors");
    mkfifo(&ckpt_fifo);
    let r = run(&[
        "segment",
        s(&sc.image),
        "--prompts",
        s(&sc.prompts),
        "--out",
        s(&sc.dir.join("out")),
        "--checkpoint",
        s(&ckpt_fifo),
        "--image-size",
        "128",
    ]);
    assert_bad_input(&r, "ckpt.random-init.safetensors");
    assert!(t.elapsed() < Duration::from_secs(60), "took {:?}", t.elapsed());
}

#[test]
fn frames_of_mixed_sizes_a_huge_image_header_and_a_bad_overlay_are_refused_up_front() {
    let sc = scene("media");
    let folder = sc.dir.join("frames");
    std::fs::create_dir_all(&folder).unwrap();
    frame(&folder.join("00000.png"), 128, 64);
    frame(&folder.join("00001.png"), 128, 64);
    frame(&folder.join("00002.png"), 64, 64);
    let r = segment(&folder, ("--prompts", &sc.prompts), &sc, &[]);
    assert_bad_input(&r, "00002.png");
    assert!(String::from_utf8_lossy(&r.stderr).contains("64x64"));

    let huge = sc.dir.join("huge.png");
    png_header_only(&huge, 100_000, 100_000);
    let r = segment(&huge, ("--prompts", &sc.prompts), &sc, &[]);
    assert_bad_input(&r, "huge.png");
    assert!(String::from_utf8_lossy(&r.stderr).contains("100000x100000"));

    for overlay in [sc.dir.join("overlay.notavideo"), sc.dir.clone(), sc.image.join("x.mp4")] {
        let r = segment(&sc.image, ("--prompts", &sc.prompts), &sc, &["--overlay", s(&overlay)]);
        assert_bad_input(&r, s(&overlay));
    }
}
