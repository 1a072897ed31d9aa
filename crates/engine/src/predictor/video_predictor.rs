//! The video session (`sam2_video_predictor.py`, the per-object predictor of sam2 1.1.0):
//! per-object prompt and output dictionaries with the reference's meaning. Its methods
//! follow the reference's, in the reference's order and under its names (without the
//! leading underscore); each names the function it mirrors. Frames stream from the media
//! layer; only the frames being worked on are encoded, and the memory bank keeps what
//! SAM 2 can still attend to in RAM (the rest lives on disk, see `memory_bank`).
//!
//! What the reference does not have lives beside this file: the journal's ops and the
//! undo log around them (`ops`), the frame pipeline of a propagation (`pipeline`:
//! encode-ahead, frames queued ahead of the one written out) and the CUDA graphs
//! (`graphs`).
use super::graphs::Graphs;
use super::memory_bank::{write_files, CopiedPut, Entry, MemoryBank, Slot, Staged};
use super::pipeline::{self, Lookahead, Propagation, Tracked};
use crate::device::{AutocastGuard, PrecisionExt};
use crate::media::prefetch::Prefetcher;
use crate::media::FrameSource;
use crate::model::postprocess::fill_holes_many;
use crate::model::sam2_base::{
    AssembledMemory, FrameFeatures, PointInputs, PointerMemory, SpatialMemory, MAX_OBJ_PTRS, NO_OBJ_SCORE, NUM_MASKMEM,
};
use crate::model::Sam2Base;
use sam2_api::events::StageTimings;
use sam2_api::session::{ObjectId, Point};
use sam2_api::tuning::Tuning;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// One object's result on one frame.
pub struct ObjectOutput {
    pub object: ObjectId,
    /// Logits at video resolution, `[H, W]` float32 on the CPU (threshold at 0).
    pub logits: Tensor,
    /// Object score logit (> 0: present); NO_OBJ_SCORE when the object has no output here.
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
    /// The knobs the session reads: `pipeline_depth`, `encode_batch`, the prefetch
    /// threads, `cuda_graphs`, `sync_timings`, `trace`.
    pub tuning: Tuning,
}

/// The prompts of one object on one frame as the user gave them (video pixels) and as
/// the model takes them (model-input pixels, box corners first).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Prompt {
    pub points: Vec<Point>,
    pub bbox: Option<[f32; 4]>,
}

/// One object of the session: its id and its prompts by frame (the reference's
/// `obj_id_to_idx` entry and `point_inputs_per_obj[obj_idx]`).
pub(super) struct ObjectState {
    pub(super) id: ObjectId,
    pub(super) prompts: BTreeMap<usize, Prompt>,
}

pub struct VideoPredictor {
    pub(super) model: Rc<Sam2Base>,
    pub(super) frames: Prefetcher,
    size: (u32, u32),
    num_frames: usize,
    pub(super) opts: VideoOptions,
    pub(super) objects: Vec<ObjectState>,
    /// `output_dict_per_obj`, `temp_output_dict_per_obj` and `frames_tracked_per_obj`.
    pub(super) bank: MemoryBank,
    /// The most recently encoded frames (the reference keeps one; a prefetched frame
    /// under the cursor is the second).
    pub(super) features: Vec<(usize, Rc<FrameFeatures>)>,
    pub(super) graphs: Graphs,
    /// The frames a propagation will ask for next (see `pipeline`).
    lookahead: Lookahead,
    /// Frames queued before the oldest is written out (see `pipeline::pipeline_depth`).
    pub(super) pipeline_depth: usize,
    pub(super) timings: StageTimings,
}

/// Which dictionary of the reference an output lives in.
fn slot(is_cond: bool, temp: bool) -> Slot {
    match (is_cond, temp) {
        (true, false) => Slot::Cond,
        (false, false) => Slot::NonCond,
        (true, true) => Slot::TempCond,
        (false, true) => Slot::TempNonCond,
    }
}

