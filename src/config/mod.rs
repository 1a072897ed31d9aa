//! The user's configuration: one TOML file (documented setting by setting in the repository's
//! `config.example.toml`), found through `directories`, `XDG_CONFIG_HOME` or
//! `SAM2_TUI_CONFIG`. Every section has defaults, so an empty file and no file mean the same.
//! The console reads `[console]` and `[keys]`; every command that starts the engine
//! (`segment`, `batch`, `bench`, the console) turns `[engine]` and `[supervisor]`, with its
//! `EngineFlags` applied over them, into `SupervisorOptions` through `supervisor_options`;
//! `[tuning]` (the engine's knobs, `sam2_api::tuning`) goes with them, under `--tune` and
//! the environment.
mod engine_flags;
mod supervisor_options;
pub mod theme;

use crate::device::{DeviceChoice, PrecisionChoice};
use crate::model::config::{ModelSize, ModelVersion};
use crate::tuning::{Source, Tuning};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use engine_flags::EngineFlags;
pub use supervisor_options::{checkpoint, missing_checkpoint, supervisor_options};
pub use theme::Theme;

/// The environment variable that names a config file, bypassing the search.
pub const CONFIG_ENV: &str = "SAM2_TUI_CONFIG";

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    pub supervisor: SupervisorConfig,
    pub console: ConsoleConfig,
    /// Cluster defaults for `batch --slurm`.
    pub slurm: SlurmConfig,
    /// The engine's knobs (`sam2_api::tuning::Tuning`); `--tune` and `SAM2_TUI_<KNOB>`
    /// override them. The keys this file names are marked as coming from it.
    pub tuning: Tuning,
    /// Action name → keys (replaces that action's default keys). See `console::keymap`.
    pub keys: BTreeMap<String, toml::Spanned<Vec<String>>>,
    /// Where the file came from (None: built-in defaults). Used to name it in errors.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The file's text, kept so later checks (key names) can report line and column.
    #[serde(skip)]
    pub text: String,
}

/// What the worker process is and how it is started.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The worker command line; empty means this binary's hidden `engine` subcommand.
    pub command: Vec<String>,
    /// Device policy: auto (cuda → mps → cpu), cpu, cuda or mps.
    pub device: DeviceChoice,
    /// Where to go when the device keeps crashing, in order.
    pub fallback: Vec<DeviceChoice>,
    pub model: ModelSize,
    pub version: ModelVersion,
    /// A checkpoint file; None means the cache's official one for `model`/`version`.
    pub checkpoint: Option<PathBuf>,
    /// auto (default): bf16 on CUDA, fp32 on the CPU and MPS, as the official demo.
    pub precision: PrecisionChoice,
    /// Intra-op threads of the worker (0: libtorch's default).
    pub threads: u32,
    /// `PYTORCH_MPS_HIGH_WATERMARK_RATIO` (None: libtorch's default, 1.7).
    pub mps_high_watermark_ratio: Option<f32>,
    /// `PYTORCH_MPS_LOW_WATERMARK_RATIO` (None: libtorch's default).
    pub mps_low_watermark_ratio: Option<f32>,
    /// `PYTORCH_ENABLE_MPS_FALLBACK=1`: run ops MPS lacks on the CPU instead of failing.
    pub mps_cpu_fallback: bool,
    /// Extra environment for the worker.
    pub env: BTreeMap<String, String>,
    /// The model's input size: 1024 for the official models. Not a config-file setting
    /// (the hidden `--image-size` flag, for tests that are about logic, sets it).
    #[serde(skip)]
    pub image_size: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            command: vec![],
            device: DeviceChoice::Auto,
            fallback: vec![DeviceChoice::Cpu],
            model: ModelSize::Tiny,
            version: ModelVersion::V2_1,
            checkpoint: None,
            precision: PrecisionChoice::Auto,
            threads: 0,
            mps_high_watermark_ratio: None,
            mps_low_watermark_ratio: None,
            mps_cpu_fallback: true,
            env: BTreeMap::new(),
            image_size: 1024,
        }
    }
}

