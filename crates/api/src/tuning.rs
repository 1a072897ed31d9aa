//! The engine's tuning knobs, read once into one struct: how fast and with what
//! resources the engine computes, never what it computes in exact mode (the parity tests
//! hold every default), plus its diagnostic outputs. The engine reads them only from the
//! `Tuning` it is given: `LoadOptions`/`VideoOptions` in process, `LoadModel` through the
//! worker protocol.
//!
//! Layers, later wins: the defaults, the config file's `[tuning]` table, the command line
//! (`--tune KEY=VALUE`), the environment (`SAM2_TUI_<KEY>`). A worker applies its own
//! environment on top of what the protocol brings, so a variable set for one run reaches
//! the worker whoever started it.
//!
//! Not here, on purpose: `SAM2_TUI_EMULATE_MPS` (the CPU takes the MPS branches) is a test
//! hook that must hold for the whole process from its first tensor (tables built at load
//! must match the ones used per frame) and changes the arithmetic, not its speed; and
//! `SAM2_TUI_FAULT`/`SAM2_TUI_FAULT_STATE` inject crashes for the supervisor's tests.
//! A config file or a flag must never turn either on; both stay environment-only.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a knob's value came from (the latest layer that set it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Default,
    Config,
    Cli,
    Env,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::Config => "config",
            Source::Cli => "cli",
            Source::Env => "env",
        })
    }
}

/// A switch whose default depends on the device and precision, which only the engine
/// knows: `auto` there, or forced on or off. Written as `"auto"`, `true` or `false` (a
/// config file may also give a bare boolean).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AutoSwitch {
    #[default]
    Auto,
    On,
    Off,
}

impl AutoSwitch {
    /// Its text form: `auto`, or a switch's words (1/0, true/false, on/off, yes/no).
    pub fn parse(text: &str) -> Option<AutoSwitch> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(AutoSwitch::Auto),
            "1" | "true" | "on" | "yes" => Some(AutoSwitch::On),
            "0" | "false" | "off" | "no" => Some(AutoSwitch::Off),
            _ => None,
        }
    }

    /// On or off, `auto` taking `auto_value` (the engine's default where it runs).
    pub fn resolve(self, auto_value: bool) -> bool {
        match self {
            AutoSwitch::Auto => auto_value,
            AutoSwitch::On => true,
            AutoSwitch::Off => false,
        }
    }
}

impl From<bool> for AutoSwitch {
    fn from(on: bool) -> Self {
        if on {
            AutoSwitch::On
        } else {
            AutoSwitch::Off
        }
    }
}

impl std::fmt::Display for AutoSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AutoSwitch::Auto => "auto",
            AutoSwitch::On => "true",
            AutoSwitch::Off => "false",
        })
    }
}

impl Serialize for AutoSwitch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AutoSwitch::Auto => s.serialize_str("auto"),
            AutoSwitch::On => s.serialize_bool(true),
            AutoSwitch::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for AutoSwitch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Bool(bool),
            Text(String),
        }
        match Form::deserialize(d)? {
            Form::Bool(b) => Ok(b.into()),
            Form::Text(t) => AutoSwitch::parse(&t)
                .ok_or_else(|| serde::de::Error::custom(format!("expected true, false or \"auto\", not {t:?}"))),
        }
    }
}

