//! `sam2-tui segment` end to end: an mp4, a frame folder and a single image each produce
//! masks.json (COCO RLE), DAVIS palette PNGs and — with --logits — npy logits; bad input
//! is one clear line, a non-zero exit and nothing written.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A random-init checkpoint (the official layout), small model input for speed.
fn checkpoint() -> PathBuf {
    let dir = common::fixture_cache("segment-cli");
    let path = dir.join("sam2.1_hiera_tiny.random-init.safetensors");
    if !path.exists() {
        let st = Command::new(common::bin()).args(["weights", "init-random"]).arg(&path).status().unwrap();
        assert!(st.success());
    }
    path
}

fn segment(input: &Path, prompts: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    segment_with_env(input, prompts, out, extra, &[])
}

fn segment_with_env(
    input: &Path,
    prompts: &Path,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    segment_in(&out.with_extension("session"), &checkpoint(), input, prompts, out, extra, env)
}

fn segment_in(
    session: &Path,
    checkpoint: &Path,
    input: &Path,
    prompts: &Path,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    Command::new(common::bin())
        .arg("segment")
        .arg(input)
        .arg("--prompts")
        .arg(prompts)
        .arg("--out")
        .arg(out)
        .arg("--checkpoint")
        .arg(checkpoint)
        .args(["--device", "cpu", "--image-size", "128", "--session-dir"])
        .arg(session)
        .args(extra)
        .env("OMP_NUM_THREADS", "2")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn test_clip(path: &Path, frames: u32) {
    common::pattern_clip(path, frames, 0);
}

fn prompts(dir: &Path) -> PathBuf {
    let p = dir.join("prompts.json");
    std::fs::write(
        &p,
        r#"{"objects":[{"id":1,"frame":0,"points":[[40,30,1]]},{"id":2,"frame":0,"box":[70,10,110,50]}]}"#,
    )
    .unwrap();
    p
}

fn assert_outputs(out: &Path, frames: usize, w: u32, h: u32) {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("masks.json")).unwrap()).unwrap();
    assert_eq!(doc["video"]["frames"], frames);
    assert_eq!(doc["video"]["width"], w);
    assert_eq!(doc["video"]["height"], h);
    let fr = doc["frames"].as_array().unwrap();
    assert_eq!(fr.len(), frames, "every frame has masks");
    for f in fr {
        let objs = f["objects"].as_array().unwrap();
        assert_eq!(objs.len(), 2);
        for o in objs {
            assert_eq!(o["rle"]["size"], serde_json::json!([h, w]));
            assert!(o["score"].is_number());
        }
    }
    for i in 0..frames {
        let png = image::open(out.join(format!("annotations/{i:05}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (w, h));
        for obj in [1, 2] {
            let npy = std::fs::read(out.join(format!("logits/{obj}/{i:05}.npy"))).unwrap();
            assert_eq!(&npy[1..6], b"NUMPY");
            assert_eq!(npy.len() - (npy[8] as usize + npy[9] as usize * 256 + 10), (w * h * 4) as usize);
        }
    }
}

#[test]
fn an_mp4_a_frame_folder_and_an_image_each_produce_the_three_outputs() {
    let dir = common::scratch("segment-cli");
    let p = prompts(&dir);
    let mp4 = dir.join("clip.mp4");
    test_clip(&mp4, 5);
    let out = dir.join("out-mp4");
    let r = segment(&mp4, &p, &out, &["--logits", "--overlay", dir.join("overlay.mp4").to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_outputs(&out, 5, 128, 64);
    assert!(std::fs::metadata(dir.join("overlay.mp4")).unwrap().len() > 0);

    let folder = dir.join("frames");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..3u32 {
        image::RgbImage::from_fn(128, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 3 + i * 20) as u8, 90]))
            .save(folder.join(format!("{i:05}.png")))
            .unwrap();
    }
    let out = dir.join("out-folder");
    let r = segment(&folder, &p, &out, &["--logits"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_outputs(&out, 3, 128, 64);

    let out = dir.join("out-image");
    let r = segment(&folder.join("00001.png"), &p, &out, &["--logits"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_outputs(&out, 1, 128, 64);
}

#[test]
fn bad_input_is_one_line_naming_the_file_and_writes_nothing() {
    let dir = common::scratch("segment-cli-bad");
    let p = prompts(&dir);
    let not_video = dir.join("notes.mp4");
    std::fs::write(&not_video, "hello").unwrap();
    let out = dir.join("out");
    let r = segment(&not_video, &p, &out, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("notes.mp4"), "{err}");
    assert!(!out.exists());

    let bad_prompts = dir.join("bad.json");
    std::fs::write(&bad_prompts, r#"{"objects":[{"id":1,"frame":0}]}"#).unwrap();
    let img = dir.join("one.png");
    image::RgbImage::new(32, 32).save(&img).unwrap();
    let r = segment(&img, &bad_prompts, &out, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("bad.json") && err.contains("points or a box"), "{err}");
    assert!(!out.exists());

    let far = dir.join("far.json");
    std::fs::write(&far, r#"{"objects":[{"id":1,"frame":9,"points":[[1,1,1]]}]}"#).unwrap();
    let r = segment(&img, &far, &out, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("frame 9 out of range"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_worker_crash_mid_run_does_not_fail_the_command_or_change_the_masks() {
    let dir = common::scratch("segment-cli-crash");
    let p = prompts(&dir);
    let mp4 = dir.join("clip.mp4");
    test_clip(&mp4, 6);
    let clean = dir.join("clean");
    let r = segment(&mp4, &p, &clean, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    let crashed = dir.join("crashed");
    let r = segment_with_env(&mp4, &p, &crashed, &[], &[("SAM2_TUI_FAULT", "abort@frame=3")]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("SIGABRT") && err.contains("1 worker restart"), "{err}");
    let a: serde_json::Value = serde_json::from_slice(&std::fs::read(clean.join("masks.json")).unwrap()).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(crashed.join("masks.json")).unwrap()).unwrap();
    assert_eq!(a["frames"], b["frames"], "masks after a crash differ from an uninterrupted run");
}

/// A scratch folder with a test clip of `frames` frames, its prompts and a config file
/// holding `config`: (folder, prompts, clip, config).
fn clip_with_config(name: &str, frames: u32, config: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = common::scratch(name);
    let p = prompts(&dir);
    let mp4 = dir.join("clip.mp4");
    test_clip(&mp4, frames);
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    (dir, p, mp4, path)
}

#[test]
fn the_config_file_reaches_a_segment_run_and_a_flag_beats_it() {
    // One configuration path for every command: `segment` starts its engine from the same
    // config.toml as the console, with its flags applied over it.
    let (dir, p, mp4, config) = clip_with_config("segment-cli-config", 3, "[engine]\nprecision = \"bf16\"\n");
    let engine_of = |out: &Path| {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("masks.json")).unwrap()).unwrap();
        doc["engine"].clone()
    };

    let plain = dir.join("plain");
    let r = segment(&mp4, &p, &plain, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(engine_of(&plain)["precision"], "fp32", "auto is fp32 on the CPU");
    assert_eq!(engine_of(&plain)["device"], "cpu");

    let configured = dir.join("configured");
    let r = segment(&mp4, &p, &configured, &["--config", config.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(engine_of(&configured)["precision"], "bf16", "the config file's [engine] precision");

    let from_env = dir.join("from-env");
    let r = segment_with_env(&mp4, &p, &from_env, &[], &[("SAM2_TUI_CONFIG", config.to_str().unwrap())]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(engine_of(&from_env)["precision"], "bf16", "the config found through $SAM2_TUI_CONFIG");

    let flagged = dir.join("flagged");
    let r = segment(&mp4, &p, &flagged, &["--config", config.to_str().unwrap(), "--precision", "fp32"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(engine_of(&flagged)["precision"], "fp32", "a flag beats the file");
}

#[test]
fn the_config_files_supervisor_settings_govern_a_segment_run() {
    // No restarts allowed and no ladder: the injected crash fails the run (without the
    // config the same crash costs one restart, see the test above), and nothing is written.
    let (dir, p, mp4, config) = clip_with_config(
        "segment-cli-config-supervisor",
        6,
        "[engine]\nfallback = []\n[supervisor]\nmax_restarts = 0\n",
    );
    let out = dir.join("out");
    let r = segment_with_env(
        &mp4,
        &p,
        &out,
        &["--config", config.to_str().unwrap()],
        &[("SAM2_TUI_FAULT", "abort@frame=3")],
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(!out.exists(), "a failed run leaves no output");
}

#[test]
fn a_session_directory_left_by_an_earlier_run_does_not_leak_into_the_next() {
    // A new run starts from its own journal. The memory bank an earlier process left in
    // the same --session-dir (its masks, its frames marked tracked) belongs to that run:
    // reused, the new click became a correction of the old run's mask, and the old mask
    // was what came out for the clicked frame.
    let dir = common::scratch("segment-cli-stale-bank");
    let mp4 = dir.join("clip.mp4");
    test_clip(&mp4, 4);
    let ckpt = common::present_tiny_checkpoint(&dir);
    let click = |name: &str, x: u32, y: u32| {
        let p = dir.join(name);
        std::fs::write(&p, format!(r#"{{"objects":[{{"id":1,"frame":0,"points":[[{x},{y},1]]}}]}}"#)).unwrap();
        p
    };
    let (left, right) = (click("left.json", 30, 30), click("right.json", 100, 40));
    let shared = dir.join("shared.session");
    let _ = std::fs::remove_dir_all(&shared);
    for (session, prompts, out) in
        [(&shared, &left, "first"), (&shared, &right, "second"), (&dir.join("fresh.session"), &right, "fresh")]
    {
        let r = segment_in(session, &ckpt, &mp4, prompts, &dir.join(out), &["--logits"], &[]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    for i in 0..4 {
        let npy = format!("logits/1/{i:05}.npy");
        let first = std::fs::read(dir.join("first").join(&npy)).unwrap();
        let second = std::fs::read(dir.join("second").join(&npy)).unwrap();
        let fresh = std::fs::read(dir.join("fresh").join(&npy)).unwrap();
        assert!(first != fresh, "{npy}: the two clicks should give different masks");
        assert!(second == fresh, "{npy}: a run in a used session directory differs from the same run in a fresh one");
    }
}

/// The random-init checkpoint with a NaN in the first weight of the image encoder: every
/// feature, logit and score downstream is NaN (as fp16 overflow on MPS makes them).
fn nan_checkpoint() -> PathBuf {
    let path = common::fixture_cache("segment-cli").join("sam2.1_hiera_tiny.nan.random-init.safetensors");
    if !path.exists() {
        let mut named = tch::Tensor::read_safetensors(checkpoint()).unwrap();
        let (_, w) = named.iter_mut().find(|(k, _)| k == "image_encoder.trunk.patch_embed.proj.weight").unwrap();
        let _ = w.get(0).fill_(f64::NAN);
        let tmp = path.with_extension("tmp");
        tch::Tensor::write_safetensors(&named, &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

#[test]
fn a_checkpoint_holding_a_nan_gives_an_ordinary_result_not_a_crash_loop() {
    let dir = common::scratch("segment-cli-nan");
    let p = prompts(&dir);
    let img = dir.join("still.png");
    image::RgbImage::from_fn(128, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, 90])).save(&img).unwrap();
    let out = dir.join("out");
    let r = segment_in(&dir.join("session"), &nan_checkpoint(), &img, &p, &out, &[], &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("0 worker restart(s)") && !err.contains("died"), "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("masks.json")).unwrap()).unwrap();
    let objects = doc["frames"][0]["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 2);
    for o in objects {
        // JSON has no NaN: null, and the reason named beside it.
        assert!(o["score"].is_null(), "{o}");
        assert_eq!(o["score_nonfinite"], "NaN", "{o}");
        // NaN logits are not > 0: the reference's mask is empty, and so is ours.
        let rle: sam2_tui::rle::Rle = serde_json::from_value(o["rle"].clone()).unwrap();
        assert!(rle.decode().unwrap().iter().all(|&b| b == 0), "{o}");
    }
}

/// `--tune` reaches the worker: the `trace` knob has only the worker (the CLI never runs
/// the model) record its propagation with libtorch's profiler, here the first one.
#[test]
fn a_tune_knob_on_the_command_line_reaches_the_worker() {
    let dir = common::scratch("segment-cli-tune");
    let p = prompts(&dir);
    let mp4 = dir.join("clip.mp4");
    test_clip(&mp4, 3);
    let trace = dir.join("trace.json");
    let tune_trace = format!("trace={}", trace.display());
    let out = dir.join("out");
    let r = segment(&mp4, &p, &out, &["--tune", &tune_trace, "--tune", "trace_pass=1", "--tune", "pipeline_depth=2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let recorded = std::fs::read_to_string(&trace).expect("the worker wrote the trace it was told to");
    assert!(recorded.contains("traceEvents"), "a Chrome trace: {}", &recorded[..recorded.len().min(200)]);

    // A knob that does not exist is bad input, named with the knobs there are.
    let r = segment(&mp4, &p, &dir.join("out-typo"), &["--tune", "pipline_depth=2"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("pipline_depth") && err.contains("pipeline_depth"), "{err}");
    assert!(!dir.join("out-typo").exists());
}
