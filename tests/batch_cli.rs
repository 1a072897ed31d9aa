//! `sam2-tui batch` run locally: items of a JSON Lines manifest through the same job as
//! `segment`; a failed item is reported and does not stop the others; a re-run skips
//! complete items; a worker crash in one item changes none of its masks.
mod common;

use common::batch_outputs::{assert_no_staging_left, frames_of, item, report};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn checkpoint() -> PathBuf {
    let path = common::fixture_cache("batch-cli").join("sam2.1_hiera_tiny.random-init.safetensors");
    if !path.exists() {
        let st = Command::new(common::bin()).args(["weights", "init-random"]).arg(&path).status().unwrap();
        assert!(st.success());
    }
    path
}

fn batch(manifest: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(common::bin())
        .arg("batch")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .arg("--checkpoint")
        .arg(checkpoint())
        .args(["--device", "cpu", "--image-size", "128"])
        .args(extra)
        .env("OMP_NUM_THREADS", "2")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn segment(input: &Path, prompts: &Path, out: &Path) -> Output {
    Command::new(common::bin())
        .arg("segment")
        .arg(input)
        .arg("--prompts")
        .arg(prompts)
        .arg("--out")
        .arg(out)
        .arg("--checkpoint")
        .arg(checkpoint())
        .args(["--device", "cpu", "--image-size", "128"])
        .env("OMP_NUM_THREADS", "2")
        .output()
        .unwrap()
}

fn test_clip(path: &Path, frames: u32, offset: u32) {
    common::pattern_clip(path, frames, offset);
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

#[test]
fn a_missing_input_and_a_broken_session_are_reported_while_the_good_item_finishes_and_the_exit_is_non_zero() {
    let dir = common::scratch("batch-cli-failures");
    prompts(&dir);
    test_clip(&dir.join("good.mp4"), 3, 0);
    std::fs::write(dir.join("broken.json"), "{\"version\":1,\"ops\":[{\"op\":").unwrap();
    let manifest = dir.join("manifest.jsonl");
    std::fs::write(
        &manifest,
        concat!(
            "{\"input\":\"nowhere.mp4\",\"prompts\":\"prompts.json\",\"out\":\"missing\"}\n",
            "{\"input\":\"good.mp4\",\"session\":\"broken.json\",\"out\":\"broken\"}\n",
            "{\"input\":\"good.mp4\",\"prompts\":\"prompts.json\",\"out\":\"good\"}\n",
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let r = batch(&manifest, &out, &[], &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("2 of 3 item(s) failed"), "{err}");
    let rep = report(&out.join("batch-report.json"));
    assert_eq!(rep["finished"], true);
    assert_eq!(item(&rep, "good")["status"], "done");
    assert_eq!(item(&rep, "good")["frames"], 3);
    let missing = item(&rep, "missing");
    assert_eq!(missing["status"], "failed");
    assert!(missing["error"].as_str().unwrap().contains("nowhere.mp4"), "{missing}");
    let broken = item(&rep, "broken");
    assert_eq!(broken["status"], "failed");
    assert!(broken["error"].as_str().unwrap().contains("broken.json"), "{broken}");
    assert!(out.join("good/masks.json").is_file());
    assert!(!out.join("missing").exists() && !out.join("broken").exists(), "a failed item leaves no output folder");
    assert_no_staging_left(&out);
}

#[test]
fn a_bad_manifest_line_is_one_message_and_exit_2_before_any_item_runs() {
    let dir = common::scratch("batch-cli-bad-manifest");
    let manifest = dir.join("manifest.jsonl");
    std::fs::write(
        &manifest,
        "{\"input\":\"a.mp4\",\"prompts\":\"p.json\",\"out\":\"a\"}\n{\"input\":\"b.mp4\",\"out\":\"b\"}\n",
    )
    .unwrap();
    let out = dir.join("out");
    let r = batch(&manifest, &out, &[], &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("manifest.jsonl:2:") && err.contains("exactly one of"), "{err}");
    assert!(!out.exists(), "nothing is written for a bad manifest");
}

#[test]
fn batch_masks_equal_segment_run_item_by_item_and_a_re_run_skips_complete_items() {
    let dir = common::scratch("batch-cli-rerun");
    let p = prompts(&dir);
    test_clip(&dir.join("a.mp4"), 3, 0);
    test_clip(&dir.join("b.mp4"), 3, 7);
    let manifest = dir.join("manifest.jsonl");
    std::fs::write(&manifest, "{\"input\":\"a.mp4\",\"prompts\":\"prompts.json\",\"out\":\"a\"}\n{\"input\":\"b.mp4\",\"prompts\":\"prompts.json\",\"out\":\"b\"}\n").unwrap();
    let out = dir.join("out");
    let r = batch(&manifest, &out, &[], &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for name in ["a", "b"] {
        let alone = dir.join(format!("segment-{name}"));
        let s = segment(&dir.join(format!("{name}.mp4")), &p, &alone);
        assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
        assert_eq!(frames_of(&out.join(name)), frames_of(&alone), "{name}: batch and segment differ");
    }
    let before = std::fs::metadata(out.join("a/masks.json")).unwrap().modified().unwrap();
    // One item lost (as a cancelled run would leave it): only that one runs again.
    std::fs::remove_dir_all(out.join("b")).unwrap();
    let r = batch(&manifest, &out, &[], &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let rep = report(&out.join("batch-report.json"));
    assert_eq!(item(&rep, "a")["status"], "skipped");
    assert_eq!(item(&rep, "b")["status"], "done");
    assert_eq!(
        std::fs::metadata(out.join("a/masks.json")).unwrap().modified().unwrap(),
        before,
        "a complete item is not rewritten"
    );
}

#[test]
fn an_injected_worker_abort_in_one_item_leaves_its_masks_identical_to_a_clean_run() {
    let dir = common::scratch("batch-cli-crash");
    prompts(&dir);
    // Only the long clip reaches frame 4, so only its worker aborts.
    test_clip(&dir.join("long.mp4"), 6, 0);
    test_clip(&dir.join("short.mp4"), 3, 5);
    let manifest = dir.join("manifest.jsonl");
    std::fs::write(&manifest, "{\"input\":\"long.mp4\",\"prompts\":\"prompts.json\",\"out\":\"long\"}\n{\"input\":\"short.mp4\",\"prompts\":\"prompts.json\",\"out\":\"short\"}\n").unwrap();
    let clean = dir.join("clean");
    let r = batch(&manifest, &clean, &[], &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let crashed = dir.join("crashed");
    let r = batch(&manifest, &crashed, &[], &[("SAM2_TUI_FAULT", "abort@frame=4")]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    let rep = report(&crashed.join("batch-report.json"));
    assert_eq!(item(&rep, "long")["restarts"], 1, "{rep}");
    assert_eq!(item(&rep, "short")["restarts"], 0, "{rep}");
    for name in ["long", "short"] {
        assert_eq!(
            frames_of(&crashed.join(name)),
            frames_of(&clean.join(name)),
            "{name}: masks after a crash differ from a clean run"
        );
    }
}

#[test]
fn a_slurm_dry_run_writes_a_job_array_with_the_configs_cluster_defaults_and_submits_nothing() {
    let dir = common::scratch("batch-cli-slurm-dry-run");
    let manifest = dir.join("manifest.jsonl");
    let text: String =
        (0..5).map(|i| format!("{{\"input\":\"c{i}.mp4\",\"prompts\":\"p.json\",\"out\":\"c{i}\"}}\n")).collect();
    std::fs::write(&manifest, text).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, "[slurm]\npartition = \"gpu\"\ngres = \"gpu:1\"\nmodules = [\"cuda/12.4\"]\nbinary = \"/shared/bin/sam2-tui\"\n").unwrap();
    let out = dir.join("out");
    let r = Command::new(common::bin())
        .arg("batch")
        .arg(&manifest)
        .arg("--out")
        .arg(&out)
        .args([
            "--slurm",
            "--array-size",
            "2",
            "--time",
            "01:00:00",
            "--partition",
            "a100",
            "--dry-run",
            "--device",
            "cuda",
            "--streams",
            "4",
        ])
        .env("SAM2_TUI_CONFIG", &config)
        .env("PATH", "/nonexistent") // no sbatch: a dry run must not need it
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let script = std::fs::read_to_string(out.join("batch-slurm.sbatch")).unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), script, "the dry run prints the script it wrote");
    for want in [
        "#SBATCH --array=0-1\n",
        "#SBATCH --partition=a100\n",
        "#SBATCH --gres=gpu:1\n",
        "#SBATCH --time=01:00:00\n",
        "module load 'cuda/12.4'\n",
        "exec '/shared/bin/sam2-tui' batch",
        "--shard \"$SLURM_ARRAY_TASK_ID/2\"",
        "--device 'cuda'",
        "--streams 4",
    ] {
        assert!(script.contains(want), "missing {want:?} in\n{script}");
    }
    assert!(!out.join("batch-slurm-jobs").exists(), "nothing was submitted");
}