/// Every knob. A count of 0 means "the default for this device/machine"; the engine
/// resolves it where it knows the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// `SAM2_TUI_PIPELINE_DEPTH`: propagation frames whose model work is queued before the
    /// oldest is written out; 0 = 3 on CUDA, 1 elsewhere. Deeper lets the host's share of
    /// a frame (hole filling, the bank's write-through, sending masks) overlap the GPU's
    /// work, at the cost of that many frames' outputs held in RAM; on the CPU the model
    /// runs synchronously and a deeper queue only delays outputs.
    pub pipeline_depth: usize,
    /// `SAM2_TUI_ENCODE_BATCH`: frames per image-encoder call during propagation; 0 = 4 in
    /// the CUDA fast modes, 1 otherwise. Larger batches fill a GPU that one frame leaves
    /// mostly idle; the GPU libraries may pick other kernels for another batch size, so
    /// exact mode keeps 1.
    pub encode_batch: usize,
    /// `SAM2_TUI_PREFETCH_THREADS`: threads resizing decoded frames ahead of the model; 0 = a
    /// quarter of the cores, at most 4. More keeps a fast GPU fed; each one competes with
    /// the model's own threads for the CPU.
    pub prefetch_threads: usize,
    /// `SAM2_TUI_RESIZE_THREADS`: threads splitting one frame's resize into row bands; 0 = a
    /// quarter of the cores, at most 4. The bytes are the same however rows are split.
    pub resize_threads: usize,
    /// `SAM2_TUI_CUDA_GRAPHS`: capture a frame's fixed-shape pieces (image encoder, tracking
    /// step) as CUDA graphs and replay each as one launch. Off: every kernel launched one by
    /// one (slower; for A/B runs and to rule graphs out).
    pub cuda_graphs: bool,
    /// `SAM2_TUI_FUSED`: the NVRTC-compiled fused kernels of the CUDA fast modes (LayerNorm
    /// written in bf16, RoPE in one pass). Off: libtorch's ops (slower; for A/B runs).
    pub fused: bool,
    /// `SAM2_TUI_FUSED_KEYS`: the memory attention's key projection and its RoPE as one
    /// kernel (`linear64_rope_bf16`, CUDA fast modes). Off by default: on an H200 its masks
    /// were those of the two-pass form, but 16 objects ran at 42.2 FPS with it against 45.0
    /// without (cuBLAS's projection plus a RoPE pass is faster there).
    pub fused_keys: bool,
    /// `SAM2_TUI_CPU_ATTENTION`: the CPU kernel for the memory attention's cross-attention
    /// with the value projection folded out (fp32, x86-64 Linux). Off: libtorch's SDPA
    /// (slower; sums rounded in another order, ~1e-6 relative).
    pub cpu_attention: bool,
    /// `SAM2_TUI_TF32`: TF32 for fp32 matmuls and convolutions on CUDA, as the reference's
    /// demos. Off: strict fp32 (slower, closer to the CPU's numbers).
    pub tf32: bool,
    /// `SAM2_TUI_CUDNN_ATTENTION`: let libtorch prefer cuDNN's attention kernels (its Hopper
    /// default). Off: FlashAttention, faster for SAM 2's shapes.
    pub cudnn_attention: bool,
    /// `SAM2_TUI_CUDNN_BATCH`: attention of one 256-wide head (the memory attention's) over
    /// a batch of at least this many query sets (objects or videos tracked together, CUDA
    /// bf16/fp16) runs cuDNN's kernel, whatever `cudnn_attention` says; 0 = never.
    /// FlashAttention is faster for one object and cuDNN's for many: at 4096 queries over
    /// 28.7k keys on an H100, 0.39 vs 0.66 ms for one, 5.9 vs 2.7 ms for 16; 4 (the
    /// default) is where cuDNN starts to win. Its masks were compared with the reference's
    /// (16 objects batched, 200 frames, bf16, an H100): 99.919 % of pixels, as with
    /// FlashAttention and as one object after another.
    pub cudnn_batch: usize,
    /// `SAM2_TUI_DECORD_VIDEO`: a video file's frames scaled straight to the model's input
    /// as the reference's video predictor reads an `.mp4` (decord: FFmpeg's swscale,
    /// bilinear, from the decoded picture). On (the default), a video file's masks are the
    /// reference's (`parity_video`: max |Δlogit| 3e-6 on an `.mp4`); off: decoded at the
    /// video's size and resized with Pillow's bicubic filter, as the reference does for
    /// frame folders (there: 0.36 and 98.9 % of pixels). Frame folders and images are not
    /// affected.
    pub decord_video: bool,
    /// `SAM2_TUI_FP32_HEADS`: keep the SAM heads (prompt encoder, mask decoder, object
    /// pointer projection) in fp32 in the pure low-precision modes (CPU/MPS bf16, fp16).
    /// Off: the heads in the low type too (a little faster, fewer pixels agree with exact
    /// mode: 99.23 % vs 99.66 % on base_plus).
    pub fp32_heads: bool,
    /// `SAM2_TUI_BATCH_OBJECTS`: track all objects of a propagation frame in one batched
    /// pass (one memory attention per group of objects with equal memory lengths, one mask
    /// decoder and one memory encoder call for all; on CUDA the whole step one graph per
    /// object count). `auto` (the default): on in the CUDA fast modes (bf16, fp16), off
    /// elsewhere (one object after another, as the reference). In CUDA bf16 the batched
    /// masks are as close to the reference's as the one-by-one ones (16 objects, 200
    /// frames, an H100: 99.919 % of pixels either way) and the run is 1.4× faster; on the
    /// CPU the parity journals hold both ways to 1e-3 in logits and 99.99 % of pixels, but
    /// batching gains at most a fifth there and holds ~0.8 GiB more at 16 objects, so it
    /// stays opt-in.
    pub batch_objects: AutoSwitch,
    /// `SAM2_TUI_KEEP_FREED`: the worker keeps freed host memory in its heap, so each
    /// frame's large activations are not faulted in again page by page; its resident memory
    /// stays at its high-water mark. Read when the worker starts, before its threads, so
    /// it reaches the worker through its environment (see [`Tuning::process_env`]).
    pub keep_freed: bool,
    /// `SAM2_TUI_WARM_UP`: on CUDA with graphs on, a worker tracks a short synthetic clip
    /// right after loading the model, so the first session it serves finds the kernels
    /// chosen, the memory pools grown and the CUDA graphs of one object's tracking step
    /// captured (they are kept for that session: a graph replays the model's math, not the
    /// clip's). Off by default: a one-off command pays the same captures on its own frames;
    /// `serve` turns it on for the spare workers it starts ahead of sessions.
    pub warm_up: bool,
    /// `SAM2_TUI_SYNC_TIMINGS`: synchronise the GPU after each stage so per-stage times are
    /// exact. Costs the queueing ahead that makes a GPU frame fast; off, GPU stage times
    /// are enqueue times and only a frame's total is exact.
    pub sync_timings: bool,
    /// `SAM2_TUI_TRACE`: record one propagation with libtorch's profiler into this Chrome
    /// trace file (none: off). Every operator is slower while recording.
    pub trace: Option<PathBuf>,
    /// `SAM2_TUI_TRACE_PASS`: which propagation of the worker `trace` records, from 1 (2: the
    /// one after `bench`'s warm-up).
    pub trace_pass: usize,
    /// `SAM2_TUI_LOGITS_DIR`: where the worker writes each object's float logits as
    /// `<object>/<frame:05>.npy` (none: not written). `segment --logits` sets it to the
    /// output it stages; too large for the pipe, so written by the worker itself.
    pub logits_dir: Option<PathBuf>,
    /// Where each knob's value came from (not sent to a worker; for `describe`).
    #[serde(skip)]
    pub sources: Sources,
}

