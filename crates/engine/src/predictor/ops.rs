//! The journal's ops on a video session (no reference counterpart: the reference is called
//! directly, the official demo maps its requests to the same calls): which reference
//! method each op is, the undo log that makes a prompt op happen whole or not at all, and
//! the state a restarted worker picks up.
use super::video_predictor::{ObjectState, Prompt, VideoPredictor};
use super::FrameOutput;
use sam2_api::session::{ObjectId, Op};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

impl VideoPredictor {
    /// Rebuilds the state that an earlier worker left in the same bank directory (its
    /// objects, prompts and every output it finished), with no model compute.
    /// `ops` are the journal ops that worker completed; they must agree with the bank.
    pub fn restore(&mut self, ops: &[Op]) -> anyhow::Result<()> {
        // An op that ran to its end in the dead worker but that the supervisor never heard
        // of is sent again: take it back first, or it would run twice.
        if self.bank.logged_op()?.is_some_and(|op| op.seq >= ops.len() as u64) {
            self.bank.roll_back_op()?;
        }
        let saved: Vec<(ObjectId, BTreeMap<usize, Prompt>)> = self.bank.load_state()?;
        let prompted: usize = ops.iter().filter(|o| matches!(o, Op::AddPrompt { .. })).count();
        anyhow::ensure!(
            !(saved.is_empty() && prompted > 0 && !ops.iter().any(|o| matches!(o, Op::Reset))),
            "memory bank is empty but {prompted} prompt(s) were completed: cannot restore"
        );
        self.objects = saved.into_iter().map(|(id, prompts)| ObjectState { id, prompts }).collect();
        Ok(())
    }

    /// Runs op `seq` of the journal (its index) so that on disk it happens whole or not
    /// at all: a prompt edit that fails is taken back here, one cut short by a crash is
    /// taken back by the next worker (`MemoryBank::open`, `restore`). A propagation is
    /// not taken back: the supervisor resumes it after the last frame it delivered.
    pub fn apply_journaled(
        &mut self,
        seq: u64,
        op: &Op,
        on_frame: &mut dyn FnMut(FrameOutput) -> ControlFlow<()>,
    ) -> anyhow::Result<()> {
        let logged = !matches!(op, Op::Propagate { .. });
        if logged {
            self.bank.begin_op(seq)?;
        } else {
            self.bank.begin_unlogged_op()?;
        }
        match self.apply(op, on_frame) {
            Ok(()) => self.bank.commit_op(),
            Err(e) if logged => {
                if let Err(r) = self.bank.roll_back_op() {
                    return Err(e.context(format!("and taking it back failed: {r:#}")));
                }
                self.objects = self
                    .bank
                    .load_state::<Vec<(ObjectId, BTreeMap<usize, Prompt>)>>()?
                    .into_iter()
                    .map(|(id, prompts)| ObjectState { id, prompts })
                    .collect();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs one journal op. add_prompt / clear_frame emit that frame's masks (all objects);
    /// remove_object emits the refreshed frames; propagate emits every frame it tracks and
    /// stops early when `on_frame` returns `Break` (cancel).
    pub fn apply(&mut self, op: &Op, on_frame: &mut dyn FnMut(FrameOutput) -> ControlFlow<()>) -> anyhow::Result<()> {
        let _g = tch::no_grad_guard();
        let _a = self.autocast();
        op.validate().map_err(|e| anyhow::anyhow!(e))?;
        let result = match op {
            Op::AddPrompt { frame, object, points, bbox } => {
                let out = self.add_new_points_or_box(*frame, *object, points, *bbox)?;
                let _ = on_frame(out);
                Ok(())
            }
            Op::Propagate { start, reverse, max_frames } => {
                self.propagate_in_video(*start, *reverse, *max_frames, on_frame)
            }
            Op::ClearFrame { frame, object } => {
                self.check_frame(*frame)?;
                if let Some(idx) = self.obj_idx(*object) {
                    self.clear_all_prompts_in_frame(idx, *frame)?;
                    let out = self.consolidate_temp_output_across_obj(*frame, self.any_temp_cond(*frame))?;
                    let _ = on_frame(out);
                }
                Ok(())
            }
            Op::RemoveObject { object } => {
                for out in self.remove_object(*object)? {
                    let _ = on_frame(out);
                }
                Ok(())
            }
            Op::Reset => {
                self.reset_state()?;
                Ok(())
            }
        };
        self.save_state()?;
        result
    }

    /// Encodes `frame` ahead of time so a click there only runs the decoder.
    pub fn prefetch(&mut self, frame: usize) -> anyhow::Result<()> {
        let _g = tch::no_grad_guard();
        let _a = self.autocast();
        self.check_frame(frame)?;
        self.get_image_feature(frame).map(|_| ())
    }
}
