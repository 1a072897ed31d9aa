//! All objects of a propagation frame tracked in one pass (issue #18; no reference
//! counterpart: the reference's `propagate_in_video` runs `_run_single_frame_inference`
//! object after object). Behind the `batch_objects` knob (by default on in the CUDA fast
//! modes), for frames with more than one object to track; on CUDA each group's whole step
//! replays as a graph per object count.
//!
//! What each object computes is what the loop computes for it: its own memories, chosen
//! by `prepare_memory_conditioned_features` exactly as for one object; memory attention
//! over them; the SAM heads without a prompt; the memory encoder on its mask. What is
//! shared: the frame's features, the part of memory attention that reads only the frame
//! (layer 0 up to its first cross-attention, once for every object), and the calls — the
//! objects whose memories have the same length (and the same number of object-pointer
//! tokens, which skip RoPE) go through memory attention as one batch, and every object of
//! the frame through one mask-decoder and one memory-encoder call. Memory lengths differ
//! while the bank fills and between objects prompted on different frames or added later;
//! grouping (rather than padding with masked tokens) keeps every softmax over exactly the
//! object's own tokens. The numbers differ from the loop's only by the rounding of
//! larger matrix products; the parity journals hold both paths to the same bounds.
use super::memory_bank::Entry;
use super::video_predictor::{ChosenMemories, VideoPredictor};
use crate::device::PrecisionExt;
use crate::model::sam2_base::{AssembledMemory, FrameFeatures};
use sam2_api::device::Precision;
use sam2_api::session::ObjectId;
use std::time::Instant;
use tch::Tensor;

/// The most objects that go through memory attention, the SAM heads and the memory encoder
/// together on the CPU. Their activations grow with the objects (at a full bank each
/// object's projected and rotated keys are ~60 MB in fp32; the heads and the memory
/// encoder work at the model's 1024 input): 16 objects at once took the worker's peak RSS
/// to 4.2 GiB against 1.6 GiB one by one (tiny), while what a batch gains on the CPU
/// (fewer calls, layer 0's start once for all; the cross-attention runs object by object
/// anyway) is mostly had at 4.
const CPU_CHUNK: usize = 4;

impl VideoPredictor {
    /// Whether propagation tracks a frame's `objects` together (the `batch_objects` knob;
    /// one object keeps the one-object path and its graphs). `auto` batches in the CUDA
    /// fast modes, where the masks were measured to be as close to the reference's either
    /// way; exact mode and the CPU/MPS keep the reference's loop.
    pub(super) fn batches_objects(&self, objects: usize) -> bool {
        let auto = batches_by_default(self.model.precision, self.model.device);
        self.opts.tuning.batch_objects.resolve(auto) && objects > 1
    }

    /// The tracking outputs of `ids` on `frame` (none of them prompted there), in the
    /// order of `ids`: what `run_single_frame_inference` gives each of them on a
    /// propagation frame.
    pub(super) fn track_objects_batched(
        &mut self,
        ids: &[ObjectId],
        frame: usize,
        reverse: bool,
    ) -> anyhow::Result<Vec<Entry>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let feats = self.get_image_feature(frame)?;
        let t = Instant::now();
        let mut chosen = Vec::with_capacity(ids.len());
        for &id in ids {
            chosen.push(self.choose_memories(id, frame, reverse)?);
        }
        // The objects in groups of one memory shape; on the CPU at most `CPU_CHUNK` a group,
        // and the SAM heads and the memory encoder below take as many at a time.
        let chunk = if self.model.device == tch::Device::Cpu { CPU_CHUNK } else { ids.len() };
        let groups = ChosenMemories::group_by_counts(&chosen, chunk);
        let memories: Vec<(AssembledMemory, &[usize])> = groups
            .iter()
            .map(|members| {
                let all: Vec<&ChosenMemories> = members.iter().map(|&i| &chosen[i]).collect();
                (ChosenMemories::assemble_group(&self.model, &all), members.as_slice())
            })
            .collect();
        if self.graphs.track_enabled() {
            return Ok(self.track_groups_graphed(&feats, &memories, ids.len(), t));
        }
        let mut pix: Vec<Option<Tensor>> = ids.iter().map(|_| None).collect();
        for (memory, members) in &memories {
            let out = self.model.attend_memory_batched(&feats, &memory.tokens, &memory.pos, memory.num_ptr_tokens);
            for (j, &i) in members.iter().enumerate() {
                pix[i] = Some(out.narrow(0, j as i64, 1));
            }
        }
        let pix = Tensor::cat(&pix.into_iter().map(|p| p.expect("every object in a group")).collect::<Vec<_>>(), 0);
        self.sync();
        self.timings.memory_attention_ms += ms(t);