/// Where each knob's value came from; knobs not named are defaults. Public so that a
/// `Tuning { encode_batch: 3, ..Default::default() }` can be written anywhere; changed
/// only through [`Tuning::set`] and [`Tuning::set_source`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sources(BTreeMap<&'static str, Source>);

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            pipeline_depth: 0,
            encode_batch: 0,
            prefetch_threads: 0,
            resize_threads: 0,
            cuda_graphs: true,
            fused: true,
            fused_keys: false,
            cpu_attention: true,
            tf32: true,
            cudnn_attention: false,
            cudnn_batch: 4,
            decord_video: true,
            fp32_heads: true,
            batch_objects: AutoSwitch::Auto,
            keep_freed: true,
            warm_up: false,
            sync_timings: false,
            trace: None,
            trace_pass: 2,
            logits_dir: None,
            sources: Sources::default(),
        }
    }
}

/// Each knob's name (the config key and `--tune` key) and its environment variable, in
/// the struct's order.
pub const KNOBS: &[(&str, &str)] = &[
    ("pipeline_depth", "SAM2_TUI_PIPELINE_DEPTH"),
    ("encode_batch", "SAM2_TUI_ENCODE_BATCH"),
    ("prefetch_threads", "SAM2_TUI_PREFETCH_THREADS"),
    ("resize_threads", "SAM2_TUI_RESIZE_THREADS"),
    ("cuda_graphs", "SAM2_TUI_CUDA_GRAPHS"),
    ("fused", "SAM2_TUI_FUSED"),
    ("fused_keys", "SAM2_TUI_FUSED_KEYS"),
    ("cpu_attention", "SAM2_TUI_CPU_ATTENTION"),
    ("tf32", "SAM2_TUI_TF32"),
    ("cudnn_attention", "SAM2_TUI_CUDNN_ATTENTION"),
    ("cudnn_batch", "SAM2_TUI_CUDNN_BATCH"),
    ("decord_video", "SAM2_TUI_DECORD_VIDEO"),
    ("fp32_heads", "SAM2_TUI_FP32_HEADS"),
    ("batch_objects", "SAM2_TUI_BATCH_OBJECTS"),
    ("keep_freed", "SAM2_TUI_KEEP_FREED"),
    ("warm_up", "SAM2_TUI_WARM_UP"),
    ("sync_timings", "SAM2_TUI_SYNC_TIMINGS"),
    ("trace", "SAM2_TUI_TRACE"),
    ("trace_pass", "SAM2_TUI_TRACE_PASS"),
    ("logits_dir", "SAM2_TUI_LOGITS_DIR"),
];

