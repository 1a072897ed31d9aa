//! CUDA graphs of a video frame's two fixed-shape pieces (no reference counterpart; no-ops
//! off CUDA): the image encoder, one graph per number of frames encoded together, and the
//! tracking step (`Sam2Base::track_step`: memory attention, SAM heads, memory encoder),
//! whole once the memory bank is full or in parts while it fills. The math is the
//! model's; a graph only replays the kernels an eager run of it queued (see `cuda::graph`).
use crate::cuda::GraphCache;
use crate::model::sam2_base::{AssembledMemory, FrameFeatures};
use crate::model::Sam2Base;
use std::rc::Rc;
use tch::{Kind, Tensor};

/// CUDA graphs of the two fixed-shape pieces of a frame (no-ops off CUDA).
pub(super) struct Graphs {
    /// Keyed by the number of frames encoded together.
    image: GraphCache<i64>,
    /// Keyed by (memory tokens, of which object-pointer tokens).
    track: GraphCache<(i64, i64)>,
    /// Several objects' tracking steps at once (`batched`), keyed by (objects, memory
    /// tokens, of which object-pointer tokens): once the bank is full, one graph per
    /// object count.
    track_batched: GraphCache<(i64, i64, i64)>,
    /// The tracking step's parts between its cross-attentions (`Sam2Base::track_begin`,
    /// `track_between` per layer, `track_end`), one graph each: the same shapes on every
    /// frame, so they replay while the memory bank fills and every frame brings a new
    /// memory shape (eagerly, the CPU could not queue those frames as fast as the GPU
    /// runs them).
    track_parts: Vec<GraphCache<()>>,
}

impl Graphs {
    /// Graphs for `model`'s device; `on` = false (the `cuda_graphs` knob), or any device
    /// but CUDA, runs everything eagerly.
    pub(super) fn new(model: &Sam2Base, on: bool) -> Graphs {
        let parts = model.memory_attention.num_layers() + 1;
        Graphs {
            image: GraphCache::new(model.device, 2, on),
            track: GraphCache::new(model.device, 4, on),
            track_batched: GraphCache::new(model.device, 4, on),
            track_parts: (0..parts).map(|_| GraphCache::new(model.device, 1, on)).collect(),
        }
    }

    /// A batched frame begins: its groups' tracking steps ([`Graphs::track_step_batched`],
    /// one call per group of equal memory shape) are captured once their shapes were seen
    /// on the frame before, not on a second call in a row, which two groups of other
    /// shapes never make.
    pub(super) fn next_batched_frame(&mut self) {
        self.track_batched.next_frame();
    }

    /// Whether a propagation frame's tracking step goes through [`Graphs::track_step`].
    pub(super) fn track_enabled(&self) -> bool {
        self.track.enabled()
    }

    /// The image encoder on one or more frames' pixels, through a CUDA graph per batch
    /// size where graphs are on.
    pub(super) fn encode(&mut self, model: &Rc<Sam2Base>, pixels: &[Tensor]) -> Vec<FrameFeatures> {
        if !self.image.enabled() && pixels.len() == 1 {
            return vec![model.forward_pixels(&pixels[0])];
        }
        let on_device: Vec<Tensor> =
            pixels.iter().map(|p| p.to_device_(model.device, Kind::Uint8, true, false)).collect();
        let x = Tensor::cat(&on_device, 0);
        let b = pixels.len() as i64;
        let model = model.clone();
        let encode = move |x: &[Tensor]| {
            let f = model.forward_image(&crate::media::preprocess::normalize(&x[0]));
            let [h0, h1] = f.high_res;
            vec![h0, h1, f.feat, f.pos]
        };
        let out = self.image.run(b, &[&x], &encode);
        let per_frame = |t: &Tensor, i: i64| if t.size()[0] == b { t.narrow(0, i, 1) } else { t.shallow_clone() };
        (0..b)
            .map(|i| FrameFeatures {
                high_res: [per_frame(&out[0], i), per_frame(&out[1], i)],
                feat: per_frame(&out[2], i),
                pos: per_frame(&out[3], i),
            })
            .collect()
    }