impl VideoPredictor {
    /// `init_state`: a session over `frames` (streamed, not loaded up front).
    pub fn new(model: Rc<Sam2Base>, mut frames: Box<dyn FrameSource>, opts: VideoOptions) -> anyhow::Result<Self> {
        let size = frames.size();
        let num_frames = frames.len();
        anyhow::ensure!(num_frames > 0, "the video has no frames");
        let t = &opts.tuning;
        if t.decord_video {
            // Video files' frames scaled to the model's input as decord does for the
            // reference's video predictor (the `decord_video` knob).
            frames.scale_for_model(model.image_size() as u32);
        }
        let frames = Prefetcher::with_threads(
            frames,
            model.image_size() as u32,
            model.device,
            t.prefetch_threads,
            t.resize_threads,
        );
        let bank = MemoryBank::open(opts.bank_dir.clone(), model.device)?;
        let graphs = Graphs::new(&model, t.cuda_graphs);
        let lookahead = Lookahead::new(pipeline::encode_batch(&model, t.encode_batch));
        let pipeline_depth = pipeline::pipeline_depth(&model, t.pipeline_depth);
        Ok(VideoPredictor {
            model,
            frames,
            size,
            num_frames,
            opts,
            objects: vec![],
            bank,
            features: vec![],
            graphs,
            lookahead,
            pipeline_depth,
            timings: StageTimings::default(),
        })
    }

    /// (width, height) of the video.
    pub fn video_size(&self) -> (u32, u32) {
        self.size
    }

    pub fn num_frames(&self) -> usize {
        self.num_frames
    }

    pub fn model(&self) -> &Sam2Base {
        &self.model
    }

    /// The predictor's CUDA graphs, the rest dropped (`warm_up`).
    pub(super) fn into_graphs(self) -> Graphs {
        self.graphs
    }

    /// `_obj_id_to_idx` for an object that exists (None otherwise; `add_new_points_or_box`
    /// adds new ones).
    pub(super) fn obj_idx(&self, id: ObjectId) -> Option<usize> {
        self.objects.iter().position(|o| o.id == id)
    }

    /// `inference_state["obj_ids"]`: the object ids in the reference's order (order of
    /// first prompt; `_obj_idx_to_id`, `_get_obj_num`).
    pub fn object_ids(&self) -> Vec<ObjectId> {
        self.objects.iter().map(|o| o.id).collect()
    }

    /// `add_new_points_or_box` with `clear_old_points=True`, `normalize_coords=True`.
    pub(super) fn add_new_points_or_box(
        &mut self,
        frame: usize,
        id: ObjectId,
        points: &[Point],
        bbox: Option<[f32; 4]>,
    ) -> anyhow::Result<FrameOutput> {
        self.check_frame(frame)?;
        self.timings = StageTimings::default();
        let t0 = Instant::now();
        let idx = match self.obj_idx(id) {
            Some(i) => i,
            None => {
                self.objects.push(ObjectState { id, prompts: BTreeMap::new() });
                self.objects.len() - 1
            }
        };
        let prompt = Prompt { points: points.to_vec(), bbox };
        // clear_old_points=True: the new prompt replaces this frame's earlier one.
        self.objects[idx].prompts.insert(frame, prompt.clone());
        let tracked = self.bank.tracked(id, frame);
        let is_init_cond = tracked.is_none();
        let reverse = tracked.unwrap_or(false);
        let storage = slot(is_init_cond, false);
        let temp = slot(is_init_cond, true);
        // A click on a frame that already has a mask feeds that mask back as the prompt.
        let prev = [temp, Slot::Cond, Slot::NonCond]
            .iter()
            .find_map(|s| self.bank.get(id, *s, frame))
            .map(|e| e.pred_masks.to_device(self.model.device).clamp(-32.0, 32.0));
        let inputs = self.point_inputs(&prompt);
        let entry =
            self.run_single_frame_inference(idx, frame, is_init_cond, Some(&inputs), reverse, false, prev.as_ref())?;
        let entry = postprocess(entry, self.opts.fill_holes);
        let _ = storage;
        self.bank.put(id, temp, frame, entry, None)?;
        let mut out = self.consolidate_temp_output_across_obj(frame, is_init_cond)?;
        self.timings.total_ms = ms(t0);
        out.timings = self.timings;
        Ok(out)
    }

    /// `add_new_points_or_box`'s prompt tensors: video pixels → model-input pixels, box
    /// corners (labels 2, 3) first.
    fn point_inputs(&self, prompt: &Prompt) -> PointInputs {
        let mut xy: Vec<f32> = Vec::new();
        let mut labels: Vec<i32> = Vec::new();
        if let Some(b) = prompt.bbox {
            xy.extend_from_slice(&b);
            labels.extend_from_slice(&[2, 3]);
        }
        for p in &prompt.points {
            xy.extend_from_slice(&[p.x, p.y]);
            labels.push(p.label);
        }
        let n = labels.len() as i64;
        let (w, h) = self.size;
        // As the reference: / [W, H] in fp32, then × image_size.
        let scale = Tensor::from_slice(&[w as i64, h as i64]);
        let coords = (Tensor::from_slice(&xy).reshape([1, n, 2]) / scale) * self.model.image_size();
        PointInputs { coords: coords.to_kind(Kind::Float), labels: Tensor::from_slice(&labels).reshape([1, n]) }
    }