/// The largest count a knob takes (queue depths, batches, threads): beyond it a typo
/// would hold thousands of frames in RAM or start thousands of threads.
pub const MAX_COUNT: usize = 256;

/// One line of [`Tuning::describe`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Knob {
    pub name: &'static str,
    pub env: &'static str,
    /// As `--tune` would take it back (`""` for an unset path).
    pub value: String,
    pub source: Source,
}

impl Tuning {
    /// The defaults with this process's environment on top.
    pub fn from_env() -> Tuning {
        let mut t = Tuning::default();
        t.apply_env();
        t
    }

    /// Applies this process's `SAM2_TUI_*` variables on top (the environment wins). A value
    /// that does not parse is ignored, as before there was a config layer; the returned
    /// lines say which (for a warning).
    pub fn apply_env(&mut self) -> Vec<String> {
        self.apply_env_from(|k| std::env::var(k).ok())
    }

    /// [`Tuning::apply_env`] with the environment given as a lookup (for tests).
    pub fn apply_env_from(&mut self, var: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut ignored = vec![];
        for &(name, env) in KNOBS {
            if let Some(v) = var(env) {
                if let Err(e) = self.set(name, &v, Source::Env) {
                    ignored.push(format!("ignoring {env}={v}: {e}"));
                }
            }
        }
        ignored
    }

    /// Sets knob `name` from its text form (`--tune`, the environment): counts as
    /// integers, switches as 1/0, true/false, on/off or yes/no, paths as given (empty:
    /// none).
    pub fn set(&mut self, name: &str, value: &str, source: Source) -> Result<(), String> {
        let value = value.trim();
        let count = || -> Result<usize, String> {
            let n: usize = value.parse().map_err(|_| format!("{name} takes a count, not {value:?}"))?;
            if n > MAX_COUNT {
                return Err(format!("{name} must be at most {MAX_COUNT}, got {n}"));
            }
            Ok(n)
        };
        // A plain switch takes the words of an `AutoSwitch` but `auto`.
        let switch = || -> Result<bool, String> {
            match AutoSwitch::parse(value) {
                Some(AutoSwitch::On) => Ok(true),
                Some(AutoSwitch::Off) => Ok(false),
                _ => Err(format!("{name} is a switch (1/0, true/false, on/off), not {value:?}")),
            }
        };
        let path = || (!value.is_empty()).then(|| PathBuf::from(value));
        match name {
            "pipeline_depth" => self.pipeline_depth = count()?,
            "encode_batch" => self.encode_batch = count()?,
            "prefetch_threads" => self.prefetch_threads = count()?,
            "resize_threads" => self.resize_threads = count()?,
            "cuda_graphs" => self.cuda_graphs = switch()?,
            "fused" => self.fused = switch()?,
            "fused_keys" => self.fused_keys = switch()?,
            "cpu_attention" => self.cpu_attention = switch()?,
            "tf32" => self.tf32 = switch()?,
            "cudnn_attention" => self.cudnn_attention = switch()?,
            "cudnn_batch" => self.cudnn_batch = count()?,
            "decord_video" => self.decord_video = switch()?,
            "fp32_heads" => self.fp32_heads = switch()?,
            "batch_objects" => {
                self.batch_objects = AutoSwitch::parse(value)
                    .ok_or_else(|| format!("{name} is a switch (1/0, true/false, on/off) or auto, not {value:?}"))?
            }
            "keep_freed" => self.keep_freed = switch()?,
            "warm_up" => self.warm_up = switch()?,
            "sync_timings" => self.sync_timings = switch()?,
            "trace" => self.trace = path(),
            "trace_pass" => {
                self.trace_pass = value.parse().map_err(|_| format!("trace_pass takes a count, not {value:?}"))?
            }
            "logits_dir" => self.logits_dir = path(),
            _ => return Err(unknown(name)),
        }
        self.set_source(name, source)
    }

