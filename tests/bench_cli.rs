//! `sam2-tui bench` end to end: a real supervised propagation on the CPU (a tiny clip at a
//! small input size, random-init weights), its table and JSON; devices that are not there
//! are rows that say so, not crashes.
mod common;

use common::{bin, scratch};
use std::process::Command;

#[test]
fn bench_on_cpu_reports_fps_stages_and_memory_and_marks_missing_devices_unavailable() {
    let dir = scratch("bench_cli_cpu");
    let json = dir.join("bench.json");
    let out = Command::new(bin())
        .args(["bench", "--sizes", "tiny", "--devices", "cpu,cuda", "--frames", "2", "--resolution", "64x48"])
        .args(["--image-size", "128", "--threads", "2", "--json"])
        .arg(&json)
        .env("SAM2_TUI_CACHE", dir.join("cache"))
        .current_dir(&dir) // no weights/ here: the bench must make random-init ones
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    println!("{stdout}");

    let cpu_line = stdout
        .lines()
        .find(|l| l.starts_with("tiny") && l.contains(" cpu "))
        .unwrap_or_else(|| panic!("no cpu row:\n{stdout}"));
    assert!(cpu_line.contains("random-init") && cpu_line.contains(" ok "), "{cpu_line}");

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let m = &doc["machine"];
    assert!(m["cpu_model"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
    assert!(m["cpu_threads"].as_u64().unwrap() >= 1);
    assert!(m["libtorch"].as_str().unwrap().starts_with("2."), "{m}");
    assert_eq!(doc["settings"]["resolution"], serde_json::json!([64, 48]));

    let rows = doc["rows"].as_array().unwrap();
    let cpu = rows.iter().find(|r| r["device"] == "cpu").unwrap();
    assert_eq!(cpu["status"], "ok", "{cpu}");
    assert_eq!(cpu["random_init"], true);
    assert_eq!(cpu["frames"], 2, "one mask per frame of the clip: {cpu}");
    assert!(cpu["fps"].as_f64().unwrap() > 0.0, "{cpu}");
    let stages = &cpu["stages_ms"];
    for k in ["image_encoder", "memory_attention", "mask_decoder", "memory_encoder", "total"] {
        assert!(stages[k].as_f64().is_some(), "stage {k} missing: {stages}");
    }
    assert!(stages["total"].as_f64().unwrap() > 0.0 && stages["image_encoder"].as_f64().unwrap() > 0.0, "{stages}");
    assert!(cpu["time_to_first_mask_s"].as_f64().unwrap() > 0.0);
    assert!(cpu["click_ms"].as_f64().unwrap() > 0.0, "click-to-mask latency missing: {cpu}");
    assert!(cpu["peak_rss_bytes"].as_u64().unwrap() > 50 << 20, "a worker holding a model uses > 50 MiB: {cpu}");
    assert_eq!(cpu["crashes"], serde_json::json!([]));

    let cuda = rows.iter().find(|r| r["device"] == "cuda").unwrap();
    if tch::Cuda::is_available() {
        assert_eq!(cuda["status"], "ok", "{cuda}");
    } else {
        assert_eq!(cuda["status"], "unavailable", "{cuda}");
        assert!(cuda["fps"].is_null());
        let line = stdout.lines().find(|l| l.starts_with("tiny") && l.contains(" cuda ")).unwrap();
        assert!(line.contains("unavailable"), "{line}");
    }
}

/// `--objects 1,3`: a row per object count (one click each on frame 0, on a grid for
/// several), each tracking every object on every frame, and the marginal cost of one more
/// object between them, in the table and the JSON.
#[test]
fn bench_with_several_object_counts_reports_a_row_each_and_the_marginal_cost() {
    let dir = scratch("bench_cli_objects");
    let json = dir.join("bench.json");
    let out = Command::new(bin())
        .args(["bench", "--sizes", "tiny", "--devices", "cpu", "--frames", "2", "--resolution", "64x48"])
        .args(["--image-size", "128", "--threads", "2", "--objects", "1,3", "--json"])
        .arg(&json)
        .env("SAM2_TUI_CACHE", dir.join("cache"))
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["objects"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3]);
    for r in rows {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["frames"], 2, "{r}");
        assert!(r["fps"].as_f64().unwrap() > 0.0 && r["click_ms"].as_f64().unwrap() > 0.0, "{r}");
    }
    let m = &doc["marginal"][0];
    assert_eq!((m["from_objects"].as_u64(), m["to_objects"].as_u64()), (Some(1), Some(3)), "{doc}");
    assert!(m["ms_per_object"].as_f64().is_some(), "{m}");
    assert!(doc["settings"]["click"].as_str().unwrap().contains("grid"), "{}", doc["settings"]);
    assert!(stdout.lines().any(|l| l.starts_with("marginal cost tiny cpu fp32, 1 -> 3 objects")), "{stdout}");
}

/// `--streams 2`: one stream alone, then two at once in one worker; per count the
/// aggregate and per-stream FPS, and the ratio to one stream, in the table and the JSON.
#[test]
fn bench_with_streams_reports_aggregate_and_per_stream_fps_against_one_stream() {
    let dir = scratch("bench_cli_streams");
    let json = dir.join("bench.json");
    let out = Command::new(bin())
        .args(["bench", "--sizes", "tiny", "--devices", "cpu", "--frames", "2", "--resolution", "64x48"])
        .args(["--image-size", "128", "--threads", "2", "--streams", "2", "--json"])
        .arg(&json)
        .env("SAM2_TUI_CACHE", dir.join("cache"))
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = doc["streams"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["streams"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2], "{doc}");
    for r in rows {
        assert_eq!(r["frames_per_stream"], 2, "every stream tracks every frame: {r}");
        assert!(r["aggregate_fps"].as_f64().unwrap() > 0.0, "{r}");
        let per = r["per_stream_fps"].as_array().unwrap();
        assert_eq!(per.len() as u64, r["streams"].as_u64().unwrap(), "{r}");
        assert!(per.iter().all(|f| f.as_f64().unwrap() > 0.0), "{r}");
        // Where a step's time goes: the tracking stages and each stream's write-out.
        let stages = &r["stages_ms"];
        assert!(stages["total"].as_f64().unwrap() > 0.0 && stages["write_out"].as_f64().unwrap() > 0.0, "{r}");
    }
    let breakdown = stdout.lines().filter(|l| l.trim_start().starts_with("median ms: frames decoded")).count();
    assert_eq!(breakdown, 2, "a stage line under each streams line:\n{stdout}");
    let two = stdout.lines().find(|l| l.contains("2 stream(s)")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(two.contains("x one stream") && two.contains("per stream ["), "{two}");
    assert!(two.contains("x one video on the single-video path ("), "{two}");
    assert!(rows.iter().all(|r| r["single_video_fps"].as_f64().unwrap() > 0.0), "{doc}");
}

#[test]
fn streams_with_the_reference_or_several_object_counts_is_one_clear_line() {
    for extra in [&["--reference"][..], &["--objects", "1,4"][..]] {
        let out =
            Command::new(bin()).args(["bench", "--sizes", "tiny", "--streams", "2"]).args(extra).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--streams") && stderr.trim().lines().count() == 1, "{stderr}");
    }
}

#[test]
fn a_bad_resolution_is_one_clear_line_before_anything_runs() {
    let out = Command::new(bin()).args(["bench", "--sizes", "tiny", "--resolution", "960by540"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("960by540") && stderr.contains("WIDTHxHEIGHT"), "{stderr}");
}
