//! The native video engine reproduces the official video predictor (sam2==1.1.0,
//! CPU fp32) on a generated clip: two objects (a click and a box), propagation, a
//! correction click on a tracked frame, an object added after tracking, a reverse pass,
//! a cleared frame and a partial re-propagation. Every (frame, object) result — the
//! latest one produced, as the reference defines it — is compared at video resolution.
mod common;

use common::video_parity::{assert_parity, run_case, run_case_in, run_case_mp4};
use sam2_tui::device::Precision;
use sam2_tui::model::{ModelSize, ModelVersion};

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

/// A video file: the reference's `init_state` reads an `.mp4` with decord, which scales
/// each decoded picture straight to the model's side (bilinear); with `decord_video` the
/// engine reads it the same way (without it, resizing the full-size frame with Pillow's
/// bicubic filter moves about 1 % of the mask pixels).
#[test]
fn tiny_2_1_reads_a_video_file_as_the_reference_does() {
    assert_parity(run_case_mp4(ModelSize::Tiny, ModelVersion::V2_1, 256, 12));
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
