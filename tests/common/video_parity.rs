//! The video parity journals (two objects, a click and a box, propagation, corrections,
//! an object added after tracking, a reverse pass, a cleared frame, a partial
//! re-propagation) run through the native engine on the CPU and compared with the
//! reference's outputs: shared by `parity_video` and `parity_mps` (the same journals with
//! the CPU taking the MPS branches).
use sam2_tui::device::Precision;
use sam2_tui::model::{ModelSize, ModelVersion, Sam2Base, Sam2Config};
use sam2_tui::predictor::{VideoOptions, VideoPredictor};
use sam2_tui::session::{Journal, Op};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

pub struct Figures {
    pub max_logit_diff: f64,
    pub mask_agreement: f64,
    pub results: usize,
}

pub fn run_case(size: ModelSize, version: ModelVersion, image_size: i64, frames: usize, postprocess: bool) -> Figures {
    run_case_in(size, version, image_size, frames, postprocess, Precision::Fp32)
}

pub fn run_case_in(
    size: ModelSize,
    version: ModelVersion,
    image_size: i64,
    frames: usize,
    postprocess: bool,
    precision: Precision,
) -> Figures {
    tch::set_num_threads(2);
    let name = format!(
        "video-{size}-{version}-{image_size}-{frames}{}-{}",
        if postprocess { "" } else { "-nopp" },
        super::fixtures_version()
    );
    let dir = super::fixture_cache(&name);
    if !dir.join("reference.npz").exists() {
        let (s, v, i, n) = (size.to_string(), version.to_string(), image_size.to_string(), frames.to_string());
        let mut args = vec![dir.to_str().unwrap(), s.as_str(), v.as_str(), i.as_str(), n.as_str()];
        if !postprocess {
            args.push("--no-postprocess");
        }
        super::run_fixture("make_video_parity.py", &args);
    }
    let reference = super::read_npz(&dir.join("reference.npz"));
    let journal = Journal::load(&dir.join("session.json")).unwrap();

    let ckpt = sam2_tui::weights::load(&dir.join("checkpoint.pt")).unwrap();
    let config = Sam2Config::new(size, version).with_image_size(image_size);
    let model =
        Rc::new(Sam2Base::from_tensors(config, ckpt.tensors, Device::Cpu, precision, &super::tuning()).unwrap());
    let source = sam2_tui::media::open(&dir.join("png")).unwrap();
    let mps = if sam2_tui::device::emulating_mps() { "-mps" } else { "" };
    let bank = super::scratch(&format!("bank-{name}-{precision}{mps}"));
    let mut predictor = VideoPredictor::new(
        model,
        source,
        VideoOptions { fill_holes: postprocess, bank_dir: Some(bank), tuning: super::tuning() },
    )
    .unwrap();

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
        let d = super::max_abs_diff(&ours, r);
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
    println!("video parity{} {size} {version} {precision} @{image_size} {frames} frames postprocess={postprocess}: {compared} results, max |Δlogit| {max_diff:.3e}, binary agreement {:.5}%", if sam2_tui::device::emulating_mps() { " (CPU taking the MPS branches)" } else { "" }, agreement * 100.0);
    Figures { max_logit_diff: max_diff, mask_agreement: agreement, results: compared }
}

pub fn assert_parity(f: Figures) {
    assert!(f.results > 20);
    assert!(f.max_logit_diff <= 1e-3, "logits differ by {:e}", f.max_logit_diff);
    assert!(f.mask_agreement >= 0.9999, "binary masks agree on only {:.4}%", f.mask_agreement * 100.0);
}