    // `add_new_mask`: not offered (the journal has no mask prompt).

    /// `_get_orig_video_res_output`: low-res logits to the video's resolution.
    /// `[B, 1, e, e]` → `[B, H, W]` (one object: `[H, W]`).
    fn to_video_res(&self, low: &Tensor) -> Tensor {
        let (w, h) = self.size;
        let b = low.size()[0];
        let out = low
            .to_kind(Kind::Float)
            .upsample_bilinear2d([h as i64, w as i64], false, None, None)
            .to_device(Device::Cpu);
        if b == 1 {
            out.reshape([h as i64, w as i64])
        } else {
            out.reshape([b, h as i64, w as i64])
        }
    }

    /// `to_video_res` of every object's low-res logits, in one call where they are all on
    /// one device (the same numbers: each plane is interpolated on its own either way; one
    /// call spreads the planes over the intra-op threads instead of one small call per
    /// object).
    fn all_to_video_res(&self, lows: &[Tensor]) -> Vec<Tensor> {
        let device = lows.first().map(|l| l.device());
        if lows.len() < 2 || lows.iter().any(|l| Some(l.device()) != device) {
            return lows.iter().map(|l| self.to_video_res(l)).collect();
        }
        let all = self.to_video_res(&Tensor::cat(&lows.iter().map(|l| l.to_kind(Kind::Float)).collect::<Vec<_>>(), 0));
        (0..lows.len() as i64).map(|i| all.select(0, i)).collect()
    }

    /// `_consolidate_temp_output_across_obj` at video resolution: the masks of every object
    /// on `frame`, each from (in order) its temp output of the given kind, its conditioning
    /// output, its tracking output; −1024 where it has none.
    pub(super) fn consolidate_temp_output_across_obj(
        &mut self,
        frame: usize,
        is_cond: bool,
    ) -> anyhow::Result<FrameOutput> {
        let gathered = self.frame_masks(frame, is_cond);
        Ok(self.at_video_res(frame, gathered))
    }

    /// The first half of `consolidate_temp_output_across_obj`: each object's low-res
    /// masks and score on `frame`, as the bank holds them now.
    fn frame_masks(&self, frame: usize, is_cond: bool) -> FrameMasks {
        let temp = slot(is_cond, true);
        let ids = self.object_ids();
        let e = self.model.image_size() / 4;
        let mut lows = Vec::with_capacity(ids.len());
        let mut scores = Vec::with_capacity(ids.len());
        for &id in &ids {
            let entry = [temp, Slot::Cond, Slot::NonCond].iter().find_map(|s| self.bank.get(id, *s, frame));
            let (low, score) = match entry {
                Some(en) => (en.pred_masks.shallow_clone(), en.score.to_kind(Kind::Float).double_value(&[0, 0]) as f32),
                None => (Tensor::full([1, 1, e, e], NO_OBJ_SCORE, (Kind::Float, Device::Cpu)), NO_OBJ_SCORE as f32),
            };
            lows.push(low);
            scores.push(score);
        }
        FrameMasks { ids, lows, scores }
    }

    /// The second half: the masks brought to the video's size (reads nothing of the bank).
    fn at_video_res(&self, frame: usize, masks: FrameMasks) -> FrameOutput {
        let FrameMasks { ids, lows, scores } = masks;
        let objects = ids
            .into_iter()
            .zip(self.all_to_video_res(&lows))
            .zip(scores)
            .map(|((object, logits), score)| ObjectOutput { object, logits, score })
            .collect();
        FrameOutput { frame, objects, timings: self.timings }
    }