    /// A propagation frame's model work through a CUDA graph (see `cuda::graph`): captured
    /// once the memory shapes repeat, i.e. once the memory bank is full. Returns the low-res
    /// masks, the object pointer, the score and the memory features.
    pub(super) fn track_step(
        &mut self,
        model: &Rc<Sam2Base>,
        feats: &FrameFeatures,
        memory: &AssembledMemory,
    ) -> [Tensor; 4] {
        let key = (memory.tokens.size()[0], memory.num_ptr_tokens);
        if self.track.graphed_next(&key) {
            self.track_step_whole(model, key, feats, memory)
        } else {
            // A memory shape not seen on the previous frame: in parts, the fixed-shape
            // ones graphed.
            self.track.saw(key);
            self.track_step_in_parts(model, feats, memory)
        }
    }

    /// `Sam2Base::track_step_batched` (the objects of one memory-length group, memories
    /// `[L, B, 64]`), through a graph per (object count, memory shape) where graphs are on:
    /// captured on the second consecutive frame of the same shape (frames marked by
    /// [`Graphs::next_batched_frame`]), i.e. once the bank is full; eager while it fills.
    /// Outputs `[B, …]`.
    pub(super) fn track_step_batched(
        &mut self,
        model: &Rc<Sam2Base>,
        feats: &FrameFeatures,
        tokens: &Tensor,
        pos: &Tensor,
        num_ptr_tokens: i64,
    ) -> [Tensor; 4] {
        let key = (tokens.size()[1], tokens.size()[0], num_ptr_tokens);
        let model = model.clone();
        let inputs = [&feats.high_res[0], &feats.high_res[1], &feats.feat, &feats.pos, tokens, pos];
        let step = move |x: &[Tensor]| {
            let (low, ptr, score, maskmem) = model.track_step_batched(&graph_features(x), &x[4], &x[5], num_ptr_tokens);
            vec![low, ptr, score, maskmem]
        };
        four(self.track_batched.run(key, &inputs, &step))
    }

    /// `Sam2Base::track_step` as one graph (low-res masks, pointer, score, memory).
    fn track_step_whole(
        &mut self,
        model: &Rc<Sam2Base>,
        key: (i64, i64),
        feats: &FrameFeatures,
        memory: &AssembledMemory,
    ) -> [Tensor; 4] {
        let model = model.clone();
        let n = memory.num_ptr_tokens;
        let inputs = [&feats.high_res[0], &feats.high_res[1], &feats.feat, &feats.pos, &memory.tokens, &memory.pos];
        let step = move |x: &[Tensor]| {
            let (low, ptr, score, maskmem) = model.track_step(&graph_features(x), &x[4], &x[5], n);
            vec![low, ptr, score, maskmem]
        };
        four(self.track.run(key, &inputs, &step))
    }

    /// `Sam2Base::track_step` with its fixed-shape parts through `track_parts` and the
    /// cross-attentions (the shapes that follow the memories) run eagerly.
    fn track_step_in_parts(
        &mut self,
        model: &Rc<Sam2Base>,
        feats: &FrameFeatures,
        memory: &AssembledMemory,
    ) -> [Tensor; 4] {
        let model = model.clone();
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
        let (mut out, mut q) = pair(self.track_parts[0].run((), &[&feats.feat, &feats.pos], &begin));
        for i in 0..last {
            let attn = model.track_cross(i, &q, &k_in, &v_in, n);
            let m = model.clone();
            let between = move |x: &[Tensor]| {
                let (out, q) = m.track_between(i, &x[0], &x[1]);
                vec![out, q]
            };
            (out, q) = pair(self.track_parts[i + 1].run((), &[&out, &attn], &between));
        }
        let attn = model.track_cross(last, &q, &k_in, &v_in, n);
        let m = model.clone();
        let end = move |x: &[Tensor]| {
            let (low, ptr, score, maskmem) = m.track_end(&graph_features(x), &x[4], &x[5]);
            vec![low, ptr, score, maskmem]
        };
        let inputs = [&feats.high_res[0], &feats.high_res[1], &feats.feat, &feats.pos, &out, &attn];
        four(self.track_parts[last + 1].run((), &inputs, &end))
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
