//! SAM 2 in tch, one file per reference module (`sam2/modeling/...`).
pub mod config;
pub mod sam2_base;
pub use config::{ModelSize, ModelVersion, Sam2Config};
pub use sam2_base::{LoadOptions, Sam2Base};
pub mod hieradet;
pub mod image_encoder;
pub mod layers;
pub mod mask_decoder;
pub mod memory_attention;
pub mod memory_encoder;
pub mod params;
pub mod position_encoding;
pub mod postprocess;
pub mod prompt_encoder;
pub mod random_init;
pub mod transformer;