    /// `propagate_in_video_preflight`: memories for the prompted frames, temp outputs
    /// committed.
    fn propagate_in_video_preflight(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.objects.is_empty(), "no prompts yet: add points or a box first");
        let ids = self.object_ids();
        for (idx, &id) in ids.iter().enumerate() {
            for is_cond in [false, true] {
                let temp = slot(is_cond, true);
                for frame in self.bank.frames(id, temp) {
                    // Committed first, temp removed after: a worker killed in between
                    // leaves both (harmless), never neither (a lost prompt).
                    let entry = self.bank.get(id, temp, frame).unwrap().shallow();
                    let entry = if entry.maskmem.is_none() {
                        let m = self.run_memory_encoder(frame, &entry)?;
                        Entry { maskmem: Some(m), ..entry }
                    } else {
                        entry
                    };
                    let tracked = self.bank.tracked(id, frame);
                    self.bank.put(id, slot(is_cond, false), frame, entry, tracked)?;
                    self.bank.take(id, temp, frame)?;
                }
            }
            anyhow::ensure!(
                !self.bank.cond_frames(id).is_empty(),
                "no prompts for object id {id}: add points or a box first"
            );
            for frame in self.bank.cond_frames(id) {
                self.bank.take(id, Slot::NonCond, frame)?;
            }
            let _ = idx;
        }
        Ok(())
    }

    /// `propagate_in_video`: every frame of the pass in order, each object tracked on it
    /// (`track_frame`) and the frame handed to `on_frame` (`write_out`, the reference's
    /// `yield`); `pipeline::run` overlaps the two.
    pub(super) fn propagate_in_video(
        &mut self,
        start: Option<usize>,
        reverse: bool,
        max_frames: Option<usize>,
        on_frame: &mut dyn FnMut(FrameOutput) -> ControlFlow<()>,
    ) -> anyhow::Result<()> {
        let (ids, order) = self.plan_propagation(start, reverse, max_frames)?;
        self.lookahead.plan(&order);
        let _trace = crate::trace::propagation(
            self.model.device,
            self.opts.tuning.trace.as_deref(),
            self.opts.tuning.trace_pass,
        );
        let depth = self.pipeline_depth;
        let result = pipeline::run(self, &ids, &order, reverse, depth, on_frame);
        self.lookahead.clear();
        result
    }

    /// The start of `propagate_in_video` up to its loop: the preflight, then the objects
    /// and the frames of the pass in order (the decode pipeline told to run ahead).
    pub(super) fn plan_propagation(
        &mut self,
        start: Option<usize>,
        reverse: bool,
        max_frames: Option<usize>,
    ) -> anyhow::Result<(Vec<ObjectId>, Vec<usize>)> {
        self.propagate_in_video_preflight()?;
        self.save_state()?;
        let ids = self.object_ids();
        let start = match start {
            Some(s) => {
                self.check_frame(s)?;
                s
            }
            None => ids.iter().flat_map(|&id| self.bank.cond_frames(id)).min().unwrap(),
        };
        let max = max_frames.unwrap_or(self.num_frames);
        let order: Vec<usize> = if reverse {
            let end = start.saturating_sub(max);
            if start > 0 {
                (end..=start).rev().collect()
            } else {
                vec![]
            }
        } else {
            let end = (start + max).min(self.num_frames - 1);
            (start..=end).collect()
        };
        // One plan for the whole pass: the decode pipeline runs ahead of the model.
        self.frames.hint(order.iter().copied());
        Ok((ids, order))
    }

    /// `clear_all_prompts_in_frame` without output.
    pub(super) fn clear_all_prompts_in_frame(&mut self, idx: usize, frame: usize) -> anyhow::Result<()> {
        let id = self.objects[idx].id;
        self.objects[idx].prompts.remove(&frame);
        self.bank.take(id, Slot::TempCond, frame)?;
        self.bank.take(id, Slot::TempNonCond, frame)?;
        // A conditioning output becomes an ordinary tracking output, no longer "tracked".
        if let Some(e) = self.bank.get(id, Slot::Cond, frame) {
            self.bank.put(id, Slot::NonCond, frame, e.shallow(), None)?;
            self.bank.take(id, Slot::Cond, frame)?;
        }
        Ok(())
    }

    /// `reset_state`.
    pub(super) fn reset_state(&mut self) -> anyhow::Result<()> {
        self.objects.clear();
        self.bank.clear()
    }

    /// `_get_image_feature`: from the most recently encoded frames, else encoded here.
    pub(super) fn get_image_feature(&mut self, frame: usize) -> anyhow::Result<Rc<FrameFeatures>> {
        if let Some((_, f)) = self.features.iter().find(|(i, _)| *i == frame) {
            return Ok(f.clone());
        }
        // During propagation, the frames coming next are encoded together (see `pipeline`).
        let batch = self.lookahead.batch_for(frame, |f| self.features.iter().any(|(i, _)| *i == f));
        let t = Instant::now();
        let mut pixels = Vec::with_capacity(batch.len());
        for &f in &batch {
            pixels.push(self.frames.get(f)?.pixels);
        }
        self.timings.decode_ms += ms(t);
        let t = Instant::now();
        let feats = self.graphs.encode(&self.model, &pixels);
        self.sync();
        self.timings.image_encoder_ms += ms(t);
        for (f, x) in batch.into_iter().zip(feats).rev() {
            self.features.insert(0, (f, Rc::new(x)));
        }
        self.features.truncate(self.lookahead.keep());
        Ok(self.features.iter().find(|(i, _)| *i == frame).expect("just encoded").1.clone())
    }

    /// `_run_single_frame_inference` + `track_step` for one object.
    #[allow(clippy::too_many_arguments)]
    fn run_single_frame_inference(
        &mut self,
        idx: usize,
        frame: usize,
        is_init_cond: bool,
        points: Option<&PointInputs>,
        reverse: bool,
        run_mem_encoder: bool,
        prev_logits: Option<&Tensor>,
    ) -> anyhow::Result<Entry> {
        let feats = self.get_image_feature(frame)?;
        let id = self.objects[idx].id;
        let t = Instant::now();
        let pix = if is_init_cond {
            self.model.condition_on_memory(&feats, None)
        } else {
            let memory = self.prepare_memory_conditioned_features(id, frame, reverse)?;
            if points.is_none() && prev_logits.is_none() && run_mem_encoder && self.graphs.track_enabled() {
                return Ok(self.track_step_graphed(&feats, &memory));
            }
            self.model.attend_memory(&feats, &memory.tokens, &memory.pos, memory.num_ptr_tokens)
        };
        self.sync();
        self.timings.memory_attention_ms += ms(t);
        let t = Instant::now();
        let num_pts = points.map_or(0, |p| p.labels.size()[1]);
        // `_use_multimask`: tracking frames and single clicks get three candidates.
        let multimask = num_pts <= 1;
        let sam = self.model.forward_sam_heads(&pix, points, prev_logits, &feats.high_res, multimask);
        self.sync();
        self.timings.mask_decoder_ms += ms(t);
        let maskmem = if run_mem_encoder {
            let t = Instant::now();
            let m =
                self.model.encode_new_memory(&feats, &sam.high_res_masks, &sam.object_score_logits, points.is_some());
            self.sync();
            self.timings.memory_encoder_ms += ms(t);
            Some(m)
        } else {
            None
        };
        Ok(Entry { maskmem, pred_masks: sam.low_res_masks, obj_ptr: sam.obj_ptr, score: sam.object_score_logits })
    }

    /// `track_step` of a propagation frame through the CUDA graphs (see `graphs`). Stage
    /// times are not separable inside a graph; the whole step is counted as memory
    /// attention.
    fn track_step_graphed(&mut self, feats: &FrameFeatures, memory: &AssembledMemory) -> Entry {
        let t = Instant::now();
        let [pred_masks, obj_ptr, score, maskmem] = self.graphs.track_step(&self.model, feats, memory);
        self.sync();
        self.timings.memory_attention_ms += ms(t);
        Entry { maskmem: Some(maskmem), pred_masks, obj_ptr, score }
    }

    /// `_run_memory_encoder` for a prompted frame's output (`pred_masks` upsampled to the
    /// model input, as `propagate_in_video_preflight` passes them).
    fn run_memory_encoder(&mut self, frame: usize, entry: &Entry) -> anyhow::Result<Tensor> {
        let feats = self.get_image_feature(frame)?;
        let s = self.model.image_size();
        let high = entry.pred_masks.to_device(self.model.device).upsample_bilinear2d([s, s], false, None, None);
        let t = Instant::now();
        let m = self.model.encode_new_memory(&feats, &high, &entry.score, true);
        self.timings.memory_encoder_ms += ms(t);
        Ok(m)
    }

    /// `remove_object` (`strict=False`, `need_output=True`): the refreshed frames.
    pub(super) fn remove_object(&mut self, id: ObjectId) -> anyhow::Result<Vec<FrameOutput>> {
        let Some(idx) = self.obj_idx(id) else { return Ok(vec![]) };
        if self.objects.len() == 1 {
            self.reset_state()?;
            return Ok(vec![]);
        }
        let frames: Vec<usize> = self.objects[idx].prompts.keys().copied().collect();
        for &f in &frames {
            self.clear_all_prompts_in_frame(idx, f)?;
        }
        self.objects.remove(idx);
        self.bank.remove_object(id)?;
        frames.into_iter().map(|f| self.consolidate_temp_output_across_obj(f, self.any_temp_cond(f))).collect()
    }

    // What the reference's frame inference calls in `sam2_base.py` and `utils/misc.py`,
    // where it needs the session's dictionaries.

    /// `SAM2Base._prepare_memory_conditioned_features`: chooses the memories of a
    /// non-initial frame exactly as it does, as memory tokens.
    pub(super) fn prepare_memory_conditioned_features(
        &mut self,
        id: ObjectId,
        frame: usize,
        reverse: bool,
    ) -> anyhow::Result<AssembledMemory> {
        Ok(self.choose_memories(id, frame, reverse)?.assemble(&self.model))
    }

    /// The memories `prepare_memory_conditioned_features` assembles for `id` on `frame`:
    /// its conditioning frames' and the last frames' spatial memories with their temporal
    /// slots, and the object pointers with their frame distances.
    pub(super) fn choose_memories(&self, id: ObjectId, frame: usize, reverse: bool) -> anyhow::Result<ChosenMemories> {
        let cond = self.bank.cond_frames(id);
        anyhow::ensure!(!cond.is_empty(), "object {id} has no conditioning frame");
        let mut spatial_entries: Vec<(usize, Rc<Entry>)> = Vec::new();
        for &t in &cond {
            spatial_entries.push((NUM_MASKMEM - 1, self.bank.get(id, Slot::Cond, t).unwrap()));
        }
        for t_pos in 1..NUM_MASKMEM {
            let t_rel = NUM_MASKMEM - t_pos;
            let prev = if reverse { frame as i64 + t_rel as i64 } else { frame as i64 - t_rel as i64 };
            if prev < 0 {
                continue;
            }
            if let Some(e) = self.bank.get(id, Slot::NonCond, prev as usize) {
                spatial_entries.push((NUM_MASKMEM - t_pos - 1, e));
            }
        }
        let v21 = self.model.config.is_v2_1();
        let max_ptrs = self.num_frames.min(MAX_OBJ_PTRS);
        let mut ptr_entries: Vec<(i64, Rc<Entry>)> = Vec::new();
        for &t in &cond {
            let in_past = if reverse { t >= frame } else { t <= frame };
            if in_past {
                let d = frame as i64 - t as i64;
                let pos = if v21 { d * if reverse { -1 } else { 1 } } else { d.abs() };
                ptr_entries.push((pos, self.bank.get(id, Slot::Cond, t).unwrap()));
            }
        }
        for t_diff in 1..max_ptrs {
            let t = if reverse { frame as i64 + t_diff as i64 } else { frame as i64 - t_diff as i64 };
            if t < 0 || t >= self.num_frames as i64 {
                break;
            }
            if let Some(e) = self.bank.get(id, Slot::NonCond, t as usize) {
                ptr_entries.push((t_diff as i64, e));
            }
        }
        spatial_entries.retain(|(_, e)| e.maskmem.is_some());
        Ok(ChosenMemories { spatial: spatial_entries, ptrs: ptr_entries, num_frames: self.num_frames })
    }

    // Helpers of this session.

    pub(super) fn check_frame(&self, frame: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            frame < self.num_frames,
            "frame {frame} out of range (the video has {} frames)",
            self.num_frames
        );
        Ok(())
    }

    /// Whether any object has a temp conditioning output on `frame` (the reference's
    /// `is_cond` after a clear).
    pub(super) fn any_temp_cond(&self, frame: usize) -> bool {
        self.objects.iter().any(|o| self.bank.contains(o.id, Slot::TempCond, frame))
    }

    /// The precision mode's autocast (CUDA fast modes) for the duration of an op.
    pub(super) fn autocast(&self) -> AutocastGuard {
        AutocastGuard::new(self.model.precision.autocast(self.model.device))
    }

    /// The objects and their prompts, beside the bank's outputs (what `restore` reads).
    pub(super) fn save_state(&mut self) -> anyhow::Result<()> {
        let state: Vec<(ObjectId, BTreeMap<usize, Prompt>)> =
            self.objects.iter().map(|o| (o.id, o.prompts.clone())).collect();
        self.bank.save_state(&state)
    }

    /// Per-stage timings on a GPU need a synchronisation after each stage, which stops
    /// the CPU from queueing the next kernels while the GPU works. Only when asked (the
    /// `sync_timings` knob); otherwise GPU stage times are enqueue times and only the
    /// per-frame total is exact.
    pub(super) fn sync(&self) {
        if let Device::Cuda(i) = self.model.device {
            if self.opts.tuning.sync_timings {
                tch::Cuda::synchronize(i as i64);
            }
        }
    }
}

