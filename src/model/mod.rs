//! SAM 2 in tch, one file per reference module (`sam2/modeling/...`).
pub mod config;
pub mod sam2_base;
pub use config::{ModelSize, ModelVersion, Sam2Config};
pub use sam2_base::{LoadOptions, Sam2Base};
