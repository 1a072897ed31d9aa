//! `SAM2Base` (sam2/modeling/sam2_base.py): the wiring of all modules.
//! INTERFACE ONLY for now.
use crate::device::Precision;
use crate::model::config::{ModelSize, ModelVersion, Sam2Config};
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub checkpoint: PathBuf,
    /// What the user asked for; a checkpoint of another size/version is an error.
    pub size: Option<ModelSize>,
    pub version: Option<ModelVersion>,
    pub device: tch::Device,
    pub precision: Precision,
    /// 1024 for the official models; smaller in logic tests.
    pub image_size: i64,
}

pub struct Sam2Base {
    pub config: Sam2Config,
    pub device: tch::Device,
    pub precision: Precision,
}

impl Sam2Base {
    pub fn load(_opts: &LoadOptions) -> anyhow::Result<Sam2Base> {
        anyhow::bail!("model not implemented yet")
    }
}
