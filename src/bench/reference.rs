//! The official Python predictor (sam2==1.1.0) timed by `scripts/bench_reference.py` on
//! the same frame folder, so a row can carry the only figure that holds across noisy
//! machines: the ratio measured side by side.
use crate::device::{DeviceChoice, Precision};
use crate::model::config::ModelSize;
use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the script prints as its last line (fields it adds are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceResult {
    pub mode: String,
    /// Objects tracked (absent in results of scripts from before `--objects`: one).
    #[serde(default = "one")]
    pub objects: usize,
    pub frames: usize,
    pub fps: f64,
    pub build_s: f64,
    pub init_state_s: f64,
    pub first_mask_s: f64,
    pub whole_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub cuda_peak_allocated_bytes: Option<u64>,
    pub checkpoint: Option<String>,
}

fn one() -> usize {
    1
}

/// The script's mode for a device and precision (`cuda_fp32` is TF32, as the published
/// baselines are; bf16 is autocast).
pub fn mode(device: DeviceChoice, precision: Precision) -> anyhow::Result<&'static str> {
    Ok(match (device, precision) {
        (DeviceChoice::Cpu, Precision::Fp32) => "cpu",
        (DeviceChoice::Cpu, Precision::Bf16) => "cpu_bf16",
        (DeviceChoice::Cuda, Precision::Fp32) => "cuda_fp32",
        (DeviceChoice::Cuda, Precision::Bf16) => "cuda_bf16",
        (d, p) => bail!("no reference mode for {d} {p}"),
    })
}

/// `scripts/bench_reference.py`, looked for under the working directory, then the source
/// tree this binary was built from.
pub fn script() -> anyhow::Result<PathBuf> {
    let rel = Path::new("scripts/bench_reference.py");
    [rel.to_path_buf(), Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{}: not found (run from the sam2-tui repository)", rel.display()))
}

/// The Python that has `sam2` (SAM2_TUI_PYTHON, as `make` sets it, else `python3`).
pub fn python() -> PathBuf {
    std::env::var_os("SAM2_TUI_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"))
}

/// Runs the reference once with `objects` objects (the clicks of `clip::clicks`). `ckpt`
/// must be an official-format `.pt`; the script writes a random-init one there if the
/// file is missing.
pub fn run(
    size: ModelSize,
    device: DeviceChoice,
    precision: Precision,
    objects: usize,
    frames_dir: &Path,
    ckpt: &Path,
    threads: Option<usize>,
) -> anyhow::Result<ReferenceResult> {
    let script = script()?;
    let mut cmd = Command::new(python());
    cmd.arg(&script).arg(size.name()).arg(mode(device, precision)?).arg(frames_dir).arg(ckpt);
    cmd.arg("--objects").arg(objects.to_string());
    if let Some(t) = threads {
        cmd.arg("--threads").arg(t.to_string()).env("OMP_NUM_THREADS", t.to_string());
    }
    let out = cmd.output().map_err(|e| anyhow!("{}: cannot run: {e}", python().display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        bail!("{}: failed ({}): {last}", script.display(), out.status);
    }
    parse(&String::from_utf8_lossy(&out.stdout))
        .map(|mut r| {
            r.checkpoint = Some(ckpt.display().to_string());
            r
        })
        .map_err(|e| anyhow!("{}: {e}", script.display()))
}

/// The last line of the script's output, a JSON object.
pub fn parse(stdout: &str) -> Result<ReferenceResult, String> {
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or("printed no JSON result")?;
    serde_json::from_str(line).map_err(|e| format!("bad result line: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_last_json_line_is_the_result() {
        let out = "reference tiny cpu: 0.25 FPS\n{\"mode\": \"cpu\", \"frames\": 8, \"fps\": 0.25, \"build_s\": 1.0, \
                   \"init_state_s\": 2.0, \"first_mask_s\": 3.5, \"whole_s\": 36.0, \"peak_rss_bytes\": 100, \
                   \"cuda_peak_allocated_bytes\": null, \"extra\": 1}\n";
        let r = parse(out).unwrap();
        assert_eq!((r.frames, r.fps, r.cuda_peak_allocated_bytes, r.objects), (8, 0.25, None, 1));
        assert!(parse("Traceback ...\n").is_err());
    }

    #[test]
    fn reference_modes_follow_device_and_precision() {
        assert_eq!(mode(DeviceChoice::Cuda, Precision::Bf16).unwrap(), "cuda_bf16");
        assert_eq!(mode(DeviceChoice::Cpu, Precision::Fp32).unwrap(), "cpu");
        assert!(mode(DeviceChoice::Mps, Precision::Fp32).is_err());
    }
}