/// A propagation frame by frame, as `pipeline::run` drives it.
impl Propagation for VideoPredictor {
    type Output = FrameOutput;

    /// The body of `propagate_in_video`'s loop: each object's output on `frame`, from
    /// `_run_single_frame_inference` unless the frame is one of its conditioning frames.
    /// The new tracking outputs are staged in the bank's RAM (the next frame attends to
    /// them) and written through by `write_out`.
    fn track_frame(&mut self, ids: &[ObjectId], frame: usize, reverse: bool) -> anyhow::Result<Tracked> {
        self.timings = StageTimings::default();
        let mut tracked = Tracked::new(frame, reverse);
        if self.batches_objects(ids.len()) {
            // All objects at once (`batched`), with the same outputs as the loop below.
            let (prompted, to_track): (Vec<ObjectId>, Vec<ObjectId>) =
                ids.iter().partition(|&&id| self.bank.contains(id, Slot::Cond, frame));
            tracked.prompted = prompted;
            let entries = self.track_objects_batched(&to_track, frame, reverse)?;
            for (&id, entry) in to_track.iter().zip(entries) {
                tracked.staged.push(self.bank.stage(id, Slot::NonCond, frame, entry, Some(reverse)));
            }
            self.bank.advance(frame, reverse);
            tracked.copy_to_host(&self.bank, self.model.device);
            tracked.timings = self.timings;
            return Ok(tracked);
        }
        for (idx, &id) in ids.iter().enumerate() {
            if self.bank.contains(id, Slot::Cond, frame) {
                tracked.prompted.push(id);
                continue;
            }
            match self.run_single_frame_inference(idx, frame, false, None, reverse, true, None) {
                Ok(entry) => tracked.staged.push(self.bank.stage(id, Slot::NonCond, frame, entry, Some(reverse))),
                Err(e) => {
                    tracked.staged.into_iter().for_each(|s| self.bank.unstage(s));
                    return Err(e);
                }
            }
        }
        self.bank.advance(frame, reverse);
        tracked.copy_to_host(&self.bank, self.model.device);
        tracked.timings = self.timings;
        Ok(tracked)
    }

