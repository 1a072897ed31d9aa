//! The native image path reproduces the official SAM 2 (sam2==1.1.0) on CPU fp32:
//! random-init official-format checkpoints, generated images and prompts, every stage
//! compared with the reference package's outputs.
mod common;

use common::image_parity::{check_end_to_end, check_trunk, fixture};
use sam2_tui::model::{ModelSize, ModelVersion};

#[test]
fn tiny_2_1_matches_reference_end_to_end_at_1024() {
    let f = fixture(ModelSize::Tiny, ModelVersion::V2_1, 1024, false);
    check_trunk(&f, "tiny 2.1");
    check_end_to_end(&f, "tiny 2.1");
}

#[test]
fn tiny_2_0_matches_reference_end_to_end_at_512() {
    let f = fixture(ModelSize::Tiny, ModelVersion::V2_0, 512, false);
    check_trunk(&f, "tiny 2.0");
    check_end_to_end(&f, "tiny 2.0");
}

#[test]
fn base_plus_2_1_matches_reference_end_to_end_at_1024() {
    let f = fixture(ModelSize::BasePlus, ModelVersion::V2_1, 1024, false);
    check_trunk(&f, "base_plus 2.1");
    check_end_to_end(&f, "base_plus 2.1");
}

#[test]
fn small_2_1_trunk_matches_reference() {
    let f = fixture(ModelSize::Small, ModelVersion::V2_1, 512, true);
    check_trunk(&f, "small 2.1");
}

#[test]
fn base_plus_2_0_trunk_matches_reference() {
    let f = fixture(ModelSize::BasePlus, ModelVersion::V2_0, 512, true);
    check_trunk(&f, "base_plus 2.0");
}

#[test]
fn large_2_1_trunk_matches_reference() {
    let f = fixture(ModelSize::Large, ModelVersion::V2_1, 256, true);
    check_trunk(&f, "large 2.1");
}

#[test]
fn small_2_0_and_large_2_0_trunks_match_reference() {
    let f = fixture(ModelSize::Small, ModelVersion::V2_0, 256, true);
    check_trunk(&f, "small 2.0");
    let f = fixture(ModelSize::Large, ModelVersion::V2_0, 256, true);
    check_trunk(&f, "large 2.0");
}
