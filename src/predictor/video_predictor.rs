//! The video session (`sam2_video_predictor.py`, per-object predictor of sam2 1.1.0).
//! INTERFACE ONLY for now — the implementation lands with the video engine.
use crate::media::FrameSource;
use crate::session::{ObjectId, Op};
use crate::supervisor::events::StageTimings;
use std::ops::ControlFlow;

/// One object's result on one frame.
pub struct ObjectOutput {
    pub object: ObjectId,
    /// Logits at video resolution, `[H, W]` float32 on the CPU (threshold at 0).
    pub logits: tch::Tensor,
    /// Object score logit (> 0: present).
    pub score: f32,
}

pub struct FrameOutput {
    pub frame: usize,
    pub objects: Vec<ObjectOutput>,
    pub timings: StageTimings,
}

#[derive(Clone, Debug, Default)]
pub struct VideoOptions {
    /// Hole filling of the low-res masks (the reference's `fill_hole_area=8`).
    pub fill_holes: bool,
}

pub struct VideoPredictor {
    _frames: Box<dyn FrameSource>,
}

impl VideoPredictor {
    /// Runs one journal op. add_prompt / clear_frame emit that frame's masks (all objects);
    /// remove_object emits the refreshed frames; propagate emits every frame it tracks and
    /// stops early when `on_frame` returns `Break` (cancel).
    pub fn apply(&mut self, _op: &Op, _on_frame: &mut dyn FnMut(FrameOutput) -> ControlFlow<()>) -> anyhow::Result<()> {
        anyhow::bail!("video predictor not implemented yet")
    }
}