    fn queued(&mut self) {
        self.lookahead.advance();
    }

    /// The end of `propagate_in_video`'s loop body: hole filling, the outputs written
    /// through to the bank, the frame yielded. The masks and score stay on the host from
    /// here on (outputs, corrections read them there); memory features and pointers stay
    /// on the device for attention.
    fn write_out(
        &mut self,
        t: Tracked,
        last_out: &mut Instant,
        on_frame: &mut dyn FnMut(FrameOutput) -> ControlFlow<()>,
    ) -> anyhow::Result<ControlFlow<()>> {
        t.wait_for_host_copies();
        let started = Instant::now();
        // The libtorch work of every object runs on this thread. Spread over threads of
        // their own (one per object, started every frame) the host's share was 72 ms a
        // frame at 16 objects on a 16-core H100 host, and the frame 82 ms against 36 ms
        // before: each fresh thread's first libtorch op big enough to go parallel starts
        // an OpenMP team of its own, so sixteen teams spin on sixteen cores. Only plain
        // Rust (the hole labelling, the bank's file writes) goes to `host_threads`.
        let mut puts = Vec::with_capacity(t.host.len());
        let mut timings = t.timings;
        for (s, host) in t.staged.iter().zip(postprocess_many(t.host, self.opts.fill_holes)) {
            let on_device = self.bank.get(s.id, s.slot, s.frame).expect("staged entry");
            let entry = Entry {
                maskmem: on_device.maskmem.as_ref().map(|m| m.shallow_clone()),
                pred_masks: host.pred_masks.shallow_clone(),
                obj_ptr: on_device.obj_ptr.shallow_clone(),
                score: host.score.shallow_clone(),
            };
            puts.push(CopiedPut {
                id: s.id,
                slot: s.slot,
                frame: s.frame,
                entry,
                on_disk: host,
                tracked: Some(t.reverse),
            });
        }
        timings.fill_holes_ms = ms(started);
        let step = Instant::now();
        for &id in &t.prompted {
            self.bank.mark_tracked(id, t.frame, t.reverse)?;
        }
        // The bank's files are written (plain file I/O on threads of their own) while this
        // thread brings the frame's masks to the video's size: at 16 objects on an H100
        // host the two took 5.7–11.6 and 3.3–3.5 ms of a 22–26 ms frame one after the other,
        // and the host's share bounded the frame. The frame is handed on only once its
        // files are written, as before.
        let pending = self.bank.keep_copied_many(puts)?;
        let masks = self.frame_masks(t.frame, false);
        let (written, mut out, to_video_ms) = std::thread::scope(|s| {
            let parts = pending.parts();
            let writer = s.spawn(move || write_files(&parts));
            let resized = Instant::now();
            let out = self.at_video_res(t.frame, masks);
            let to_video_ms = ms(resized);
            (writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), out, to_video_ms)
        });
        self.bank.settle_copied_many(pending, written)?;
        // The write's share is the time it added: the whole step less what overlapped it.
        timings.bank_write_ms = (ms(step) - to_video_ms).max(0.0);
        timings.to_video_ms = to_video_ms;
        out.timings = timings;
        out.timings.write_out_ms = ms(started);
        // Steady-state cost of a frame: the time between consecutive outputs.
        out.timings.total_ms = ms(*last_out);
        *last_out = Instant::now();
        Ok(on_frame(out))
    }

    fn unstage(&mut self, s: Staged) {
        self.bank.unstage(s);
    }
}