    /// Records that knob `name` came from `source` (the config loader marks the keys its
    /// table named; the typed values came through serde).
    pub fn set_source(&mut self, name: &str, source: Source) -> Result<(), String> {
        let &(name, _) = KNOBS.iter().find(|(n, _)| *n == name).ok_or_else(|| unknown(name))?;
        self.sources.0.insert(name, source);
        Ok(())
    }

    pub fn source(&self, name: &str) -> Source {
        self.sources.0.get(name).copied().unwrap_or_default()
    }

    /// Knob `name`'s value in its text form (None: no such knob).
    pub fn value(&self, name: &str) -> Option<String> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        Some(match name {
            "pipeline_depth" => self.pipeline_depth.to_string(),
            "encode_batch" => self.encode_batch.to_string(),
            "prefetch_threads" => self.prefetch_threads.to_string(),
            "resize_threads" => self.resize_threads.to_string(),
            "cuda_graphs" => self.cuda_graphs.to_string(),
            "fused" => self.fused.to_string(),
            "fused_keys" => self.fused_keys.to_string(),
            "cpu_attention" => self.cpu_attention.to_string(),
            "tf32" => self.tf32.to_string(),
            "cudnn_attention" => self.cudnn_attention.to_string(),
            "cudnn_batch" => self.cudnn_batch.to_string(),
            "decord_video" => self.decord_video.to_string(),
            "fp32_heads" => self.fp32_heads.to_string(),
            "batch_objects" => self.batch_objects.to_string(),
            "keep_freed" => self.keep_freed.to_string(),
            "warm_up" => self.warm_up.to_string(),
            "sync_timings" => self.sync_timings.to_string(),
            "trace" => path(&self.trace),
            "trace_pass" => self.trace_pass.to_string(),
            "logits_dir" => path(&self.logits_dir),
            _ => return None,
        })
    }

    /// Every knob with its value and where the value came from (for `doctor`).
    pub fn describe(&self) -> Vec<Knob> {
        KNOBS
            .iter()
            .map(|&(name, env)| Knob {
                name,
                env,
                value: self.value(name).expect("every knob has a value"),
                source: self.source(name),
            })
            .collect()
    }

    /// Ranges the types cannot express (a config file's values come through serde).
    pub fn check(&self) -> Result<(), String> {
        for (name, n) in [
            ("pipeline_depth", self.pipeline_depth),
            ("encode_batch", self.encode_batch),
            ("prefetch_threads", self.prefetch_threads),
            ("resize_threads", self.resize_threads),
        ] {
            if n > MAX_COUNT {
                return Err(format!("tuning.{name} must be at most {MAX_COUNT}, got {n}"));
            }
        }
        Ok(())
    }

    /// The knobs a worker reads when it starts, before the protocol can bring them, as
    /// environment for the worker: `keep_freed` (set before the worker starts threads).
    /// Empty when they are the defaults.
    pub fn process_env(&self) -> Vec<(String, String)> {
        let mut env = vec![];
        if !self.keep_freed {
            env.push(("SAM2_TUI_KEEP_FREED".to_string(), "0".to_string()));
        }
        env
    }
}

fn unknown(name: &str) -> String {
    let known: Vec<&str> = KNOBS.iter().map(|(n, _)| *n).collect();
    format!("no tuning knob {name:?} (knobs: {})", known.join(", "))
}

