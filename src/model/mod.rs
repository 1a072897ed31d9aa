//! SAM 2 in tch, one file per reference module (`sam2/modeling/...`).
pub mod config;
pub use config::{ModelSize, ModelVersion, Sam2Config};