/// Hole filling of the output masks (`fill_holes_in_mask_scores`; the `fill_holes`
/// option). It runs on the host, so propagation applies it when the frame is written out,
/// not while the next frame's kernels could be queued; nothing downstream of the model
/// reads the unfilled masks (the memory encoder takes the high-res masks before this).
fn postprocess(entry: Entry, fill: bool) -> Entry {
    postprocess_many(vec![entry], fill).pop().expect("one entry in, one out")
}

/// `postprocess` for the objects of one frame, their masks filled side by side.
fn postprocess_many(entries: Vec<Entry>, fill: bool) -> Vec<Entry> {
    if !fill {
        return entries;
    }
    let masks: Vec<Tensor> = entries.iter().map(|e| e.pred_masks.shallow_clone()).collect();
    entries
        .into_iter()
        .zip(fill_holes_many(&masks, 8))
        .map(|(entry, pred_masks)| Entry { pred_masks, ..entry })
        .collect()
}

fn ms(t: Instant) -> f32 {
    t.elapsed().as_secs_f32() * 1000.0
}

/// Every object's low-res masks and score on a frame, before they are brought to the
/// video's size (`consolidate_temp_output_across_obj` in two halves).
struct FrameMasks {
    ids: Vec<ObjectId>,
    lows: Vec<Tensor>,
    scores: Vec<f32>,
}

