//! The image parity fixtures (random-init official-format checkpoints, generated images
//! and prompts, the reference's outputs at every stage) and their checks: shared by
//! `parity_image` and `parity_mps`.
use sam2_tui::device::Precision;
use sam2_tui::model::sam2_base::PointInputs;
use sam2_tui::model::{ModelSize, ModelVersion, Sam2Base, Sam2Config};
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

pub struct Fixture {
    model: Sam2Base,
    input: Tensor,
    reference: HashMap<String, Tensor>,
}

pub fn fixture(size: ModelSize, version: ModelVersion, image_size: i64, trunk_only: bool) -> Fixture {
    tch::set_num_threads(2);
    let name = format!(
        "image-{size}-{version}-{image_size}{}-{}",
        if trunk_only { "-trunk" } else { "" },
        super::fixtures_version()
    );
    let dir: PathBuf = super::fixture_cache(&name);
    if !dir.join("reference.npz").exists() {
        let mut args =
            vec![dir.to_str().unwrap().to_string(), size.to_string(), version.to_string(), image_size.to_string()];
        if trunk_only {
            args.push("--trunk-only".into());
        }
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        super::run_fixture("make_image_parity.py", &args);
    }
    // Through the production loader: the official zip+pickle format, strict keys.
    let ckpt = sam2_tui::weights::load(&dir.join("checkpoint.pt")).expect("load checkpoint");
    let det = sam2_tui::weights::detect(&ckpt).expect("detect");
    assert_eq!((det.size, det.version), (size, version));
    let config = Sam2Config::new(size, version).with_image_size(image_size);
    let model = Sam2Base::from_tensors(config, ckpt.tensors, Device::Cpu, Precision::Fp32, &super::tuning())
        .expect("build model");
    let input = Tensor::read_npy(dir.join("input.npy")).unwrap();
    Fixture { model, input, reference: super::read_npz(&dir.join("reference.npz")) }
}

pub fn check_trunk(f: &Fixture, label: &str) {
    let _g = tch::no_grad_guard();
    let outs = f.model.image_encoder.trunk(&f.input);
    for (i, t) in outs.iter().enumerate() {
        super::assert_close(&format!("{label} trunk[{i}]"), t, &f.reference[&format!("trunk_{i}")], TOL);
    }
}

pub fn check_end_to_end(f: &Fixture, label: &str) {
    let _g = tch::no_grad_guard();
    let r = &f.reference;
    let feats = f.model.forward_image(&f.input);
    super::assert_close(&format!("{label} fpn[0] (conv_s0)"), &feats.high_res[0], &r["fpn_0"], TOL);
    super::assert_close(&format!("{label} fpn[1] (conv_s1)"), &feats.high_res[1], &r["fpn_1"], TOL);
    super::assert_close(&format!("{label} fpn[2]"), &feats.feat, &r["fpn_2"], TOL);
    super::assert_close(&format!("{label} pos[2]"), &feats.pos, &r["pos_2"], TOL);
    let pix = f.model.condition_on_memory(&feats, None);
    super::assert_close(&format!("{label} pix_feat"), &pix, &r["pix_feat"], TOL);
    super::assert_close(&format!("{label} dense_pe"), f.model.prompt_encoder.dense_pe(), &r["dense_pe"], TOL);

    let mut prev: Option<Tensor> = None;
    for case in ["click", "box_click", "two_clicks_mask"] {
        let pts = PointInputs {
            coords: r[&format!("{case}_points")].shallow_clone(),
            labels: r[&format!("{case}_labels")].to_kind(Kind::Int),
        };
        let mask = if case == "two_clicks_mask" { prev.as_ref() } else { None };
        let (sparse, dense) = f.model.prompt_encoder.forward(&pts.coords, &pts.labels, mask);
        super::assert_close(&format!("{label} {case} sparse"), &sparse, &r[&format!("{case}_sparse")], TOL);
        super::assert_close(&format!("{label} {case} dense"), &dense, &r[&format!("{case}_dense")], TOL);
        let multimask = r[&format!("{case}_multimask")].double_value(&[]) > 0.5;
        let out = f.model.forward_sam_heads(&pix, Some(&pts), mask, &feats.high_res, multimask);
        super::assert_close(
            &format!("{label} {case} low-res logits (all)"),
            &out.low_res_multimasks,
            &r[&format!("{case}_low_multi")],
            TOL,
        );
        super::assert_close(&format!("{label} {case} iou"), &out.ious, &r[&format!("{case}_ious")], TOL);
        super::assert_close(
            &format!("{label} {case} selected logits"),
            &out.low_res_masks,
            &r[&format!("{case}_low")],
            TOL,
        );
        super::assert_close(
            &format!("{label} {case} object score"),
            &out.object_score_logits,
            &r[&format!("{case}_score")],
            TOL,
        );
        super::assert_close(&format!("{label} {case} obj_ptr"), &out.obj_ptr, &r[&format!("{case}_obj_ptr")], TOL);
        if multimask {
            let ours = out.ious.argmax(-1, false).int64_value(&[0]);
            assert_eq!(
                ours,
                r[&format!("{case}_best")].double_value(&[0]) as i64,
                "{label} {case}: selected mask index"
            );
        }
        if case == "two_clicks_mask" {
            // The memory encoder sees the clicked mask binarised, so a logit within float
            // rounding of 0 (compared above to ~1e-6) may flip a pixel and move the features
            // around it. Its parity is checked on the reference's own mask, upsampled as
            // `forward_sam_heads` does; the flips are counted and must be that rare.
            let s = f.model.image_size();
            let reference_mask = r[&format!("{case}_low")].upsample_bilinear2d([s, s], false, None, None);
            let flips = out.high_res_masks.gt(0.0).ne_tensor(&reference_mask.gt(0.0)).sum(Kind::Int64).int64_value(&[]);
            println!("parity {label} {case}: {flips} of {} mask pixels on the other side of 0", reference_mask.numel());
            assert!(flips <= 10, "{label} {case}: {flips} mask pixels flipped");
            let mem = f.model.encode_new_memory(&feats, &reference_mask, &out.object_score_logits, true);
            super::assert_close(
                &format!("{label} memory features"),
                &mem.to_kind(Kind::Float),
                &r["maskmem_features"],
                2e-2,
            );
            super::assert_close(&format!("{label} memory pos"), f.model.memory_encoder.pos(), &r["maskmem_pos"], TOL);
        }
        prev = Some(out.low_res_masks.clamp(-32.0, 32.0));
    }
}
