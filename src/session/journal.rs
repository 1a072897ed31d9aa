//! The session journal: one serialisable list of engine operations. It is the format of
//! `segment --session FILE`, what the console saves, what the supervisor replays after a
//! crash or a model/device switch, and what tests feed both the engine and the reference.
//! Each op has the meaning of one call of the reference video predictor (sam2 1.1.0).
use serde::{Deserialize, Serialize};
use std::path::Path;

pub type ObjectId = u32;

/// A prompt point in input pixel coordinates; label 1 = positive, 0 = negative.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
    pub label: i32,
}

// Points travel as `[x, y, label]` triples, the compact form users write by hand.
impl Point {
    pub fn new(x: f32, y: f32, positive: bool) -> Self {
        Point { x, y, label: positive as i32 }
    }
}

mod point_triples {
    use super::Point;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(pts: &[Point], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(f32, f32, i32)> = pts.iter().map(|p| (p.x, p.y, p.label)).collect();
        v.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Point>, D::Error> {
        let v: Vec<(f32, f32, i32)> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|(x, y, label)| Point { x, y, label }).collect())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `add_new_points_or_box(frame, obj, points, labels, box, clear_old_points=True)`.
    AddPrompt {
        frame: usize,
        object: ObjectId,
        #[serde(default, with = "point_triples", skip_serializing_if = "Vec::is_empty")]
        points: Vec<Point>,
        #[serde(default, rename = "box", skip_serializing_if = "Option::is_none")]
        bbox: Option<[f32; 4]>,
    },
    /// `propagate_in_video(start_frame_idx, max_frame_num_to_track, reverse)`.
    Propagate {
        #[serde(default)]
        start: Option<usize>,
        #[serde(default)]
        reverse: bool,
        #[serde(default)]
        max_frames: Option<usize>,
    },
    /// `clear_all_prompts_in_frame(frame, obj)`.
    ClearFrame { frame: usize, object: ObjectId },
    /// `remove_object(obj)`.
    RemoveObject { object: ObjectId },
    /// `reset_state()`.
    Reset,
}

impl Op {
    /// Checks what serde cannot: an add_prompt needs points or a box, labels are 0/1,
    /// a box is ordered.
    pub fn validate(&self) -> Result<(), String> {
        if let Op::AddPrompt { points, bbox, .. } = self {
            if points.is_empty() && bbox.is_none() {
                return Err("add_prompt needs points or a box".into());
            }
            if let Some(p) = points.iter().find(|p| p.label != 0 && p.label != 1) {
                return Err(format!("point label must be 0 or 1, got {}", p.label));
            }
            if let Some(b) = bbox {
                if !(b[0] <= b[2] && b[1] <= b[3]) || b.iter().any(|v| !v.is_finite()) {
                    return Err(format!("box must be [x0, y0, x1, y1] with x0<=x1, y0<=y1, got {b:?}"));
                }
            }
            if points.iter().any(|p| !p.x.is_finite() || !p.y.is_finite()) {
                return Err("point coordinates must be finite".into());
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub ops: Vec<Op>,
}

/// The short form of `segment --prompts FILE`.
#[derive(Clone, Debug, Deserialize)]
pub struct PromptsFile {
    pub objects: Vec<PromptObject>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PromptObject {
    pub id: ObjectId,
    #[serde(default)]
    pub frame: usize,
    #[serde(default, with = "point_triples")]
    pub points: Vec<Point>,
    #[serde(default, rename = "box")]
    pub bbox: Option<[f32; 4]>,
}

impl PromptsFile {
    /// The add_prompt ops, then one forward propagation from the earliest prompted frame.
    pub fn to_journal(&self) -> Journal {
        let mut ops: Vec<Op> = self
            .objects
            .iter()
            .map(|o| Op::AddPrompt { frame: o.frame, object: o.id, points: o.points.clone(), bbox: o.bbox })
            .collect();
        ops.push(Op::Propagate { start: None, reverse: false, max_frames: None });
        Journal { version: 1, ops }
    }
}

impl Journal {
    pub const VERSION: u32 = 1;

    pub fn new() -> Self {
        Journal { version: Self::VERSION, ops: vec![] }
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let j: Journal = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if j.version != Self::VERSION {
            return Err(format!("unsupported journal version {} (expected {})", j.version, Self::VERSION));
        }
        for (i, op) in j.ops.iter().enumerate() {
            op.validate().map_err(|e| format!("op {i}: {e}"))?;
        }
        Ok(j)
    }

    /// Reads a session file; errors name the file and the problem on one line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read session: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| anyhow::anyhow!("{}: bad session: {e}", path.display()))
    }

    /// Reads a `--prompts` file into its journal form.
    pub fn load_prompts(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read prompts: {e}", path.display()))?;
        let p: PromptsFile =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: bad prompts: {e}", path.display()))?;
        let j = p.to_journal();
        for op in &j.ops {
            op.validate().map_err(|e| anyhow::anyhow!("{}: bad prompts: {e}", path.display()))?;
        }
        Ok(j)
    }

    /// Writes atomically (temp file in the same directory, then rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::util::atomic_write(path, serde_json::to_string_pretty(self)?.as_bytes())
    }
}