        // The SAM heads and the memory encoder over every object of the frame, `chunk` at a time.
        let mut entries = Vec::with_capacity(ids.len());
        for start in (0..ids.len()).step_by(chunk) {
            let pix = pix.narrow(0, start as i64, chunk.min(ids.len() - start) as i64);
            let t = Instant::now();
            let sam = self.model.forward_sam_heads(&pix, None, None, &feats.high_res, true);
            self.sync();
            self.timings.mask_decoder_ms += ms(t);

            let t = Instant::now();
            let maskmem = self.model.encode_new_memory(&feats, &sam.high_res_masks, &sam.object_score_logits, false);
            self.sync();
            self.timings.memory_encoder_ms += ms(t);
            entries.extend((0..pix.size()[0] as usize).map(|i| Entry {
                maskmem: Some(one(&maskmem, i)),
                pred_masks: one(&sam.low_res_masks, i),
                obj_ptr: one(&sam.obj_ptr, i),
                score: one(&sam.object_score_logits, i),
            }));
        }
        Ok(entries)
    }

    /// With CUDA graphs: each group's whole tracking step (memory attention, SAM heads,
    /// memory encoder) as one call, replayed as one graph per object count once the bank
    /// is full. The mask decoder and memory encoder then run per group rather than once
    /// for the frame; in steady state (every object prompted before the bank filled) the
    /// frame is one group, and an object prompted on more frames than the others (one more
    /// memory for good) makes a second, graphed too (`Graphs::next_batched_frame`).
    /// Timings go to memory attention, as the one-object graph's do.
    fn track_groups_graphed(
        &mut self,
        feats: &FrameFeatures,
        groups: &[(AssembledMemory, &[usize])],
        objects: usize,
        t: Instant,
    ) -> Vec<Entry> {
        self.graphs.next_batched_frame();
        let mut entries: Vec<Option<Entry>> = (0..objects).map(|_| None).collect();
        for (memory, members) in groups {
            let [low, ptr, score, maskmem] =
                self.graphs.track_step_batched(&self.model, feats, &memory.tokens, &memory.pos, memory.num_ptr_tokens);
            // The replay hands back copies of the graph's buffers (`cuda::graph`): each
            // object's entry is a row of them.
            for (j, &i) in members.iter().enumerate() {
                entries[i] = Some(Entry {
                    maskmem: Some(one(&maskmem, j)),
                    pred_masks: one(&low, j),
                    obj_ptr: one(&ptr, j),
                    score: one(&score, j),
                });
            }
        }
        self.sync();
        self.timings.memory_attention_ms += ms(t);
        entries.into_iter().map(|e| e.expect("every object in a group")).collect()
    }
}

/// `batch_objects = auto`: on in the CUDA fast modes (computed under autocast), off in
/// exact mode and on the CPU and MPS.
fn batches_by_default(precision: Precision, device: tch::Device) -> bool {
    precision.autocast(device).is_some()
}

/// Object `i`'s row of a batched output, a view: the rows of one frame's outputs are
/// kept and let go together (a frame's entries leave the bank's RAM together), and none
/// is written in place.
fn one(x: &Tensor, i: usize) -> Tensor {
    x.narrow(0, i as i64, 1)
}

fn ms(t: Instant) -> f32 {
    t.elapsed().as_secs_f32() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn objects_are_batched_by_default_only_in_the_cuda_fast_modes() {
        for precision in [Precision::Bf16, Precision::Fp16] {
            assert!(batches_by_default(precision, Device::Cuda(0)), "{precision}");
        }
        // Exact mode keeps the reference's loop on every device, and the CPU (and MPS, the
        // Mac's GPU) keep it in every mode.
        assert!(!batches_by_default(Precision::Fp32, Device::Cuda(0)));
        for device in [Device::Cpu, Device::Mps] {
            for precision in [Precision::Fp32, Precision::Bf16, Precision::Fp16] {
                assert!(!batches_by_default(precision, device), "{precision} on {device:?}");
            }
        }
    }
}
