//! What a checkpoint is, read from its keys and shapes: model size (patch-embed width and
//! Hiera block count), SAM version (2.1 adds `obj_ptr_tpos_proj` and
//! `no_obj_embed_spatial`), parameter count and dtype. Strict key-by-key validation
//! against the model is the model builder's job; this rejects files that are plainly not
//! SAM 2, or SAM 2 with whole parts missing, with a message a person can act on.
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Result};
use tch::Kind;

use super::Checkpoint;
use sam2_api::model::{ModelSize, ModelVersion};

/// The one buffer in the official state dicts; not a parameter.
pub const BUFFER_KEY: &str = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix";
const PATCH_EMBED: &str = "image_encoder.trunk.patch_embed.proj.weight";
const BLOCKS: &str = "image_encoder.trunk.blocks.";
/// Present only in SAM 2.1 checkpoints.
const V2_1_KEYS: [&str; 2] = ["obj_ptr_tpos_proj.weight", "no_obj_embed_spatial"];
/// Parts every SAM 2 checkpoint has (key prefixes of the SAM2Base submodules).
const PARTS: [&str; 12] = [
    "image_encoder.trunk.",
    "image_encoder.neck.",
    "sam_prompt_encoder.",
    "sam_mask_decoder.",
    "memory_attention.",
    "memory_encoder.",
    "obj_ptr_proj.",
    "mask_downsample.",
    "maskmem_tpos_enc",
    "no_mem_embed",
    "no_mem_pos_enc",
    "no_obj_ptr",
];

#[derive(Clone, Debug, PartialEq)]
pub struct Detected {
    pub size: ModelSize,
    pub version: ModelVersion,
    pub parameters: u64,
    pub dtype: Kind,
    pub tensors: usize,
}

impl Detected {
    pub fn label(&self) -> String {
        format!("SAM {} {}", self.version, self.size)
    }
}

/// Parameters of the official models (everything but [`BUFFER_KEY`]).
pub fn expected_parameters(size: ModelSize, version: ModelVersion) -> u64 {
    let v2_1: u64 = match size {
        ModelSize::Tiny => 38_962_498,
        ModelSize::Small => 46_060_354,
        ModelSize::BasePlus => 80_850_178,
        ModelSize::Large => 224_446_642,
    };
    match version {
        ModelVersion::V2_1 => v2_1,
        ModelVersion::V2_0 => v2_1 - 16_512,
    }
}

/// Size from (patch-embed width, Hiera block count), as in the four official configs.
fn size_of(embed_dim: i64, blocks: usize) -> Option<ModelSize> {
    match (embed_dim, blocks) {
        (96, 12) => Some(ModelSize::Tiny),
        (96, 16) => Some(ModelSize::Small),
        (112, 24) => Some(ModelSize::BasePlus),
        (144, 48) => Some(ModelSize::Large),
        _ => None,
    }
}

pub fn detect(ckpt: &Checkpoint) -> Result<Detected> {
    let path = ckpt.path.display();
    let t = &ckpt.tensors;
    let Some(patch) = t.get(PATCH_EMBED) else {
        let sample: Vec<&str> = t.keys().take(3).map(String::as_str).collect();
        bail!(
            "{path}: not a SAM 2 checkpoint: no '{PATCH_EMBED}' among its {} tensors (first keys: {})",
            t.len(),
            sample.join(", ")
        )
    };
    let shape = patch.size();
    let embed_dim = match shape.as_slice() {
        [e, 3, 7, 7] => *e,
        other => bail!("{path}: not a SAM 2 checkpoint: '{PATCH_EMBED}' has shape {other:?}, expected [E, 3, 7, 7]"),
    };
    let missing: Vec<&str> = PARTS.iter().copied().filter(|p| !t.keys().any(|k| k.starts_with(p))).collect();
    if !missing.is_empty() {
        bail!("{path}: incomplete SAM 2 checkpoint: no tensors for {}", missing.join(", "))
    }
    let blocks: BTreeSet<usize> =
        t.keys().filter_map(|k| k.strip_prefix(BLOCKS)?.split('.').next()?.parse().ok()).collect();
    let count = blocks.len();
    if blocks.iter().copied().ne(0..count) {
        bail!("{path}: incomplete SAM 2 checkpoint: Hiera blocks are not numbered 0..{count} ({blocks:?})")
    }
    let Some(size) = size_of(embed_dim, count) else {
        bail!("{path}: unknown SAM 2 variant: patch-embed width {embed_dim} with {count} Hiera blocks (official: 96/12 tiny, 96/16 small, 112/24 base_plus, 144/48 large)")
    };
    let version = match V2_1_KEYS.map(|k| t.contains_key(k)) {
        [true, true] => ModelVersion::V2_1,
        [false, false] => ModelVersion::V2_0,
        _ => bail!(
            "{path}: inconsistent SAM 2 checkpoint: has only one of {} (2.1 has both, 2.0 neither)",
            V2_1_KEYS.join(" / ")
        ),
    };
    let parameters: u64 = t.iter().filter(|(k, _)| k.as_str() != BUFFER_KEY).map(|(_, v)| v.numel() as u64).sum();
    let expected = expected_parameters(size, version);
    if parameters != expected {
        bail!(
            "{path}: SAM {version} {size} checkpoint with {} parameters, but the official model has {} (missing or extra tensors)",
            group(parameters),
            group(expected)
        )
    }
    Ok(Detected { size, version, parameters, dtype: patch.kind(), tensors: t.len() })
}

/// An error when the file is not the size/version the user asked for, naming both.
pub fn check_requested(
    det: &Detected,
    size: Option<ModelSize>,
    version: Option<ModelVersion>,
    path: &Path,
) -> Result<()> {
    let size_ok = size.is_none_or(|s| s == det.size);
    let version_ok = version.is_none_or(|v| v == det.version);
    if !(size_ok && version_ok) {
        let wanted = format!("SAM {} {}", version.unwrap_or(det.version), size.unwrap_or(det.size));
        bail!("{}: checkpoint is {}, but {wanted} was requested", path.display(), det.label())
    }
    Ok(())
}

/// 38962498 → "38,962,498".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::Half => "float16",
        Kind::BFloat16 => "bfloat16",
        Kind::Double => "float64",
        Kind::Int64 => "int64",
        Kind::Int => "int32",
        Kind::Int16 => "int16",
        Kind::Int8 => "int8",
        Kind::Uint8 => "uint8",
        Kind::Bool => "bool",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_are_grouped_by_thousands() {
        assert_eq!(group(38_962_498), "38,962,498");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
    }

    #[test]
    fn v2_0_counts_are_16512_fewer() {
        assert_eq!(expected_parameters(ModelSize::Large, ModelVersion::V2_0), 224_430_130);
    }
}