/// `KEY=VALUE` as `--tune` takes it, checked against the knobs.
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    let k = k.trim();
    Tuning::default().set(k, v, Source::Cli)?;
    Ok((k.to_string(), v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_knob_is_named_once_with_its_env_variable_and_round_trips_through_its_text_form() {
        // The table and the struct agree: the serialized fields are exactly the knobs, in order.
        let json = serde_json::to_value(Tuning::default()).unwrap();
        let fields: Vec<&str> = json.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut names: Vec<&str> = KNOBS.iter().map(|(n, _)| *n).collect();
        names.sort();
        let mut sorted = fields.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        for &(name, env) in KNOBS {
            assert_eq!(env, format!("SAM2_TUI_{}", name.to_ascii_uppercase()));
            let mut t = Tuning::default();
            let v = t.value(name).unwrap();
            t.set(name, &v, Source::Cli).unwrap_or_else(|e| panic!("{name}={v}: {e}"));
            assert_eq!(t.value(name).unwrap(), v);
            assert_eq!(t.source(name), Source::Cli);
        }
    }

    #[test]
    fn the_environment_parses_as_before_and_ignores_what_does_not_parse() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let mut t = Tuning::default();
        let ignored = t.apply_env_from(env(&[
            ("SAM2_TUI_CUDA_GRAPHS", "0"),
            ("SAM2_TUI_CUDNN_ATTENTION", "1"),
            ("SAM2_TUI_PIPELINE_DEPTH", "5"),
            ("SAM2_TUI_ENCODE_BATCH", "lots"),
            ("SAM2_TUI_TRACE", "/tmp/t.json"),
        ]));
        assert!(!t.cuda_graphs && t.cudnn_attention && t.pipeline_depth == 5);
        assert_eq!(t.encode_batch, 0, "an unparsable value leaves the layer below");
        assert_eq!(t.trace, Some(PathBuf::from("/tmp/t.json")));
        assert_eq!(ignored.len(), 1);
        assert!(ignored[0].contains("SAM2_TUI_ENCODE_BATCH=lots"), "{ignored:?}");
        assert_eq!(t.source("cuda_graphs"), Source::Env);
        assert_eq!(t.source("encode_batch"), Source::Default);
    }

    #[test]
    fn a_tune_assignment_names_a_knob_and_a_value_it_takes() {
        assert_eq!(parse_assignment("pipeline_depth=2").unwrap(), ("pipeline_depth".into(), "2".into()));
        assert!(parse_assignment("pipeline_depth").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_assignment("pipeline_dept=2").unwrap_err().contains("knobs: pipeline_depth"));
        assert!(parse_assignment("fused=maybe").unwrap_err().contains("switch"));
        assert!(parse_assignment("fused=auto").unwrap_err().contains("switch"), "only batch_objects takes auto");
        assert!(parse_assignment("encode_batch=100000").unwrap_err().contains("at most"));
    }

    #[test]
    fn only_a_non_default_keep_freed_becomes_worker_environment() {
        assert!(Tuning::default().process_env().is_empty());
        let mut t = Tuning::default();
        t.set("keep_freed", "off", Source::Config).unwrap();
        assert_eq!(t.process_env(), [("SAM2_TUI_KEEP_FREED".to_string(), "0".to_string())]);
    }

    #[test]
    fn the_protocol_carries_the_values_and_an_older_peer_s_missing_table_is_the_defaults() {
        let mut t = Tuning::default();
        t.set("encode_batch", "3", Source::Cli).unwrap();
        let back: Tuning = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.encode_batch, 3);
        assert_eq!(serde_json::from_str::<Tuning>("{}").unwrap(), Tuning::default());
    }

    #[test]
    fn batch_objects_is_auto_by_default_and_takes_a_switch_or_auto_in_every_form() {
        let t = Tuning::default();
        assert_eq!(t.batch_objects, AutoSwitch::Auto);
        assert!(t.batch_objects.resolve(true) && !t.batch_objects.resolve(false));
        let mut t = Tuning::default();
        t.set("batch_objects", "off", Source::Cli).unwrap();
        assert_eq!(t.batch_objects, AutoSwitch::Off);
        assert!(!t.batch_objects.resolve(true), "forced off wins over the engine's default");
        t.set("batch_objects", "AUTO", Source::Env).unwrap();
        assert_eq!(t.batch_objects, AutoSwitch::Auto);
        let err = t.set("batch_objects", "sometimes", Source::Cli).unwrap_err();
        assert!(err.contains("or auto"), "{err}");
        // A config file's bare boolean (what `batch_objects = true` was before `auto`), and
        // the protocol's form of each value.
        for (json, want) in [("true", AutoSwitch::On), ("false", AutoSwitch::Off), ("\"auto\"", AutoSwitch::Auto)] {
            let back: Tuning = serde_json::from_str(&format!("{{\"batch_objects\": {json}}}")).unwrap();
            assert_eq!(back.batch_objects, want);
            assert_eq!(serde_json::to_string(&want).unwrap(), json);
        }
        assert_eq!(
            serde_json::from_str::<Tuning>("{\"batch_objects\": \"on\"}").unwrap().batch_objects,
            AutoSwitch::On
        );
        assert!(serde_json::from_str::<Tuning>("{\"batch_objects\": \"maybe\"}").is_err());
    }
}
