//! The video session (`sam2_video_predictor.py`, the per-object predictor of sam2 1.1.0):
//! per-object prompt and output dictionaries with the reference's meaning, one journal op
//! at a time. Frames stream from the media layer; only the frames being worked on are
//! encoded, and the memory bank keeps what SAM 2 can still attend to in RAM (the rest
//! lives on disk, see `memory_bank`).
use super::memory_bank::{Entry, MemoryBank, Slot, Staged};
use crate::cuda::{CudaEvent, GraphCache};
use crate::device::{AutocastGuard, PrecisionExt};
use crate::media::prefetch::Prefetcher;
use crate::media::FrameSource;
use crate::model::postprocess::fill_holes;
use crate::model::sam2_base::{
    AssembledMemory, FrameFeatures, PointInputs, PointerMemory, SpatialMemory, MAX_OBJ_PTRS, NO_OBJ_SCORE, NUM_MASKMEM,
};
use crate::model::Sam2Base;
use sam2_api::events::StageTimings;
use sam2_api::session::{ObjectId, Op, Point};
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
    /// Frames per image-encoder call during propagation; None = the mode's default (see
    /// `VideoPredictor::encode_batch`; `SAM2_TUI_ENCODE_BATCH` overrides it).
    pub encode_batch: Option<usize>,
    /// Propagation frames queued ahead of the one being written out; None = the device's
    /// default (see `VideoPredictor::pipeline_depth`; `SAM2_TUI_PIPELINE_DEPTH` overrides it).
    pub pipeline_depth: Option<usize>,
}

/// The prompts of one object on one frame as the user gave them (video pixels) and as
/// the model takes them (model-input pixels, box corners first).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Prompt {
    pub points: Vec<Point>,
    pub bbox: Option<[f32; 4]>,
}

struct ObjectState {
    id: ObjectId,
    prompts: BTreeMap<usize, Prompt>,
}

pub struct VideoPredictor {
    model: Rc<Sam2Base>,
    frames: Prefetcher,
    size: (u32, u32),
    num_frames: usize,
    opts: VideoOptions,
    objects: Vec<ObjectState>,
    bank: MemoryBank,
    /// The most recently encoded frames (the reference keeps one; a prefetched frame
    /// under the cursor is the second).
    features: Vec<(usize, Rc<FrameFeatures>)>,
    graphs: Graphs,
    /// The frames a propagation will ask for next, in order (empty outside one).
    lookahead: std::collections::VecDeque<usize>,
    /// Frames encoded per image-encoder call during propagation: 1, or more in the CUDA
    /// fast modes (`SAM2_TUI_ENCODE_BATCH`, default 4), where one frame's small kernels
    /// leave most of the GPU idle. Batching changes nothing in the math, but the GPU
    /// libraries may pick other kernels for other batch sizes, so exact mode stays at 1.
    encode_batch: usize,
    /// Frames whose model work is queued before the oldest of them is written out: 1,
    /// or 3 on CUDA. There the host's share of a frame (hole filling, the bank's write
    /// through, resizing to video resolution, sending the masks: 3–4 ms on an H100 host)
    /// comes close to the GPU's share of a tracking-only frame, and one frame in
    /// `encode_batch` brings the image encoder for several; queued deeper, the host's slow
    /// frames overlap the GPU's long ones instead of leaving the GPU idle. On the CPU the
    /// model work runs synchronously, so a deeper queue would only delay outputs.
    pipeline_depth: usize,
    timings: StageTimings,
}

/// CUDA graphs of the two fixed-shape pieces of a frame (no-ops off CUDA).
struct Graphs {
    /// Keyed by the number of frames encoded together.
    image: GraphCache<i64>,
    /// Keyed by (memory tokens, of which object-pointer tokens).
    track: GraphCache<(i64, i64)>,
    /// The tracking step's parts between its cross-attentions (`Sam2Base::track_begin`,
    /// `track_between` per layer, `track_end`), one graph each: the same shapes on every
    /// frame, so they replay while the memory bank fills and every frame brings a new
    /// memory shape (eagerly, the CPU could not queue those frames as fast as the GPU
    /// runs them).
    track_parts: Vec<GraphCache<()>>,
}

