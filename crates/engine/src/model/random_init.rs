//! Random-init checkpoints in the official key layout, for machines without the real
//! weights (`make run` offline, `doctor --rehearse`, benchmarks). Their masks mean
//! nothing; the file name says so (`random-init` in it), and the console shows a banner.
use super::config::{ModelSize, ModelVersion, Sam2Config};
use super::params::Params;
use super::sam2_base::Sam2Base;
use crate::device::Precision;
use std::path::Path;

/// True for files made by [`write_random_checkpoint`] (judged by name).
pub fn is_random_init(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.to_string_lossy().contains("random-init"))
}

/// Writes a random-init SAM 2 checkpoint (safetensors, official key names) to `path`.
pub fn write_random_checkpoint(path: &Path, size: ModelSize, version: ModelVersion, seed: i64) -> anyhow::Result<()> {
    tch::manual_seed(seed);
    let params = Params::inventing();
    // Building the model asks for every tensor once, with its shape.
    Sam2Base::build(Sam2Config::new(size, version), &params, Precision::Fp32)?;
    let tensors = params.take_invented();
    let named: Vec<(String, tch::Tensor)> = tensors.into_iter().collect();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
    tch::Tensor::write_safetensors(&named, &tmp).map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}