/// One object's memories for a frame, chosen from the bank (see `choose_memories`):
/// spatial memories (each with its temporal slot, all with features) and object pointers
/// (each with its frame distance), and its video's frame count.
#[derive(Clone)]
pub(super) struct ChosenMemories {
    spatial: Vec<(usize, Rc<Entry>)>,
    ptrs: Vec<(i64, Rc<Entry>)>,
    num_frames: usize,
}

impl ChosenMemories {
    /// Their layout: (spatial memories, pointers), what objects assembled together share.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.spatial.len(), self.ptrs.len())
    }

    /// Them as the model's memory views.
    pub(super) fn views(&self) -> (Vec<SpatialMemory<'_>>, Vec<PointerMemory<'_>>) {
        let spatial = self
            .spatial
            .iter()
            .filter_map(|(i, e)| e.maskmem.as_ref().map(|m| SpatialMemory { features: m, tpos_index: *i }))
            .collect();
        let ptrs = self.ptrs.iter().map(|(pos, e)| PointerMemory { ptr: &e.obj_ptr, pos: *pos }).collect();
        (spatial, ptrs)
    }

    /// The memory tokens of one object (`Sam2Base::assemble_memory`).
    pub(super) fn assemble(&self, model: &Sam2Base) -> AssembledMemory {
        let (spatial, ptrs) = self.views();
        model.assemble_memory(&spatial, &ptrs, self.num_frames)
    }

    /// The indices of `all` in groups that can be assembled together (as many memories and
    /// pointers each, so equal memory lengths and pointer-token counts), in order of
    /// appearance, at most `cap` a group.
    pub(super) fn group_by_counts<'a>(
        all: impl IntoIterator<Item = &'a ChosenMemories>,
        cap: usize,
    ) -> Vec<Vec<usize>> {
        let mut groups: Vec<((usize, usize), Vec<usize>)> = vec![];
        for (i, c) in all.into_iter().enumerate() {
            match groups.iter_mut().find(|(k, members)| *k == c.counts() && members.len() < cap) {
                Some((_, members)) => members.push(i),
                None => groups.push((c.counts(), vec![i])),
            }
        }
        groups.into_iter().map(|(_, members)| members).collect()
    }

    /// Several objects' memories assembled side by side (`Sam2Base::assemble_memories`);
    /// every one of `all` has the same `counts`.
    pub(super) fn assemble_group(model: &Sam2Base, all: &[&ChosenMemories]) -> AssembledMemory {
        let views: Vec<_> = all.iter().map(|c| (c.views(), c.num_frames)).collect();
        let members: Vec<(&[SpatialMemory], &[PointerMemory], usize)> =
            views.iter().map(|((s, p), n)| (s.as_slice(), p.as_slice(), *n)).collect();
        model.assemble_memories(&members)
    }
}