/// A propagation frame whose model work is queued but whose outputs are not yet written.
struct Tracked {
    frame: usize,
    reverse: bool,
    /// New tracking outputs, in RAM only until written out, and their host copies
    /// (queued without blocking; valid once `copied` has passed).
    staged: Vec<Staged>,
    host: Vec<Entry>,
    copied: Option<CudaEvent>,
    /// Objects prompted on this frame (their output is the prompt's; only marked tracked).
    prompted: Vec<ObjectId>,
    timings: StageTimings,
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
    pub fn new(model: Rc<Sam2Base>, frames: Box<dyn FrameSource>, opts: VideoOptions) -> anyhow::Result<Self> {
        let size = frames.size();
        let num_frames = frames.len();
        anyhow::ensure!(num_frames > 0, "the video has no frames");
        let frames = Prefetcher::for_device(frames, model.image_size() as u32, model.device);
        let bank = MemoryBank::open(opts.bank_dir.clone(), model.device)?;
        let parts = model.memory_attention.num_layers() + 1;
        let graphs = Graphs {
            image: GraphCache::new(model.device, 2),
            track: GraphCache::new(model.device, 4),
            track_parts: (0..parts).map(|_| GraphCache::new(model.device, 1)).collect(),
        };
        let from_env = std::env::var("SAM2_TUI_ENCODE_BATCH").ok().and_then(|v| v.parse().ok());
        let default = if model.precision.autocast(model.device).is_some() { 4 } else { 1 };
        let encode_batch = opts.encode_batch.or(from_env).filter(|&n| n >= 1).unwrap_or(default);
        let from_env = std::env::var("SAM2_TUI_PIPELINE_DEPTH").ok().and_then(|v| v.parse().ok());
        let default = if matches!(model.device, Device::Cuda(_)) { 3 } else { 1 };
        let pipeline_depth = opts.pipeline_depth.or(from_env).filter(|&n| n >= 1).unwrap_or(default);
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
            lookahead: Default::default(),
            encode_batch,
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

    /// The object ids in the reference's order (order of first prompt).
    pub fn object_ids(&self) -> Vec<ObjectId> {
        self.objects.iter().map(|o| o.id).collect()
    }

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
                let out = self.add_prompt(*frame, *object, points, *bbox)?;
                let _ = on_frame(out);
                Ok(())
            }
            Op::Propagate { start, reverse, max_frames } => self.propagate(*start, *reverse, *max_frames, on_frame),
            Op::ClearFrame { frame, object } => {
                self.check_frame(*frame)?;
                if let Some(idx) = self.obj_idx(*object) {
                    self.clear_frame(idx, *frame)?;
                    let out = self.frame_output(*frame, self.any_temp_cond(*frame))?;
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
                self.reset()?;
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
        self.features_of(frame).map(|_| ())
    }

    /// The precision mode's autocast (CUDA fast modes) for the duration of an op.
    fn autocast(&self) -> AutocastGuard {
        AutocastGuard::new(self.model.precision.autocast(self.model.device))
    }

    fn save_state(&mut self) -> anyhow::Result<()> {
        let state: Vec<(ObjectId, BTreeMap<usize, Prompt>)> =
            self.objects.iter().map(|o| (o.id, o.prompts.clone())).collect();
        self.bank.save_state(&state)
    }

    fn check_frame(&self, frame: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            frame < self.num_frames,
            "frame {frame} out of range (the video has {} frames)",
            self.num_frames
        );
        Ok(())
    }

    fn obj_idx(&self, id: ObjectId) -> Option<usize> {
        self.objects.iter().position(|o| o.id == id)
    }

