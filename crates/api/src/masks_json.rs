//! `masks.json`, the one file format every output folder has: what `segment`, `batch` and
//! the console's export write, and what `preview`, `batch status` and users' scripts read.
//! One type for writing and reading, so the two can never drift apart.
use crate::rle::Rle;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MasksJson {
    pub video: VideoInfo,
    /// The model that made the masks ("SAM 2.1 tiny").
    pub model: String,
    /// Where and how it ran (absent in files written before this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineInfo>,
    /// Frames with at least one mask, in frame order.
    pub frames: Vec<FrameEntry>,
}

/// What masks.json says about the input video.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub fps: f32,
    /// The input path as given.
    pub source: String,
}

/// The engine that made the masks: the device and precision of the worker that finished
/// the run (after a fallback, the rung it fell back to), and how many workers died on the
/// way (their work was replayed; the masks are the same as without the crashes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub device: crate::device::DeviceChoice,
    pub precision: crate::device::Precision,
    pub worker_restarts: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameEntry {
    pub frame: usize,
    /// In object-id order.
    pub objects: Vec<ObjectEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub id: u32,
    /// JSON has no NaN or infinity: a non-finite score is `null` here and named in
    /// `score_nonfinite` ("NaN", "inf", "-inf"), so every reader still parses the file.
    pub score: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_nonfinite: Option<String>,
    pub rle: Rle,
}

impl ObjectEntry {
    pub fn new(id: u32, score: f32, rle: Rle) -> Self {
        let nonfinite = match score {
            s if s.is_finite() => None,
            s if s.is_nan() => Some("NaN"),
            s if s > 0.0 => Some("inf"),
            _ => Some("-inf"),
        };
        ObjectEntry {
            id,
            score: nonfinite.is_none().then_some(score),
            score_nonfinite: nonfinite.map(str::to_string),
            rle,
        }
    }

    /// The score as the engine reported it, non-finite values included.
    pub fn score(&self) -> f32 {
        match (self.score, self.score_nonfinite.as_deref()) {
            (Some(s), _) => s,
            (None, Some("inf")) => f32::INFINITY,
            (None, Some("-inf")) => f32::NEG_INFINITY,
            _ => f32::NAN,
        }
    }
}

impl MasksJson {
    /// Parses a masks.json; the error names the file. Not held to the input-JSON size
    /// limit: a long video's masks.json is ours and may well be larger.
    pub fn read(path: &std::path::Path) -> anyhow::Result<MasksJson> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {}", path.display(), crate::util::io_reason(&e)))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not a sam2-tui masks.json: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_score_is_null_in_the_file_and_comes_back_as_it_was() {
        let rle = Rle::encode(&[0, 1, 1, 0], 2, 2);
        for score in [0.5f32, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let text = serde_json::to_string(&ObjectEntry::new(3, score, rle.clone())).unwrap();
            assert!(!text.contains("NaN,") && !text.contains(":inf"), "{text}");
            let back: ObjectEntry = serde_json::from_str(&text).unwrap();
            assert_eq!(back.score().to_bits(), score.to_bits(), "{text}");
        }
    }
}