/// The restart policy: how a crashed or hung worker is replaced.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// Restarts allowed within `restart_window_secs` before stepping down the fallback ladder.
    pub max_restarts: u32,
    pub restart_window_secs: u64,
    /// Exponential backoff between restarts: first delay, cap.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Watchdog: kill a worker that sent no heartbeat for this long (0: never).
    pub heartbeat_timeout_secs: u64,
    /// Kill a worker whose operation produced nothing for this long (a device hang while
    /// its heartbeat thread still runs, e.g. a stuck MPS synchronize).
    pub progress_timeout_secs: u64,
    /// Model loading and media opening may take this long.
    pub load_timeout_secs: u64,
    /// Replace the worker after this many frames (0: never), like gunicorn's --max-requests.
    pub recycle_after_frames: u64,
    /// Random extra frames added to `recycle_after_frames` so recycling does not line up.
    pub recycle_jitter_frames: u64,
    /// Replace the worker when driver-allocated memory passes this fraction of the device's
    /// recommended maximum (0: never).
    pub recycle_memory_fraction: f32,
    /// After the device ladder is exhausted, also try the next smaller model.
    pub fallback_smaller_model: bool,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 3,
            restart_window_secs: 120,
            backoff_initial_ms: 250,
            backoff_max_ms: 8000,
            heartbeat_timeout_secs: 10,
            progress_timeout_secs: 120,
            load_timeout_secs: 300,
            recycle_after_frames: 0,
            recycle_jitter_frames: 0,
            recycle_memory_fraction: 0.0,
            fallback_smaller_model: false,
        }
    }
}

/// Cluster defaults for `sam2-tui batch --slurm` (flags given on the command line win).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    /// e.g. "gpu:1".
    pub gres: Option<String>,
    /// Time limit per array task, e.g. "02:00:00".
    pub time: Option<String>,
    /// Environment modules to `module load` before the task runs.
    pub modules: Vec<String>,
    /// The sam2-tui binary as the compute nodes see it (default: this executable).
    pub binary: Option<PathBuf>,
}

/// Terminal graphics protocol for the preview.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Graphics {
    #[default]
    Auto,
    Kitty,
    Sixel,
    Iterm2,
    Halfblocks,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A built-in theme name (dark, light, high-contrast) or a path to a theme file.
    pub theme: String,
    pub graphics: Graphics,
    /// Wrap image escapes for tmux: None = detect from TERM, true/false = force.
    pub tmux_passthrough: Option<bool>,
    /// Most preview images per second (independent of inference speed).
    pub preview_fps: f32,
    /// Most screen redraws per second.
    pub max_redraw_fps: f32,
    /// Housekeeping tick (ETA, spinner), milliseconds.
    pub tick_ms: u64,
    /// Capture the mouse so clicks place points.
    pub mouse: bool,
    /// Mask opacity in the preview, 0..1.
    pub mask_alpha: f32,
    /// Log filter (tracing's EnvFilter syntax); RUST_LOG wins when set.
    pub log_level: String,
    /// Cursor step in video pixels for h/j/k/l (shift moves 10×); 0 = 1/64 of the width.
    pub cursor_step: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            theme: "dark".into(),
            graphics: Graphics::Auto,
            tmux_passthrough: None,
            preview_fps: 8.0,
            max_redraw_fps: 60.0,
            tick_ms: 250,
            mouse: true,
            mask_alpha: 0.5,
            log_level: "info".into(),
            cursor_step: 0,
        }
    }
}