    fn features_of(&mut self, frame: usize) -> anyhow::Result<Rc<FrameFeatures>> {
        if let Some((_, f)) = self.features.iter().find(|(i, _)| *i == frame) {
            return Ok(f.clone());
        }
        // During propagation, the frames coming next are encoded together (see `encode_batch`).
        let batch: Vec<usize> = if self.lookahead.front() == Some(&frame) {
            self.lookahead
                .iter()
                .copied()
                .filter(|f| !self.features.iter().any(|(i, _)| i == f))
                .take(self.encode_batch)
                .collect()
        } else {
            vec![frame]
        };
        let t = Instant::now();
        let mut pixels = Vec::with_capacity(batch.len());
        for &f in &batch {
            pixels.push(self.frames.get(f)?.pixels);
        }
        self.timings.decode_ms += ms(t);
        let t = Instant::now();
        let feats = self.encode(&pixels);
        self.sync();
        self.timings.image_encoder_ms += ms(t);
        for (f, x) in batch.into_iter().zip(feats).rev() {
            self.features.insert(0, (f, Rc::new(x)));
        }
        self.features.truncate(self.encode_batch + 1);
        Ok(self.features.iter().find(|(i, _)| *i == frame).expect("just encoded").1.clone())
    }

    /// The image encoder on one or more frames' pixels, through a CUDA graph per batch
    /// size where graphs are on.
    fn encode(&mut self, pixels: &[Tensor]) -> Vec<FrameFeatures> {
        if !self.graphs.image.enabled() && pixels.len() == 1 {
            return vec![self.model.forward_pixels(&pixels[0])];
        }
        let on_device: Vec<Tensor> =
            pixels.iter().map(|p| p.to_device_(self.model.device, Kind::Uint8, true, false)).collect();
        let x = Tensor::cat(&on_device, 0);
        let b = pixels.len() as i64;
        let model = self.model.clone();
        let encode = move |x: &[Tensor]| {
            let f = model.forward_image(&crate::media::preprocess::normalize(&x[0]));
            let [h0, h1] = f.high_res;
            vec![h0, h1, f.feat, f.pos]
        };
        let out = self.graphs.image.run(b, &[&x], &encode);
        let per_frame = |t: &Tensor, i: i64| if t.size()[0] == b { t.narrow(0, i, 1) } else { t.shallow_clone() };
        (0..b)
            .map(|i| FrameFeatures {
                high_res: [per_frame(&out[0], i), per_frame(&out[1], i)],
                feat: per_frame(&out[2], i),
                pos: per_frame(&out[3], i),
            })
            .collect()
    }

    /// Per-stage timings on a GPU need a synchronisation after each stage, which stops
    /// the CPU from queueing the next kernels while the GPU works. Only when asked
    /// (`SAM2_TUI_SYNC_TIMINGS=1`, set by `bench`); otherwise GPU stage times are
    /// enqueue times and only the per-frame total is exact.
    fn sync(&self) {
        if let Device::Cuda(i) = self.model.device {
            if *SYNC_TIMINGS {
                tch::Cuda::synchronize(i as i64);
            }
        }
    }

    /// Video-pixel prompts → model-input pixels, box corners (labels 2, 3) first.
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

    fn add_prompt(
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
        let entry = self.run_single_frame(idx, frame, is_init_cond, Some(&inputs), reverse, false, prev.as_ref())?;
        let entry = self.postprocess(entry);
        let _ = storage;
        self.bank.put(id, temp, frame, entry, None)?;
        let mut out = self.frame_output(frame, is_init_cond)?;
        self.timings.total_ms = ms(t0);
        out.timings = self.timings;
        Ok(out)
    }

