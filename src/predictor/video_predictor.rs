//! The video session (`sam2_video_predictor.py`, per-object predictor of sam2 1.1.0).
//! INTERFACE ONLY for now — the implementation lands with the video engine.
use crate::media::FrameSource;
use crate::model::Sam2Base;
use crate::session::{ObjectId, Op};
use crate::supervisor::events::StageTimings;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::rc::Rc;

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
    /// Where the memory bank lives on disk. Every finished (frame, object) output is
    /// written there as it is produced, so a new worker can pick up the state of a dead
    /// one (`restore`) instead of recomputing the video. None = a private temp dir.
    pub bank_dir: Option<PathBuf>,
}

pub struct VideoPredictor {
    _frames: Box<dyn FrameSource>,
    _model: Rc<Sam2Base>,
}

impl VideoPredictor {
    pub fn new(model: Rc<Sam2Base>, frames: Box<dyn FrameSource>, _opts: VideoOptions) -> anyhow::Result<Self> {
        Ok(VideoPredictor { _frames: frames, _model: model })
    }

    /// (width, height) of the video.
    pub fn video_size(&self) -> (u32, u32) {
        self._frames.size()
    }

    pub fn num_frames(&self) -> usize {
        self._frames.len()
    }

    /// Rebuilds the state that `ops` (already executed by an earlier worker on the same
    /// bank_dir) produced, from the bank on disk and the ops' prompts — no model compute.
    pub fn restore(&mut self, _ops: &[Op]) -> anyhow::Result<()> {
        anyhow::bail!("video predictor not implemented yet")
    }

    /// Runs one journal op. add_prompt / clear_frame emit that frame's masks (all objects);
    /// remove_object emits the refreshed frames; propagate emits every frame it tracks and
    /// stops early when `on_frame` returns `Break` (cancel).
    pub fn apply(&mut self, _op: &Op, _on_frame: &mut dyn FnMut(FrameOutput) -> ControlFlow<()>) -> anyhow::Result<()> {
        anyhow::bail!("video predictor not implemented yet")
    }

    /// Encodes `frame` ahead of time so a click there only runs the decoder.
    pub fn prefetch(&mut self, _frame: usize) -> anyhow::Result<()> {
        Ok(())
    }
}
