//! The native video engine reproduces the official video predictor (sam2==1.1.0,
//! CPU fp32) on a generated clip: two objects (a click and a box), propagation, a
//! correction click on a tracked frame, an object added after tracking, a reverse pass,
//! a cleared frame and a partial re-propagation. Every (frame, object) result — the
//! latest one produced, as the reference defines it — is compared at video resolution.
mod common;

use sam2_tui::device::Precision;
use sam2_tui::model::{ModelSize, ModelVersion, Sam2Base, Sam2Config};
use sam2_tui::predictor::{VideoOptions, VideoPredictor};
use sam2_tui::session::{Journal, Op};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

struct Figures {
    max_logit_diff: f64,
    mask_agreement: f64,
    results: usize,
}

fn run_case(size: ModelSize, version: ModelVersion, image_size: i64, frames: usize, postprocess: bool) -> Figures {
    run_case_in(size, version, image_size, frames, postprocess, Precision::Fp32)
}

fn run_case_in(size: ModelSize, version: ModelVersion, image_size: i64, frames: usize, postprocess: bool, precision: Precision) -> Figures {
    let _ = tch::set_num_threads(2);
    let name = format!("video-{size}-{version}-{image_size}-{frames}{}-{}", if postprocess { "" } else { "-nopp" }, common::fixtures_version());
    let dir = common::fixture_cache(&name);
    if !dir.join("reference.npz").exists() {
        let (s, v, i, n) = (size.to_string(), version.to_string(), image_size.to_string(), frames.to_string());
        let mut args = vec![dir.to_str().unwrap(), s.as_str(), v.as_str(), i.as_str(), n.as_str()];
        if !postprocess {
            args.push("--no-postprocess");
        }
        common::run_fixture("make_video_parity.py", &args);
    }
    let reference = common::read_npz(&dir.join("reference.npz"));
    let journal = Journal::load(&dir.join("session.json")).unwrap();

    let ckpt = sam2_tui::weights::load(&dir.join("checkpoint.pt")).unwrap();
    let config = Sam2Config::new(size, version).with_image_size(image_size);
    let model = Rc::new(Sam2Base::from_tensors(config, ckpt.tensors, Device::Cpu, precision).unwrap());
    let source = sam2_tui::media::open(&dir.join("png")).unwrap();
    let bank = common::scratch(&format!("bank-{name}-{precision}"));
    let mut predictor = VideoPredictor::new(model, source, VideoOptions { fill_holes: postprocess, bank_dir: Some(bank), ..Default::default() }).unwrap();

    let mut latest: HashMap<String, (Tensor, f32)> = HashMap::new();
    let mut per_op: HashMap<String, Tensor> = HashMap::new();
    for (k, op) in journal.ops.iter().enumerate() {
        let is_prompt_op = matches!(op, Op::AddPrompt { .. } | Op::ClearFrame { .. });
        predictor
            .apply(op, &mut |out| {
                for o in out.objects {
                    let key = format!("f{}_o{}", out.frame, o.object);
                    if is_prompt_op {
                        per_op.insert(format!("op{k}_{key}"), o.logits.shallow_clone());
                    }
                    latest.insert(key, (o.logits, o.score));
                }
                ControlFlow::Continue(())
            })
            .unwrap_or_else(|e| panic!("op {k} {op:?}: {e:#}"));
    }

    let mut max_diff: f64 = 0.0;
    let (mut same, mut total) = (0i64, 0i64);
    let mut compared = 0;
    for (key, r) in &reference {
        let ours = if key.starts_with("op") {
            per_op.get(key).unwrap_or_else(|| panic!("no result for {key}")).shallow_clone()
        } else {
            latest.get(key).unwrap_or_else(|| panic!("no result for {key}")).0.shallow_clone()
        };
        let d = common::max_abs_diff(&ours, r);
        max_diff = max_diff.max(d);
        let a = ours.gt(0.0);
        let b = r.gt(0.0);
        same += a.eq_tensor(&b).sum(Kind::Int64).int64_value(&[]);
        total += a.numel() as i64;
        // Object present or absent: the sign of the logits at the mask level agrees
        // (an absent object is −1024 everywhere on both sides).
        let ours_absent = ours.max().double_value(&[]) < -100.0;
        let ref_absent = r.max().double_value(&[]) < -100.0;
        assert_eq!(ours_absent, ref_absent, "{key}: object presence differs");
        compared += 1;
    }
    assert_eq!(latest.len(), reference.keys().filter(|k| !k.starts_with("op")).count(), "same (frame, object) pairs");
    let agreement = same as f64 / total as f64;
    println!("video parity {size} {version} {precision} @{image_size} {frames} frames postprocess={postprocess}: {compared} results, max |Δlogit| {max_diff:.3e}, binary agreement {:.5}%", agreement * 100.0);
    Figures { max_logit_diff: max_diff, mask_agreement: agreement, results: compared }
}