impl Config {
    /// Loads the config: `override_path` (must exist), else `$SAM2_TUI_CONFIG` (must exist),
    /// else the first existing of the default locations, else the built-in defaults.
    pub fn load(override_path: Option<&Path>) -> anyhow::Result<Config> {
        if let Some(p) = override_path {
            return Self::from_file(p);
        }
        if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            return Self::from_file(Path::new(&p));
        }
        for p in Self::search_paths() {
            if p.is_file() {
                return Self::from_file(&p);
            }
        }
        Ok(Config::default())
    }

    /// Where a config is looked for, first match wins: `$XDG_CONFIG_HOME/sam2-tui/config.toml`,
    /// `~/.config/sam2-tui/config.toml` (what CLI users expect, also on macOS), then the
    /// platform's own directory (`~/Library/Application Support/sam2-tui` on macOS).
    pub fn search_paths() -> Vec<PathBuf> {
        let mut out = vec![];
        if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            out.push(PathBuf::from(x).join("sam2-tui/config.toml"));
        }
        if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            out.push(PathBuf::from(home).join(".config/sam2-tui/config.toml"));
        }
        if let Some(d) = directories::ProjectDirs::from("", "", "sam2-tui") {
            out.push(d.config_dir().join("config.toml"));
        }
        out.dedup();
        out
    }

    /// The directory for logs and saved state (see `dirs`).
    pub fn data_dir() -> PathBuf {
        crate::dirs::data_dir()
    }

    /// A config file is the user's input: every error here is bad input (exit 2).
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = crate::limits::read_input_text(path, "config")?;
        Self::parse(&text, path).map_err(crate::util::as_bad_input)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Config> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().replace('\n', " ");
            match e.span() {
                Some(span) => anyhow::anyhow!("{}: {}", located(path, text, span.start), msg.trim()),
                None => anyhow::anyhow!("{}: {}", path.display(), msg.trim()),
            }
        })?;
        cfg.check().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Which knobs the file set (serde gave their values, not whether they were there).
        if let Some(toml::Value::Table(t)) = text.parse::<toml::Table>().ok().as_ref().and_then(|t| t.get("tuning")) {
            for key in t.keys() {
                cfg.tuning.set_source(key, Source::Config).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            }
        }
        cfg.source = Some(path.to_path_buf());
        cfg.text = text.to_string();
        Ok(cfg)
    }

    /// Ranges serde cannot express.
    fn check(&self) -> Result<(), String> {
        let c = &self.console;
        if !(c.preview_fps > 0.0 && c.preview_fps <= 120.0) {
            return Err(format!("console.preview_fps must be in (0, 120], got {}", c.preview_fps));
        }
        if !(c.max_redraw_fps > 0.0 && c.max_redraw_fps <= 240.0) {
            return Err(format!("console.max_redraw_fps must be in (0, 240], got {}", c.max_redraw_fps));
        }
        if !(0.0..=1.0).contains(&c.mask_alpha) {
            return Err(format!("console.mask_alpha must be in [0, 1], got {}", c.mask_alpha));
        }
        for (name, r) in [
            ("engine.mps_high_watermark_ratio", self.engine.mps_high_watermark_ratio),
            ("engine.mps_low_watermark_ratio", self.engine.mps_low_watermark_ratio),
        ] {
            if let Some(r) = r {
                if !(0.0..=2.0).contains(&r) {
                    return Err(format!("{name} must be in [0, 2] (0 = unlimited), got {r}"));
                }
            }
        }
        if let (Some(lo), Some(hi)) = (self.engine.mps_low_watermark_ratio, self.engine.mps_high_watermark_ratio) {
            if hi > 0.0 && lo > hi {
                return Err(format!("engine.mps_low_watermark_ratio ({lo}) exceeds the high one ({hi})"));
            }
        }
        self.check_supervisor()?;
        self.tuning.check()?;
        if !(0.0..=1.5).contains(&self.supervisor.recycle_memory_fraction) {
            return Err(format!(
                "supervisor.recycle_memory_fraction must be in [0, 1.5], got {}",
                self.supervisor.recycle_memory_fraction
            ));
        }
        Ok(())
    }

    /// The restart and watchdog settings: a backoff of `i64::MAX` ms waits for ever and a
    /// zero window never restarts, so every one has a range (README, "Limits").
    fn check_supervisor(&self) -> Result<(), String> {
        let s = &self.supervisor;
        let ranges: [(&str, u64, u64, u64); 7] = [
            ("supervisor.max_restarts", s.max_restarts as u64, 0, 100),
            ("supervisor.restart_window_secs", s.restart_window_secs, 1, 86_400),
            ("supervisor.backoff_initial_ms", s.backoff_initial_ms, 1, 60_000),
            ("supervisor.backoff_max_ms", s.backoff_max_ms, 1, 600_000),
            ("supervisor.heartbeat_timeout_secs", s.heartbeat_timeout_secs, 0, 3_600),
            ("supervisor.progress_timeout_secs", s.progress_timeout_secs, 0, 86_400),
            ("supervisor.load_timeout_secs", s.load_timeout_secs, 0, 86_400),
        ];
        for (name, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err(format!("{name} must be in [{lo}, {hi}], got {v}"));
            }
        }
        if s.backoff_max_ms < s.backoff_initial_ms {
            return Err(format!(
                "supervisor.backoff_max_ms ({}) is below supervisor.backoff_initial_ms ({})",
                s.backoff_max_ms, s.backoff_initial_ms
            ));
        }
        Ok(())
    }

    /// "file:line:column" for a byte offset of this config's text (for later checks such as
    /// key names); just "defaults" for the built-in config.
    pub fn locate(&self, offset: usize) -> String {
        match &self.source {
            Some(p) => located(p, &self.text, offset),
            None => "built-in defaults".into(),
        }
    }
}

