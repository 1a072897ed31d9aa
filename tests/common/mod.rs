//! Helpers shared by the integration tests: the Python environment that holds the
//! reference, a per-test scratch directory, the built binary.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod batch_outputs;
pub mod image_parity;
pub mod serve;
pub mod video_parity;

/// The Python of the set-up environment (`make test` exports SAM2_TUI_PYTHON).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("SAM2_TUI_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("SAM2_TUI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sam2-tui"));
    cache.join("venv/bin/python")
}

/// Runs a fixture script from `tests/fixtures/` with the reference's Python; panics with
/// its stderr when it fails.
pub fn run_fixture(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .env("OMP_NUM_THREADS", "2")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    if !out.status.success() {
        panic!("{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh, empty directory for one test, under target/ so it is easy to inspect.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A directory for fixtures that are expensive to make (reference checkpoints and
/// outputs), reused across tests in one run and keyed by the fixture script's content.
pub fn fixture_cache(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fixtures").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The engine's knobs for a model or session a test builds in process: the defaults,
/// with this process's `SAM2_TUI_*` environment on top as a worker would apply it (so
/// e.g. `SAM2_TUI_FP32_HEADS=0 cargo test …` still runs the A/B the README quotes).
pub fn tuning() -> sam2_tui::tuning::Tuning {
    sam2_tui::tuning::Tuning::from_env()
}

/// The `sam2-tui` binary built for this test run.
/// The binary under test. Every command reads a config file, so the first call points
/// `SAM2_TUI_CONFIG` at an empty one (unless a test run set it): the developer's own
/// `~/.config/sam2-tui/config.toml` must not change what the tests see. Likewise session
/// folders go to a data directory under target/, not the developer's.
pub fn bin() -> PathBuf {
    static HERMETIC: std::sync::Once = std::sync::Once::new();
    HERMETIC.call_once(|| {
        let scratch = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch");
        if std::env::var_os("SAM2_TUI_CONFIG").is_none() {
            // Under target/, one file for every test binary (all write it empty), so test
            // runs leave nothing behind in the system's temporary folder.
            std::fs::create_dir_all(&scratch).unwrap();
            let empty = scratch.join("empty-config.toml");
            std::fs::write(&empty, "").unwrap();
            std::env::set_var("SAM2_TUI_CONFIG", &empty);
        }
        // `SAM2_TUI_DATA` wins over `XDG_DATA_HOME`: a developer's own setting would send
        // every test's session folders into their data folder. Tests that move the data
        // folder set it on their own command.
        std::env::remove_var("SAM2_TUI_DATA");
        if std::env::var_os("XDG_DATA_HOME").is_none() {
            let data = scratch.join("data-home");
            std::fs::create_dir_all(&data).unwrap();
            std::env::set_var("XDG_DATA_HOME", data);
        }
    });
    PathBuf::from(env!("CARGO_BIN_EXE_sam2-tui"))
}

/// `env VAR='…' …` for a command run in a tmux pane: the pane gets the tmux server's
/// environment, not the test's, so the hermetic settings of `bin` (the empty config, the
/// data directory under target/) must travel explicitly. Without them a console started
/// in a tmux server that was already running kept its session folder in the developer's
/// own data directory, and so did one whose server had `SAM2_TUI_DATA` (removed here).
pub fn pane_env() -> String {
    bin();
    let vars: Vec<String> = ["SAM2_TUI_CONFIG", "XDG_DATA_HOME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}='{v}'")))
        .collect();
    format!("env -u SAM2_TUI_DATA {}", vars.join(" "))
}

/// A short hash of the fixture generators, so cached reference outputs are remade when
/// a generator changes.
pub fn fixtures_version() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .collect();
    names.sort();
    let mut h: u64 = 0xcbf29ce484222325;
    for p in names {
        for b in std::fs::read(&p).unwrap() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{:08x}", h as u32)
}

/// Loads every array of an `.npz` written by the fixture generators.
pub fn read_npz(path: &Path) -> std::collections::HashMap<String, tch::Tensor> {
    tch::Tensor::read_npz(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|(k, v)| (k.trim_end_matches(".npy").to_string(), v))
        .collect()
}

/// Max absolute difference, and the same relative to the reference's largest magnitude.
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double)).abs().max().double_value(&[])
}

/// Asserts `ours` matches `reference` within `tol` absolute, or `tol` relative to the
/// reference's largest magnitude where values are large; prints the figure either way.
pub fn assert_close(what: &str, ours: &tch::Tensor, reference: &tch::Tensor, tol: f64) -> f64 {
    let ours = ours.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float);
    let d = max_abs_diff(&ours, reference);
    let scale = reference.abs().max().double_value(&[]).max(1.0);
    println!("parity {what}: max abs diff {d:.3e} (reference max |x| {scale:.3})");
    assert!(d <= tol || d / scale <= tol, "{what}: max abs diff {d:e} exceeds {tol:e} (scale {scale})");
    d
}

/// The weights of a random-init tiny 2.1 checkpoint (official layout), written once in
/// `dir`: for tests about the engine's behaviour or speed, not its numbers.
pub fn random_tiny_tensors(dir: &Path) -> std::collections::BTreeMap<String, tch::Tensor> {
    use sam2_tui::model::{ModelSize, ModelVersion};
    let ckpt = dir.join("tiny.random-init.safetensors");
    if !ckpt.exists() {
        sam2_tui::model::random_init::write_random_checkpoint(&ckpt, ModelSize::Tiny, ModelVersion::V2_1, 0).unwrap();
    }
    sam2_tui::weights::load(&ckpt).unwrap().tensors
}

/// `random_tiny_tensors` nudged as the parity fixtures are: objects present and mask
/// logits with a usable spread (plain random init says "absent" everywhere, so every
/// output would look alike and no difference between two runs could show).
pub fn present_tiny_tensors(dir: &Path) -> std::collections::BTreeMap<String, tch::Tensor> {
    let mut tensors = random_tiny_tensors(dir);
    let _ = tensors.get_mut("sam_mask_decoder.pred_obj_score_head.layers.2.bias").unwrap().g_add_scalar_(3.0);
    for i in 0..4 {
        let _ = tensors
            .get_mut(&format!("sam_mask_decoder.output_hypernetworks_mlps.{i}.layers.2.weight"))
            .unwrap()
            .g_mul_scalar_(8.0);
    }
    tensors
}

/// `present_tiny_tensors` as a checkpoint file (safetensors, official key names).
pub fn present_tiny_checkpoint(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.random-init-present.safetensors");
    if !path.exists() {
        let tensors = present_tiny_tensors(dir);
        let named: Vec<(&str, &tch::Tensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tmp = path.with_extension("partial");
        tch::Tensor::write_safetensors(&named, &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// A 128×64 H.264 clip of FFmpeg's moving test pattern, `frames` long, starting `offset`
/// frames into the pattern (so two clips with different offsets show different content).
pub fn pattern_clip(path: &Path, frames: u32, offset: u32) {
    let mut c = Command::new("ffmpeg");
    // No stdin: run from a terminal in the background, ffmpeg reading it would be stopped.
    c.stdin(std::process::Stdio::null());
    c.args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=128x64:rate=10"]);
    if offset > 0 {
        c.arg("-vf").arg(format!("trim=start_frame={offset},setpts=PTS-STARTPTS"));
    }
    let st = c.args(["-frames:v", &frames.to_string(), "-pix_fmt", "yuv420p"]).arg(path).status().unwrap();
    assert!(st.success(), "ffmpeg could not make {}", path.display());
}
