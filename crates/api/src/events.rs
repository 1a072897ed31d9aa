//! What flows between the supervisor and its users (the console and the headless
//! commands). The console never talks to a worker directly: it sends `EngineCommand`s and
//! folds `EngineEvent`s into its state.
use crate::device::{DeviceChoice, Precision, PrecisionChoice};
use crate::model::{ModelSize, ModelVersion};
use crate::rle::Rle;
use crate::session::{ObjectId, Op};
use serde::{Deserialize, Serialize};

/// Memory of an Apple GPU as libtorch's MPS hooks report it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MpsMemory {
    pub current_allocated: u64,
    pub driver_allocated: u64,
    pub recommended_max: u64,
    pub high_watermark_ratio: Option<f32>,
    pub low_watermark_ratio: Option<f32>,
}

/// Memory of a CUDA device: the caching allocator's view and the driver's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CudaMemory {
    pub allocated: u64,
    pub reserved: u64,
    pub peak_allocated: u64,
    pub total: u64,
    pub used: u64,
}

/// One heartbeat's worth of worker statistics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub device_kind: String,
    pub device_name: String,
    pub torch_version: String,
    pub threads: i32,
    pub rss_bytes: u64,
    pub mps: Option<MpsMemory>,
    pub cuda: Option<CudaMemory>,
}

/// Per-stage latency of one frame, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    pub decode_ms: f32,
    pub image_encoder_ms: f32,
    pub memory_attention_ms: f32,
    pub mask_decoder_ms: f32,
    pub memory_encoder_ms: f32,
    /// The host's share of handing a propagation frame out: hole filling, the memory
    /// bank's write-through, the masks brought to the video's resolution. On a GPU it
    /// overlaps the kernels of the frames queued behind it; with many objects it can
    /// still bound the frame rate, which is why it is measured.
    #[serde(default)]
    pub write_out_ms: f32,
    /// `write_out_ms` in parts: hole filling, the memory bank's write-through, and the
    /// masks brought to the video's resolution.
    #[serde(default)]
    pub fill_holes_ms: f32,
    #[serde(default)]
    pub bank_write_ms: f32,
    #[serde(default)]
    pub to_video_ms: f32,
    pub total_ms: f32,
}

/// The mask of one object on one frame, at video resolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectMask {
    pub object: ObjectId,
    pub rle: Rle,
    /// The object score logit (> 0: present). May be NaN or infinite (a checkpoint with a
    /// NaN, fp16 overflow): it crosses the process boundary as such, see `finite_or_named`.
    #[serde(with = "finite_or_named")]
    pub score: f32,
}

/// An f32 as a JSON number when finite and as the string "NaN", "inf" or "-inf" when not.
/// JSON has no non-finite numbers and serde_json writes them as `null`, which the reader
/// then refused as a malformed frame and killed the worker over a NaN result.
pub mod finite_or_named {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        match *v {
            v if v.is_finite() => s.serialize_f32(v),
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f32),
            Name(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Name(n) => match n.as_str() {
                "NaN" => Ok(f32::NAN),
                "inf" => Ok(f32::INFINITY),
                "-inf" => Ok(f32::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"NaN\", \"inf\" or \"-inf\", got {other:?}"
                ))),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameMasks {
    pub frame: usize,
    pub objects: Vec<ObjectMask>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelLabel {
    pub size: ModelSize,
    pub version: ModelVersion,
    /// True when the checkpoint is a random-init one made because no real weights exist.
    pub random_init: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EngineState {
    Starting,
    Loading,
    Ready,
    Propagating { done: usize, total: usize },
    Crashed { reason: String },
    Restarting { attempt: u32 },
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EngineEvent {
    State(EngineState),
    WorkerStarted {
        pid: u32,
        device: DeviceChoice,
        precision: Precision,
        model: ModelLabel,
        restarts: u32,
    },
    MediaInfo {
        width: u32,
        height: u32,
        frames: usize,
        fps: f32,
    },
    Stats(WorkerStats),
    /// Masks on one frame: the answer to a prompt, or one step of a propagation.
    Masks(FrameMasks),
    Progress {
        frame: usize,
        done: usize,
        total: usize,
        fps: f32,
        timings: StageTimings,
    },
    PropagationFinished {
        cancelled: bool,
    },
    /// Journal op `index` finished (every op ends with this or `OpFailed`).
    OpFinished {
        index: usize,
        cancelled: bool,
    },
    /// Journal op `index` failed in the engine (bad frame, no prompts, …); the worker lives on.
    OpFailed {
        index: usize,
        message: String,
    },
    /// The worker died (signal name or exit status) and the supervisor is acting on it.
    WorkerDied {
        reason: String,
        stderr_tail: Vec<String>,
    },
    FellBack {
        from: DeviceChoice,
        to: DeviceChoice,
        reason: String,
    },
    /// Free-form supervisor decisions and errors for the log pane.
    Log {
        level: LogLevel,
        message: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EngineCommand {
    /// A journal operation (appended to the journal before it is sent).
    Op(Op),
    Cancel,
    SwitchModel(ModelSize),
    SwitchDevice(DeviceChoice),
    /// A new worker on the same model and device with this precision; the journal is
    /// replayed on a fresh bank (a bank holds one precision's memories).
    SwitchPrecision(PrecisionChoice),
    SetWatermark(f32),
    /// Encode this frame ahead of time so a click there only runs the decoder.
    Prefetch(usize),
    /// Move to the next item of a batch: new media, session folder and journal (already
    /// on disk: `SupervisorHandle::next_item` writes it), masks cleared. A ready worker
    /// keeps its loaded model and only opens the new media.
    NextItem {
        media: std::path::PathBuf,
        session_dir: std::path::PathBuf,
        ops: Vec<Op>,
    },
    Shutdown,
}
