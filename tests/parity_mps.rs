//! The MPS branches' arithmetic, checked where no Mac is: every test of this binary runs
//! with `SAM2_TUI_EMULATE_MPS=1`, so the CPU takes exactly the branches an Apple GPU takes
//! (real cos/sin RoPE instead of the complex multiplication, pixels scaled without
//! float64, libtorch's SDPA instead of the CPU attention kernel), and the parity journals
//! are held to the bounds of `parity_video` / `parity_image` through them.
mod common;

use common::video_parity::{assert_parity, run_case, run_case_in};
use sam2_tui::device::{self, Precision, PrecisionExt};
use sam2_tui::model::position_encoding::Rope;
use sam2_tui::model::{ModelSize, ModelVersion};
use tch::Device;

/// Turns the switch on before anything in this process reads it (it is read once).
fn on_mps_branches() {
    std::env::set_var("SAM2_TUI_EMULATE_MPS", "1");
    assert!(device::takes_mps_branches(Device::Cpu), "the switch was read before it was set");
}

#[test]
fn a_cpu_asked_to_emulate_mps_takes_every_mps_branch_and_says_so() {
    on_mps_branches();
    assert!(!Rope::new(64, 8, 8, 10000.0, Device::Cpu).is_complex(), "RoPE: real cos/sin tables, as on MPS");
    assert!(!sam2_tui::media::preprocess::scales_in_f64(Device::Cpu), "pixels: no float64");
    assert_eq!(device::cpu_label(2), "CPU (MPS arithmetic, 2 threads)");
    // CUDA keeps its own path whatever the switch says.
    assert!(!device::takes_mps_branches(Device::Cuda(0)));
    // The precision policy of MPS: fp16 weights, the SAM heads in fp32, no autocast.
    assert_eq!(Precision::Fp16.weights_kind(Device::Mps), tch::Kind::Half);
    assert_eq!(Precision::Fp16.fp32_modules(Device::Mps), ["sam_prompt_encoder", "sam_mask_decoder", "obj_ptr_proj"]);
    assert_eq!(Precision::Fp16.autocast(Device::Mps), None);
}

/// `parity_video`'s first journal (two objects from a click and a box, a correction on a
/// tracked frame, an object added after tracking, a reverse pass, a cleared frame) through
/// the MPS branches, at its model input and held to its bounds; it shares that test's
/// reference fixture, so `make test` pays only for this engine run. Measured: 44
/// results, max |Δlogit| 1.9e-6, masks 99.99984 % identical.
#[test]
fn tiny_2_1_tracks_like_the_reference_through_the_mps_branches() {
    on_mps_branches();
    assert_parity(run_case(ModelSize::Tiny, ModelVersion::V2_1, 384, 12, true));
}

/// The full 1024 path: Hiera's position embedding resized to 256×256 on the CPU, RoPE
/// over 4096 tokens per memory frame. Measured: 39 results, max |Δlogit| 2.2e-6, masks
/// 100 % identical; but 59 min on the loaded 2-core dev machine (about 40 of them making
/// the reference's fixture), far past `make test`'s budget, hence `--ignored`.
#[test]
#[ignore = "full 1024 video path: ~1 h on a loaded 2-core machine; run with --ignored"]
fn tiny_2_1_at_1024_tracks_like_the_reference_through_the_mps_branches() {
    on_mps_branches();
    assert_parity(run_case(ModelSize::Tiny, ModelVersion::V2_1, 1024, 10, true));
}

/// Base+ (the other RoPE head layout of the memory attention, 2.1's object-pointer
/// encoding) on the journal `parity_video` runs (its fixture, shared). Measured: 44
/// results, max |Δlogit| 3.6e-6, masks 100 % identical.
#[test]
fn base_plus_2_1_tracks_like_the_reference_through_the_mps_branches() {
    on_mps_branches();
    assert_parity(run_case(ModelSize::BasePlus, ModelVersion::V2_1, 256, 12, true));
}

/// `--precision fp16` as MPS runs it: fp16 weights and arithmetic, the SAM heads in fp32.
/// The CPU computes in fp16 where libtorch has the kernels; its masks must agree with
/// exact mode (= the reference within 1e-3) on 99.5 % of pixels, the CPU bf16 mode's bound.
/// Measured: 44 results, 99.970 % of mask pixels as exact mode (max |Δlogit| 0.094);
/// libtorch's CPU has every op this needs in fp16. It shares the bf16 test's fixture.
#[test]
fn tiny_2_1_in_fp16_with_fp32_heads_agrees_with_exact_mode_through_the_mps_branches() {
    on_mps_branches();
    let f = run_case_in(ModelSize::Tiny, ModelVersion::V2_1, 256, 12, true, Precision::Fp16);
    assert!(f.results > 20);
    assert!(f.mask_agreement >= 0.995, "fp16 masks agree with exact mode on only {:.4}%", f.mask_agreement * 100.0);
}

/// The image path has no MPS-only branch (the position embedding is resized on the CPU
/// for every device); held to `parity_image`'s bound anyway, as the full 1024 image path.
/// Measured: trunk and pix_feat bit-identical, mask logits within 2.8e-6, 0 of 1,048,576
/// mask pixels on the other side of 0; it shares `parity_image`'s fixture.
#[test]
fn tiny_2_1_image_path_at_1024_matches_the_reference_through_the_mps_branches() {
    on_mps_branches();
    let f = common::image_parity::fixture(ModelSize::Tiny, ModelVersion::V2_1, 1024, false);
    common::image_parity::check_trunk(&f, "tiny 2.1 (MPS branches)");
    common::image_parity::check_end_to_end(&f, "tiny 2.1 (MPS branches)");
}

#[test]
fn doctor_says_when_the_cpu_takes_the_mps_branches() {
    let out =
        std::process::Command::new(common::bin()).arg("doctor").env("SAM2_TUI_EMULATE_MPS", "1").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("takes the MPS branches") && text.contains("CPU (MPS arithmetic"), "{text}");
    assert!(text.contains("SAM2_TUI_EMULATE_MPS=1"), "listed with the environment: {text}");
}
