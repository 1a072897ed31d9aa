//! The engine flags every command takes (`segment`, `batch`, `bench`, the console): each
//! one given overrides the config file's `[engine]` setting (`--tune`: its `[tuning]`
//! knob); one not given leaves it. One definition, so no command can drift from the
//! others or ignore the config file.
use super::Config;
use crate::device::{DeviceChoice, PrecisionChoice};
use crate::model::config::ModelSize;
use crate::tuning::Source;
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
    /// Set an engine tuning knob, e.g. `--tune pipeline_depth=2` (repeatable). Wins over
    /// the config's [tuning], loses to the environment (SAM2_TUI_<KNOB>); `sam2-tui doctor`
    /// lists every knob with its value and where it came from.
    #[arg(long = "tune", value_name = "KEY=VALUE", value_parser = crate::tuning::parse_assignment)]
    pub tune: Vec<(String, String)>,
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
        for (k, v) in &self.tune {
            // `parse_assignment` checked the pair when the command line was read.
            if let Err(e) = cfg.tuning.set(k, v, Source::Cli) {
                eprintln!("sam2-tui: warning: --tune {k}={v}: {e}");
            }
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
