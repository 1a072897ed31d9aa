//! The engine flags every command takes (`segment`, `batch`, `bench`, the console): each
//! one given overrides the config file's `[engine]` setting; one not given leaves it. One
//! definition, so no command can drift from the others or ignore the config file.
use super::Config;
use crate::device::{DeviceChoice, PrecisionChoice};
use crate::model::config::ModelSize;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct EngineFlags {
    /// Config file (default: $SAM2_TUI_CONFIG, else $XDG_CONFIG_HOME/sam2-tui/config.toml,
    /// ~/.config/sam2-tui/config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Checkpoint file (default: [engine] checkpoint, else the official file for the model
    /// in weights/).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Model size: tiny, small, base_plus, large (default: [engine] model, tiny).
    #[arg(long)]
    pub model: Option<ModelSize>,
    /// Device: auto (cuda, then mps, then cpu), cpu, cuda, mps (default: [engine] device).
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// Precision: auto (bf16 on CUDA, fp32 on the CPU and MPS, as the official demo), fp32,
    /// bf16, fp16 (default: [engine] precision).
    #[arg(long)]
    pub precision: Option<PrecisionChoice>,
    /// Model input size (1024 for the official models; smaller only for tests).
    #[arg(long, hide = true, value_parser = crate::model::config::parse_image_size)]
    pub image_size: Option<i64>,
}

impl EngineFlags {
    /// The config file these flags name (or the one found), with the flags applied.
    pub fn effective_config(&self) -> anyhow::Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        self.apply(&mut cfg);
        Ok(cfg)
    }

    /// Applies the flags that were given over `cfg`'s `[engine]`.
    pub fn apply(&self, cfg: &mut Config) {
        let e = &mut cfg.engine;
        if let Some(c) = &self.checkpoint {
            e.checkpoint = Some(c.clone());
        }
        if let Some(m) = self.model {
            e.model = m;
        }
        if let Some(d) = self.device {
            e.device = d;
        }
        if let Some(p) = self.precision {
            e.precision = p;
        }
        if let Some(s) = self.image_size {
            e.image_size = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_given_beats_the_config_file_and_one_not_given_leaves_it() {
        let mut cfg =
            Config::parse("[engine]\ndevice = \"cpu\"\nprecision = \"bf16\"\nmodel = \"small\"\n", "t.toml".as_ref())
                .unwrap();
        EngineFlags { precision: Some(PrecisionChoice::Fp32), ..Default::default() }.apply(&mut cfg);
        assert_eq!(cfg.engine.precision, PrecisionChoice::Fp32, "the flag wins");
        assert_eq!(cfg.engine.device, DeviceChoice::Cpu, "the file's setting stays");
        assert_eq!(cfg.engine.model, ModelSize::Small);
        assert_eq!(cfg.engine.image_size, 1024);
    }
}