    /// `_run_single_frame_inference` + `track_step` for one object.
    #[allow(clippy::too_many_arguments)]
    fn run_single_frame(
        &mut self,
        idx: usize,
        frame: usize,
        is_init_cond: bool,
        points: Option<&PointInputs>,
        reverse: bool,
        run_mem_encoder: bool,
        prev_logits: Option<&Tensor>,
    ) -> anyhow::Result<Entry> {
        let feats = self.features_of(frame)?;
        let id = self.objects[idx].id;
        let t = Instant::now();
        let pix = if is_init_cond {
            self.model.condition_on_memory(&feats, None)
        } else {
            let memory = self.memories(id, frame, reverse)?;
            if points.is_none() && prev_logits.is_none() && run_mem_encoder && self.graphs.track.enabled() {
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

    /// A propagation frame's model work through a CUDA graph (see `cuda::graph`): captured
    /// once the memory shapes repeat, i.e. once the memory bank is full. Stage times are
    /// not separable inside a graph; the whole step is counted as memory attention.
    fn track_step_graphed(&mut self, feats: &FrameFeatures, memory: &AssembledMemory) -> Entry {
        let t = Instant::now();
        let key = (memory.tokens.size()[0], memory.num_ptr_tokens);
        let [pred_masks, obj_ptr, score, maskmem] = if self.graphs.track.graphed_next(&key) {
            self.track_step_whole(key, feats, memory)
        } else {
            // A memory shape not seen on the previous frame: in parts, the fixed-shape
            // ones graphed.
            self.graphs.track.saw(key);
            self.track_step_in_parts(feats, memory)
        };
        self.sync();
        self.timings.memory_attention_ms += ms(t);
        Entry { maskmem: Some(maskmem), pred_masks, obj_ptr, score }
    }

    /// `Sam2Base::track_step` as one graph (low-res masks, pointer, score, memory).
    fn track_step_whole(&mut self, key: (i64, i64), feats: &FrameFeatures, memory: &AssembledMemory) -> [Tensor; 4] {
        let model = self.model.clone();
        let n = memory.num_ptr_tokens;
        let inputs = [&feats.high_res[0], &feats.high_res[1], &feats.feat, &feats.pos, &memory.tokens, &memory.pos];
        let step = move |x: &[Tensor]| {
            let (low, ptr, score, maskmem) = model.track_step(&graph_features(x), &x[4], &x[5], n);
            vec![low, ptr, score, maskmem]
        };
        four(self.graphs.track.run(key, &inputs, &step))
    }

    /// `Sam2Base::track_step` with its fixed-shape parts through `graphs.track_parts` and
    /// the cross-attentions (the shapes that follow the memories) run eagerly.
    fn track_step_in_parts(&mut self, feats: &FrameFeatures, memory: &AssembledMemory) -> [Tensor; 4] {
        let model = self.model.clone();
        let n = memory.num_ptr_tokens;
        let (k_in, v_in) = model.track_memory_inputs(&memory.tokens, &memory.pos);
        let last = model.memory_attention.num_layers() - 1;
        let pair = |mut v: Vec<Tensor>| {
            let q = v.pop().expect("queries");
            (v.pop().expect("residual stream"), q)
        };
        let m = model.clone();
        let begin = move |x: &[Tensor]| {
            let (out, q) = m.track_begin(&x[0], &x[1]);
            vec![out, q]
        };
        let (mut out, mut q) = pair(self.graphs.track_parts[0].run((), &[&feats.feat, &feats.pos], &begin));
        for i in 0..last {
            let attn = model.track_cross(i, &q, &k_in, &v_in, n);
            let m = model.clone();
            let between = move |x: &[Tensor]| {
                let (out, q) = m.track_between(i, &x[0], &x[1]);
                vec![out, q]
            };
            (out, q) = pair(self.graphs.track_parts[i + 1].run((), &[&out, &attn], &between));
        }
        let attn = model.track_cross(last, &q, &k_in, &v_in, n);
        let m = model.clone();
        let end = move |x: &[Tensor]| {
            let (low, ptr, score, maskmem) = m.track_end(&graph_features(x), &x[4], &x[5]);
            vec![low, ptr, score, maskmem]
        };
        let inputs = [&feats.high_res[0], &feats.high_res[1], &feats.feat, &feats.pos, &out, &attn];
        four(self.graphs.track_parts[last + 1].run((), &inputs, &end))
    }

    /// Hole filling of the output masks (`fill_holes_in_mask_scores`). It runs on the
    /// host, so propagation applies it when the frame is written out, not while the next
    /// frame's kernels could be queued; nothing downstream of the model reads the
    /// unfilled masks (the memory encoder takes the high-res masks before this).
    fn postprocess(&self, entry: Entry) -> Entry {
        if self.opts.fill_holes {
            Entry { pred_masks: fill_holes(&entry.pred_masks, 8), ..entry }
        } else {
            entry
        }
    }

    /// Chooses the memories of a non-initial frame exactly as
    /// `_prepare_memory_conditioned_features` does, as memory tokens.
    fn memories(&mut self, id: ObjectId, frame: usize, reverse: bool) -> anyhow::Result<AssembledMemory> {
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
        let spatial: Vec<SpatialMemory> = spatial_entries
            .iter()
            .filter_map(|(i, e)| e.maskmem.as_ref().map(|m| SpatialMemory { features: m, tpos_index: *i }))
            .collect();
        let ptrs: Vec<PointerMemory> =
            ptr_entries.iter().map(|(pos, e)| PointerMemory { ptr: &e.obj_ptr, pos: *pos }).collect();
        Ok(self.model.assemble_memory(&spatial, &ptrs, self.num_frames))
    }

    /// The masks of every object on `frame` at video resolution, each from (in order)
    /// its temp output of the given kind, its conditioning output, its tracking output;
    /// −1024 where it has none (`_consolidate_temp_output_across_obj`).
    fn frame_output(&mut self, frame: usize, is_cond: bool) -> anyhow::Result<FrameOutput> {
        let temp = slot(is_cond, true);
        let mut objects = Vec::with_capacity(self.objects.len());
        let ids = self.object_ids();
        let e = self.model.image_size() / 4;
        for id in ids {
            let entry = [temp, Slot::Cond, Slot::NonCond].iter().find_map(|s| self.bank.get(id, *s, frame));
            let (low, score) = match entry {
                Some(en) => (en.pred_masks.shallow_clone(), en.score.to_kind(Kind::Float).double_value(&[0, 0]) as f32),
                None => (Tensor::full([1, 1, e, e], NO_OBJ_SCORE, (Kind::Float, Device::Cpu)), NO_OBJ_SCORE as f32),
            };
            objects.push(ObjectOutput { object: id, logits: self.to_video_res(&low), score });
        }
        Ok(FrameOutput { frame, objects, timings: self.timings })
    }

    fn to_video_res(&self, low: &Tensor) -> Tensor {
        let (w, h) = self.size;
        low.to_kind(Kind::Float)
            .upsample_bilinear2d([h as i64, w as i64], false, None, None)
            .to_device(Device::Cpu)
            .reshape([h as i64, w as i64])
    }

    fn any_temp_cond(&self, frame: usize) -> bool {
        self.objects.iter().any(|o| self.bank.contains(o.id, Slot::TempCond, frame))
    }

    /// `propagate_in_video_preflight`: memories for the prompted frames, temp outputs
    /// committed.
    fn preflight(&mut self) -> anyhow::Result<()> {
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
                        let feats = self.features_of(frame)?;
                        let s = self.model.image_size();
                        let high = entry.pred_masks.to_device(self.model.device).upsample_bilinear2d(
                            [s, s],
                            false,
                            None,
                            None,
                        );
                        let t = Instant::now();
                        let m = self.model.encode_new_memory(&feats, &high, &entry.score, true);
                        self.timings.memory_encoder_ms += ms(t);
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

    fn propagate(
        &mut self,
        start: Option<usize>,
        reverse: bool,
        max_frames: Option<usize>,
        on_frame: &mut dyn FnMut(FrameOutput) -> ControlFlow<()>,
    ) -> anyhow::Result<()> {
        self.preflight()?;
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
        self.lookahead = order.iter().copied().collect();
        let _trace = crate::trace::propagation(self.model.device);
        let result = self.propagate_in_order(&ids, &order, reverse, on_frame);
        self.lookahead.clear();
        result
    }

    fn propagate_in_order(
        &mut self,
        ids: &[ObjectId],
        order: &[usize],
        reverse: bool,
        on_frame: &mut dyn FnMut(FrameOutput) -> ControlFlow<()>,
    ) -> anyhow::Result<()> {
        // Frame k's outputs are fetched to the host (a device sync) only after the kernels
        // of the next `pipeline_depth` frames are queued, so the GPU never idles while the
        // host writes results.
        let mut pending: std::collections::VecDeque<Tracked> = Default::default();
        let mut last_out = Instant::now();
        for &frame in order {
            let tracked = match self.track_frame(ids, frame, reverse) {
                Ok(t) => t,
                Err(e) => {
                    // Still deliver the frames that were finished before the failure.
                    let _ = self.write_out_until(&mut pending, 0, &mut last_out, on_frame);
                    return Err(e);
                }
            };
            pending.push_back(tracked);
            self.lookahead.pop_front();
            if self.write_out_until(&mut pending, self.pipeline_depth, &mut last_out, on_frame)?.is_break() {
                return Ok(());
            }
        }
        self.write_out_until(&mut pending, 0, &mut last_out, on_frame).map(|_| ())
    }

    /// Writes out the oldest queued frames until `keep` remain. After a cancel or an
    /// error the frames still queued are forgotten: they never happened.
    fn write_out_until(
        &mut self,
        pending: &mut std::collections::VecDeque<Tracked>,
        keep: usize,
        last_out: &mut Instant,
        on_frame: &mut dyn FnMut(FrameOutput) -> ControlFlow<()>,
    ) -> anyhow::Result<ControlFlow<()>> {
        while pending.len() > keep {
            let oldest = pending.pop_front().expect("pending frame");
            let written = self.write_out(oldest, last_out, on_frame);
            if !matches!(written, Ok(ControlFlow::Continue(()))) {
                self.forget(std::mem::take(pending));
                return written;
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Undoes queued frames that will not be written out, newest first (each one's
    /// staging remembers what the bank held before it).
    fn forget(&mut self, pending: std::collections::VecDeque<Tracked>) {
        for t in pending.into_iter().rev() {
            t.staged.into_iter().rev().for_each(|s| self.bank.unstage(s));
        }
    }

    /// Queues the model work of one propagation frame for every object. The new tracking
    /// outputs are staged in the bank's RAM (the next frame attends to them) and written
    /// through by `write_out`.
    fn track_frame(&mut self, ids: &[ObjectId], frame: usize, reverse: bool) -> anyhow::Result<Tracked> {
        self.timings = StageTimings::default();
        let mut tracked = Tracked {
            frame,
            reverse,
            staged: vec![],
            host: vec![],
            copied: None,
            prompted: vec![],
            timings: StageTimings::default(),
        };
        for (idx, &id) in ids.iter().enumerate() {
            if self.bank.contains(id, Slot::Cond, frame) {
                tracked.prompted.push(id);
                continue;
            }
            match self.run_single_frame(idx, frame, false, None, reverse, true, None) {
                Ok(entry) => tracked.staged.push(self.bank.stage(id, Slot::NonCond, frame, entry, Some(reverse))),
                Err(e) => {
                    tracked.staged.into_iter().for_each(|s| self.bank.unstage(s));
                    return Err(e);
                }
            }
        }
        self.bank.advance(frame, reverse);
        // Host copies now, before the next frame's kernels, so waiting for them later
        // does not mean waiting for the next frame too.
        for s in &tracked.staged {
            let e = self.bank.get(s.id, s.slot, s.frame).expect("staged entry");
            tracked.host.push(Entry {
                maskmem: e.maskmem.as_ref().map(to_host),
                pred_masks: to_host(&e.pred_masks),
                obj_ptr: to_host(&e.obj_ptr),
                score: to_host(&e.score),
            });
        }
        tracked.copied = CudaEvent::record(self.model.device);
        tracked.timings = self.timings;
        Ok(tracked)
    }

    /// Finishes a tracked frame: hole filling, written through to the bank, emitted.
    /// The masks and score stay on the host from here on (outputs, corrections read
    /// them there); memory features and pointers stay on the device for attention.
    fn write_out(
        &mut self,
        t: Tracked,
        last_out: &mut Instant,
        on_frame: &mut dyn FnMut(FrameOutput) -> ControlFlow<()>,
    ) -> anyhow::Result<ControlFlow<()>> {
        if let Some(copied) = &t.copied {
            copied.synchronize();
        }
        for (s, host) in t.staged.iter().zip(t.host) {
            let on_device = self.bank.get(s.id, s.slot, s.frame).expect("staged entry");
            let host = self.postprocess(host);
            let kept = Entry {
                maskmem: on_device.maskmem.as_ref().map(|m| m.shallow_clone()),
                pred_masks: host.pred_masks.shallow_clone(),
                obj_ptr: on_device.obj_ptr.shallow_clone(),
                score: host.score.shallow_clone(),
            };
            self.bank.put_copied(s.id, s.slot, s.frame, kept, &host, Some(t.reverse))?;
        }
        for &id in &t.prompted {
            self.bank.mark_tracked(id, t.frame, t.reverse)?;
        }
        let mut out = self.frame_output(t.frame, false)?;
        out.timings = t.timings;
        // Steady-state cost of a frame: the time between consecutive outputs.
        out.timings.total_ms = ms(*last_out);
        *last_out = Instant::now();
        Ok(on_frame(out))
    }

    /// `clear_all_prompts_in_frame` without output.
    fn clear_frame(&mut self, idx: usize, frame: usize) -> anyhow::Result<()> {
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

    fn remove_object(&mut self, id: ObjectId) -> anyhow::Result<Vec<FrameOutput>> {
        let Some(idx) = self.obj_idx(id) else { return Ok(vec![]) };
        if self.objects.len() == 1 {
            self.reset()?;
            return Ok(vec![]);
        }
        let frames: Vec<usize> = self.objects[idx].prompts.keys().copied().collect();
        for &f in &frames {
            self.clear_frame(idx, f)?;
        }
        self.objects.remove(idx);
        self.bank.remove_object(id)?;
        frames.into_iter().map(|f| self.frame_output(f, self.any_temp_cond(f))).collect()
    }

    fn reset(&mut self) -> anyhow::Result<()> {
        self.objects.clear();
        self.bank.clear()
    }
}

/// A frame's features from a graph's inputs `[high_res 0, high_res 1, feat, pos, …]`.
fn graph_features(x: &[Tensor]) -> FrameFeatures {
    FrameFeatures {
        high_res: [x[0].shallow_clone(), x[1].shallow_clone()],
        feat: x[2].shallow_clone(),
        pos: x[3].shallow_clone(),
    }
}

/// The tracking step's four outputs (low-res masks, object pointer, score, memory).
fn four(outputs: Vec<Tensor>) -> [Tensor; 4] {
    outputs.try_into().unwrap_or_else(|v: Vec<Tensor>| panic!("the tracking step gives 4 outputs, got {}", v.len()))
}

/// A host copy queued on the stream without blocking (into page-locked memory on a
/// GPU; the tensor itself on the CPU).
fn to_host(t: &Tensor) -> Tensor {
    t.to_device_(Device::Cpu, t.kind(), true, false)
}

static SYNC_TIMINGS: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var("SAM2_TUI_SYNC_TIMINGS").is_ok_and(|v| v == "1"));

fn ms(t: Instant) -> f32 {
    t.elapsed().as_secs_f32() * 1000.0
}