fn assert_parity(f: Figures) {
    assert!(f.results > 20);
    assert!(f.max_logit_diff <= 1e-3, "logits differ by {:e}", f.max_logit_diff);
    assert!(f.mask_agreement >= 0.9999, "binary masks agree on only {:.4}%", f.mask_agreement * 100.0);
}

#[test]
fn tiny_2_1_tracks_like_the_reference() {
    assert_parity(run_case(ModelSize::Tiny, ModelVersion::V2_1, 384, 12, true));
}

#[test]
fn tiny_2_1_without_postprocessing_tracks_like_a_cpu_only_reference() {
    assert_parity(run_case(ModelSize::Tiny, ModelVersion::V2_1, 256, 12, false));
}

#[test]
fn tiny_2_0_tracks_like_the_reference() {
    assert_parity(run_case(ModelSize::Tiny, ModelVersion::V2_0, 256, 12, true));
}

#[test]
fn base_plus_2_1_tracks_like_the_reference() {
    assert_parity(run_case(ModelSize::BasePlus, ModelVersion::V2_1, 256, 12, true));
}

#[test]
fn base_plus_2_0_tracks_like_the_reference() {
    assert_parity(run_case(ModelSize::BasePlus, ModelVersion::V2_0, 256, 12, true));
}

#[test]
#[ignore = "dev: quick check on a 10-frame fixture"]
fn dev_tiny_2_1_10_frames() {
    assert_parity(run_case(ModelSize::Tiny, ModelVersion::V2_1, 256, 10, true));
}

/// The CPU fast mode (`--precision bf16`: weights and arithmetic in bf16, the SAM heads
/// in fp32) changes logits by bf16 rounding. Over these journals (two objects, a box,
/// corrections, a reverse pass) its masks must agree with exact mode (= the reference,
/// within 1e-3 above) on at least 99.5 % of pixels, as the speed issue asks. With the
/// heads in bf16 too (`SAM2_TUI_FP32_HEADS=0`) base_plus reaches only 99.23 %.
/// Without native bf16 (this dev machine's CPU) bf16 runs about four times slower than
/// fp32, hence the small model inputs.
fn assert_bf16_agrees_with_exact_mode(size: ModelSize, version: ModelVersion, image_size: i64) {
    let f = run_case_in(size, version, image_size, 12, true, Precision::Bf16);
    assert!(f.results > 20);
    assert!(f.mask_agreement >= 0.995, "bf16 masks agree with exact mode on only {:.4}%", f.mask_agreement * 100.0);
}

#[test]
fn base_plus_2_1_in_bf16_agrees_with_exact_mode_on_99_5_per_cent_of_pixels() {
    assert_bf16_agrees_with_exact_mode(ModelSize::BasePlus, ModelVersion::V2_1, 256);
}

#[test]
fn tiny_2_1_in_bf16_agrees_with_exact_mode_on_99_5_per_cent_of_pixels() {
    assert_bf16_agrees_with_exact_mode(ModelSize::Tiny, ModelVersion::V2_1, 384);
}

#[test]
fn tiny_2_0_in_bf16_agrees_with_exact_mode_on_99_5_per_cent_of_pixels() {
    assert_bf16_agrees_with_exact_mode(ModelSize::Tiny, ModelVersion::V2_0, 256);
}

// The two other journals, for the record (`--ignored`; about five minutes on two cores).

#[test]
#[ignore = "dev: bf16 agreement over the remaining journals"]
fn base_plus_2_0_in_bf16_agrees_with_exact_mode_on_99_5_per_cent_of_pixels() {
    assert_bf16_agrees_with_exact_mode(ModelSize::BasePlus, ModelVersion::V2_0, 256);
}

#[test]
#[ignore = "dev: bf16 agreement over the remaining journals"]
fn tiny_2_1_without_postprocessing_in_bf16_agrees_with_exact_mode_on_99_5_per_cent_of_pixels() {
    let f = run_case_in(ModelSize::Tiny, ModelVersion::V2_1, 256, 12, false, Precision::Bf16);
    assert!(f.mask_agreement >= 0.995, "bf16 masks agree with exact mode on only {:.4}%", f.mask_agreement * 100.0);
}