/// `path:line:column` (both 1-based) of a byte offset.
fn located(path: &Path, text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    format!("{}:{line}:{col}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert_eq!(c.engine, EngineConfig::default());
        assert_eq!(c.console, ConsoleConfig::default());
    }

    #[test]
    fn a_typo_names_file_line_and_column() {
        let e = Config::parse("[console]\nthme = \"dark\"\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:2:1: "), "{e}");
        assert!(e.contains("thme"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn restart_and_watchdog_settings_out_of_range_are_refused_by_name() {
        for (text, name) in [
            ("backoff_initial_ms = 9223372036854775807", "supervisor.backoff_initial_ms"),
            ("backoff_max_ms = 9223372036854775807", "supervisor.backoff_max_ms"),
            ("restart_window_secs = 0", "supervisor.restart_window_secs"),
            ("max_restarts = 1000000", "supervisor.max_restarts"),
            ("heartbeat_timeout_secs = 9223372036854775807", "supervisor.heartbeat_timeout_secs"),
            ("load_timeout_secs = 9999999999", "supervisor.load_timeout_secs"),
            ("backoff_initial_ms = 5000\nbackoff_max_ms = 1000", "supervisor.backoff_max_ms"),
        ] {
            let e = Config::parse(&format!("[supervisor]\n{text}\n"), Path::new("c.toml")).unwrap_err().to_string();
            assert!(e.starts_with("c.toml: ") && e.contains(name), "{text}: {e}");
        }
        Config::parse(
            "[supervisor]\nbackoff_initial_ms = 100\nbackoff_max_ms = 100\nheartbeat_timeout_secs = 0\n",
            Path::new("c.toml"),
        )
        .unwrap();
    }

    #[test]
    fn a_tuning_knob_comes_from_the_config_then_the_command_line_then_the_environment() {
        let mut cfg = Config::parse(
            "[tuning]\npipeline_depth = 2\nencode_batch = 2\ncuda_graphs = false\ntrace_pass = 5\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let tune = vec![("encode_batch".to_string(), "3".to_string()), ("cuda_graphs".to_string(), "on".to_string())];
        EngineFlags { tune, ..Default::default() }.apply(&mut cfg);
        let env = |k: &str| (k == "SAM2_TUI_CUDA_GRAPHS").then(|| "0".to_string());
        let mut t = cfg.tuning.clone();
        assert!(t.apply_env_from(env).is_empty());
        // config only; config < CLI; config < CLI < env; nobody.
        assert_eq!((t.pipeline_depth, t.source("pipeline_depth")), (2, Source::Config));
        assert_eq!((t.encode_batch, t.source("encode_batch")), (3, Source::Cli));
        assert_eq!((t.cuda_graphs, t.source("cuda_graphs")), (false, Source::Env));
        assert_eq!((t.fused, t.source("fused")), (true, Source::Default));
        assert_eq!((t.trace_pass, t.source("trace_pass")), (5, Source::Config));
        let described: Vec<(&str, String, Source)> =
            t.describe().into_iter().map(|k| (k.name, k.value, k.source)).collect();
        assert!(described.contains(&("cuda_graphs", "false".into(), Source::Env)), "{described:?}");
        assert_eq!(described.len(), crate::tuning::KNOBS.len());
    }

    #[test]
    fn the_knobs_reach_the_supervisor_options_with_the_worker_s_start_up_ones_as_environment() {
        let cfg = Config::parse("[tuning]\nkeep_freed = false\nencode_batch = 2\n", Path::new("c.toml")).unwrap();
        let o = supervisor_options(&cfg, "ck.pt".into(), None, vec![]).unwrap();
        // (Holds unless the test's own environment sets these knobs.)
        if std::env::var_os("SAM2_TUI_KEEP_FREED").is_none() && std::env::var_os("SAM2_TUI_ENCODE_BATCH").is_none() {
            assert_eq!(o.tuning.encode_batch, 2);
            assert!(o.env.contains(&("SAM2_TUI_KEEP_FREED".to_string(), "0".to_string())), "{:?}", o.env);
        }
    }

    #[test]
    fn a_tuning_typo_or_an_absurd_count_in_the_config_is_refused_by_name() {
        let e = Config::parse("[tuning]\npipline_depth = 2\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:2:1: ") && e.contains("pipline_depth"), "{e}");
        let e = Config::parse("[tuning]\nencode_batch = 100000\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("tuning.encode_batch"), "{e}");
    }

    #[test]
    fn batch_objects_in_the_config_is_a_boolean_or_auto_and_anything_else_is_refused_by_name() {
        use crate::tuning::AutoSwitch;
        for (text, want) in [("true", AutoSwitch::On), ("false", AutoSwitch::Off), ("\"auto\"", AutoSwitch::Auto)] {
            let cfg = Config::parse(&format!("[tuning]\nbatch_objects = {text}\n"), Path::new("c.toml")).unwrap();
            assert_eq!(cfg.tuning.batch_objects, want, "{text}");
        }
        let e = Config::parse("[tuning]\nbatch_objects = \"often\"\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:2:") && e.contains("auto"), "{e}");
    }

    #[test]
    fn out_of_range_watermark_is_refused() {
        let e = Config::parse("[engine]\nmps_high_watermark_ratio = 2.5\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("mps_high_watermark_ratio"), "{e}");
    }
}
