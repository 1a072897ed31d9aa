//! The session journal: one serialisable list of engine operations. It is the format of
//! `segment --session FILE`, what the console saves, what the supervisor replays after a
//! crash or a model/device switch, and what tests feed both the engine and the reference.
//! Each op has the meaning of one call of the reference video predictor (sam2 1.1.0).
use crate::limits::{check_object_id, MAX_OPS_PER_JOURNAL, MAX_POINTS_PER_PROMPT};
use crate::util::bad_input;
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

// Unknown fields are errors: a misspelt `"pointz"` would otherwise be a prompt without
// points, accepted in silence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
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
    /// Checks what serde cannot: an add_prompt needs points or a box (at most
    /// `MAX_POINTS_PER_PROMPT` points), labels are 0/1, a box is ordered, object ids are
    /// 1..=`MAX_OBJECT_ID`.
    pub fn validate(&self) -> Result<(), String> {
        if let Op::AddPrompt { object, .. } | Op::ClearFrame { object, .. } | Op::RemoveObject { object } = self {
            check_object_id(*object)?;
        }
        if let Op::AddPrompt { points, bbox, .. } = self {
            if points.is_empty() && bbox.is_none() {
                return Err("add_prompt needs points or a box".into());
            }
            if points.len() > MAX_POINTS_PER_PROMPT {
                return Err(format!(
                    "{} points in one prompt, more than the limit of {MAX_POINTS_PER_PROMPT}",
                    points.len()
                ));
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

    /// Checks an op against the video it will run on: frames in range, points and box
    /// corners inside the frame (`0 <= x <= width`, `0 <= y <= height`, input pixels, the
    /// edges included as the reference's normalisation allows). The reference takes any
    /// coordinate, but one far outside the frame only overflows its positional encoding
    /// into NaN (a point at [3e38, 3e38]); no click can put one there.
    pub fn check_against(&self, frames: usize, width: u32, height: u32) -> Result<(), String> {
        let frame = match self {
            Op::AddPrompt { frame, .. } | Op::ClearFrame { frame, .. } => Some(*frame),
            Op::Propagate { start, .. } => *start,
            _ => None,
        };
        if let Some(f) = frame.filter(|f| *f >= frames) {
            return Err(format!("frame {f} out of range (the video has {frames} frames)"));
        }
        if let Op::AddPrompt { object, points, bbox, .. } = self {
            let (w, h) = (width as f32, height as f32);
            let inside = |x: f32, y: f32| (0.0..=w).contains(&x) && (0.0..=h).contains(&y);
            if let Some(p) = points.iter().find(|p| !inside(p.x, p.y)) {
                return Err(format!("object {object}: point [{}, {}] is outside the {width}x{height} frame", p.x, p.y));
            }
            if let Some(b) = bbox.filter(|b| !inside(b[0], b[1]) || !inside(b[2], b[3])) {
                return Err(format!("object {object}: box {b:?} is outside the {width}x{height} frame"));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub version: u32,
    pub ops: Vec<Op>,
}

/// The short form of `segment --prompts FILE`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsFile {
    pub objects: Vec<PromptObject>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// What the ops cannot say: there is at least one object, and each id is given once
    /// (a second entry would silently replace the first's prompt; prompts on several
    /// frames are what `--session` is for).
    pub fn check(&self) -> Result<(), String> {
        if self.objects.is_empty() {
            return Err("no objects (give at least one object with points or a box)".into());
        }
        for (i, o) in self.objects.iter().enumerate() {
            if let Some(j) = self.objects[..i].iter().position(|e| e.id == o.id) {
                return Err(format!("object id {} given twice (objects[{j}] and objects[{i}])", o.id));
            }
        }
        Ok(())
    }

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
        if j.ops.len() > MAX_OPS_PER_JOURNAL {
            return Err(format!("{} ops, more than the limit of {MAX_OPS_PER_JOURNAL}", j.ops.len()));
        }
        for (i, op) in j.ops.iter().enumerate() {
            op.validate().map_err(|e| format!("op {i}: {e}"))?;
        }
        Ok(j)
    }

    /// Reads a session file; errors name the file and the problem on one line and are
    /// bad input (exit 2). Non-regular and oversized files are refused unread.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = crate::limits::read_input_text(path, "session")?;
        Self::from_json(&text).map_err(|e| bad_input(format!("{}: bad session: {e}", path.display())))
    }

    /// Reads a `--prompts` file into its journal form.
    pub fn load_prompts(path: &Path) -> anyhow::Result<Self> {
        let text = crate::limits::read_input_text(path, "prompts")?;
        Self::prompts_from_json(&text).map_err(|e| bad_input(format!("{}: bad prompts: {e}", path.display())))
    }

    pub fn prompts_from_json(text: &str) -> Result<Self, String> {
        let p: PromptsFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        p.check()?;
        let j = p.to_journal();
        for (i, op) in j.ops.iter().enumerate() {
            op.validate().map_err(|e| format!("objects[{i}]: {e}"))?;
        }
        Ok(j)
    }

    /// Every op checked against the video it will run on (`Op::check_against`); errors
    /// name `file` (where the ops came from) and the op, and are bad input (exit 2).
    pub fn check_for_video(&self, file: &Path, frames: usize, width: u32, height: u32) -> anyhow::Result<()> {
        for (i, op) in self.ops.iter().enumerate() {
            op.check_against(frames, width, height)
                .map_err(|e| bad_input(format!("{}: op {i}: {e}", file.display())))?;
        }
        Ok(())
    }

    /// Writes atomically (temp file in the same directory, then rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::util::atomic_write(path, serde_json::to_string_pretty(self)?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_field_in_a_prompts_file_or_a_journal_op_is_an_error() {
        let e = Journal::prompts_from_json(r#"{"objects":[{"id":1,"pointz":[[1,1,1]],"box":[0,0,5,5]}]}"#).unwrap_err();
        assert!(e.contains("pointz"), "{e}");
        let e = Journal::from_json(
            r#"{"version":1,"ops":[{"op":"add_prompt","frame":0,"object":1,"box":[0,0,5,5],"pointz":[]}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("pointz"), "{e}");
        let e = Journal::from_json(r#"{"version":1,"opz":[]}"#).unwrap_err();
        assert!(e.contains("opz"), "{e}");
        // The tag itself is not an unknown field.
        Journal::from_json(r#"{"version":1,"ops":[{"op":"reset"},{"op":"propagate","reverse":true}]}"#).unwrap();
    }

    #[test]
    fn an_empty_object_list_and_a_repeated_object_id_are_errors() {
        let e = Journal::prompts_from_json(r#"{"objects":[]}"#).unwrap_err();
        assert!(e.contains("no objects"), "{e}");
        let e = Journal::prompts_from_json(r#"{"objects":[{"id":3,"box":[0,0,5,5]},{"id":3,"points":[[1,1,1]]}]}"#)
            .unwrap_err();
        assert!(e.contains("object id 3 given twice"), "{e}");
    }

    #[test]
    fn more_points_than_the_limit_in_one_prompt_are_refused() {
        let pts: Vec<String> = (0..=MAX_POINTS_PER_PROMPT).map(|_| "[1,1,1]".to_string()).collect();
        let text = format!(r#"{{"objects":[{{"id":1,"points":[{}]}}]}}"#, pts.join(","));
        let e = Journal::prompts_from_json(&text).unwrap_err();
        assert!(e.contains("limit of 256"), "{e}");
    }

    #[test]
    fn points_and_boxes_outside_the_frame_are_refused_and_its_edges_are_not() {
        let op =
            |x: f32, y: f32| Op::AddPrompt { frame: 0, object: 1, points: vec![Point::new(x, y, true)], bbox: None };
        assert!(op(0.0, 0.0).check_against(1, 128, 64).is_ok());
        assert!(op(128.0, 64.0).check_against(1, 128, 64).is_ok());
        let e = op(3e38, 3e38).check_against(1, 128, 64).unwrap_err();
        assert!(e.contains("outside the 128x64 frame") && e.contains("object 1"), "{e}");
        assert!(op(-1.0, 5.0).check_against(1, 128, 64).is_err());
        let boxed = Op::AddPrompt { frame: 0, object: 2, points: vec![], bbox: Some([10.0, 10.0, 200.0, 20.0]) };
        assert!(boxed.check_against(1, 128, 64).unwrap_err().contains("box"));
        assert!(op(1.0, 1.0).check_against(0, 128, 64).unwrap_err().contains("out of range"));
    }
}
