//! The wire protocol between the supervisor and an engine worker: length-prefixed frames
//! (u32 little-endian payload length, then a JSON payload) on the worker's stdin/stdout.
//! JSON because it is debuggable with `xxd`/`jq`, and masks travel as compact RLE strings
//! anyway. Decoding never panics: garbage, oversized and truncated frames are errors.
/// The fault-injection plan a worker reads (`engine::worker::fault` says the grammar) and
/// the file where it records which faults fired, so a restarted worker does not fire them again.
pub const FAULT_ENV: &str = "SAM2_TUI_FAULT";
pub const FAULT_STATE_ENV: &str = "SAM2_TUI_FAULT_STATE";

use crate::device::{DeviceChoice, Precision, PrecisionChoice};
use crate::events::{ModelLabel, ObjectMask, StageTimings, WorkerStats};
use crate::model::{ModelSize, ModelVersion};
use crate::session::Op;
use crate::tuning::Tuning;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::PathBuf;

/// Bumped on every incompatible change; both sides refuse a peer of another version.
pub const PROTOCOL_VERSION: u32 = 6;
/// Largest payload either side accepts (a frame of RLE masks is far smaller).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Supervisor → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Hello {
        version: u32,
    },
    LoadModel {
        checkpoint: PathBuf,
        size: Option<ModelSize>,
        version: Option<ModelVersion>,
        device: DeviceChoice,
        /// Resolved by the worker, which knows what `auto` finds on its machine.
        precision: PrecisionChoice,
        image_size: i64,
        /// What the supervisor calls this rung ("mps", "accelerator" in tests); fault
        /// qualifiers and stats use it. None = the resolved device's name.
        device_label: Option<String>,
        /// The engine's knobs (config < CLI < the supervisor's environment); the worker
        /// applies its own environment on top. Absent = the defaults.
        #[serde(default)]
        tuning: Tuning,
    },
    OpenMedia {
        path: PathBuf,
        bank_dir: Option<PathBuf>,
        fill_holes: bool,
    },
    /// Rebuild the state of `ops` (completed by an earlier worker on the same bank).
    Restore {
        ops: Vec<Op>,
    },
    /// Run one journal op; `seq` tags every result that belongs to it.
    Apply {
        seq: u64,
        op: Op,
    },
    /// Stop the running (or queued) propagation at the next frame boundary.
    Cancel,
    Prefetch {
        frame: usize,
    },
    Stats,
    Shutdown,
    // Several videos in one worker (issue #18): each is a stream with its own session
    // (bank, objects, prompts), the model shared. Beside the single session above, not
    // instead of it.
    /// Opens video `stream`; answered with `MediaInfo`.
    OpenStream {
        stream: u32,
        path: PathBuf,
        bank_dir: PathBuf,
        fill_holes: bool,
    },
    /// `Restore` for one stream; answered with `Restored`.
    RestoreStream {
        stream: u32,
        ops: Vec<Op>,
    },
    /// Op `seq` of one stream's journal; answered with its `StreamFrame`s, then
    /// `StreamDone` or `StreamError`.
    ApplyStream(StreamOp),
    /// Propagations of several streams at once, in lockstep (one image-encoder batch and
    /// one tracking step per frame for all of them); each stream answers as `ApplyStream`.
    PropagateStreams {
        passes: Vec<StreamOp>,
    },
    /// Stop `stream`'s propagation at its next frame (the others go on).
    CancelStream {
        stream: u32,
    },
    /// Lets `stream` go: its session (frames, objects, the bank's handles) is dropped once
    /// whatever it runs has ended; answered with `StreamClosed`. A web session that
    /// closes on a shared worker (`serve --streams`).
    CloseStream {
        stream: u32,
    },
}

/// One op of one stream's journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamOp {
    pub stream: u32,
    pub seq: u64,
    pub op: Op,
}

/// Worker → supervisor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Hello {
        version: u32,
        pid: u32,
        torch_version: String,
    },
    Loaded {
        model: ModelLabel,
        device: DeviceChoice,
        /// The precision the worker resolved the requested choice to.
        precision: Precision,
        device_label: String,
    },
    MediaInfo {
        width: u32,
        height: u32,
        frames: usize,
        fps: f32,
    },
    Restored {
        ops: usize,
    },
    Frame {
        seq: u64,
        frame: usize,
        objects: Vec<ObjectMask>,
        timings: StageTimings,
    },
    OpDone {
        seq: u64,
        cancelled: bool,
    },
    /// A request failed; the worker lives on. `seq` is set when it was an op.
    Error {
        seq: Option<u64>,
        message: String,
    },
    Heartbeat {
        stats: WorkerStats,
    },
    Prefetched {
        frame: usize,
    },
    Bye,
    /// `Frame` of one stream.
    StreamFrame {
        stream: u32,
        seq: u64,
        frame: usize,
        objects: Vec<ObjectMask>,
        timings: StageTimings,
    },
    /// `OpDone` of one stream.
    StreamDone {
        stream: u32,
        seq: u64,
        cancelled: bool,
    },
    /// An op of one stream failed; the other streams and the worker live on.
    StreamError {
        stream: u32,
        seq: u64,
        message: String,
    },
    /// `CloseStream` done: nothing of the stream is left in the worker.
    StreamClosed {
        stream: u32,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("stream ended inside a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("undecodable frame: {0}")]
    Malformed(String),
    #[error("i/o error: {0}")]
    Io(String),
}

/// Serialises one message into a complete frame (header + payload).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let payload = serde_json::to_vec(msg).expect("protocol messages always serialise");
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes one frame from the front of `buf`: the message and the bytes it used.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<(T, usize), FrameError> {
    if buf.len() < 4 {
        return Err(FrameError::Truncated { got: buf.len(), want: 4 });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let body = buf.get(4..4 + len).ok_or(FrameError::Truncated { got: buf.len() - 4, want: len })?;
    let msg = serde_json::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok((msg, 4 + len))
}

pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    w.write_all(&encode(msg))?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; 4];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < 4 {
        return Err(FrameError::Truncated { got, want: 4 });
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(FrameError::Truncated { got, want: len });
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Reads until `buf` is full or the stream ends; returns how many bytes arrived.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e.to_string())),
        }
    }
    Ok(got)
}
