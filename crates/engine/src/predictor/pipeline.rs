//! The frame pipeline of a propagation (no reference counterpart: the reference runs each
//! frame start to finish before the next). Two overlaps, neither of which changes a number:
//!
//! * encode-ahead ([`Lookahead`]): the frames coming next are encoded together, up to
//!   `encode_batch` per image-encoder call;
//! * the output queue ([`run`]): a frame's model work is queued (its outputs staged in the
//!   bank's RAM, the next frame attends to them; its host copies queued without blocking)
//!   and it is written out only once the next `pipeline_depth` frames' work is queued too,
//!   so the GPU never idles while the host writes results.
//!
//! What a frame is (the reference's loop body) and what writing it out means (its
//! `yield`) are the video predictor's, through [`Propagation`]; this file only orders them.
use super::memory_bank::{Entry, MemoryBank, Staged};
use crate::cuda::CudaEvent;
use crate::device::PrecisionExt;
use crate::model::Sam2Base;
use sam2_api::events::StageTimings;
use sam2_api::session::ObjectId;
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::Instant;
use tch::{Device, Tensor};

/// Frames encoded per image-encoder call during propagation: 1, or more in the CUDA
/// fast modes (the `encode_batch` knob, 0 = 4), where one frame's small kernels leave
/// most of the GPU idle. Batching changes nothing in the math, but the GPU libraries may
/// pick other kernels for other batch sizes, so exact mode stays at 1.
pub(super) fn encode_batch(model: &Sam2Base, asked: usize) -> usize {
    let default = if model.precision.autocast(model.device).is_some() { 4 } else { 1 };
    Some(asked).filter(|&n| n >= 1).unwrap_or(default)
}

/// Frames whose model work is queued before the oldest of them is written out: 1,
/// or 3 on CUDA. There the host's share of a frame (hole filling, the bank's write
/// through, resizing to video resolution, sending the masks: 3–4 ms on an H100 host)
/// comes close to the GPU's share of a tracking-only frame, and one frame in
/// `encode_batch` brings the image encoder for several; queued deeper, the host's slow
/// frames overlap the GPU's long ones instead of leaving the GPU idle. On the CPU the
/// model work runs synchronously, so a deeper queue would only delay outputs. The
/// `pipeline_depth` knob sets it (0: this default).
pub(super) fn pipeline_depth(model: &Sam2Base, asked: usize) -> usize {
    let default = if matches!(model.device, Device::Cuda(_)) { 3 } else { 1 };
    Some(asked).filter(|&n| n >= 1).unwrap_or(default)
}

/// Encode-ahead: the frames a propagation will ask for next, in order (empty outside one).
pub(super) struct Lookahead {
    frames: VecDeque<usize>,
    /// Frames per image-encoder call (see [`encode_batch`]).
    batch: usize,
}

impl Lookahead {
    pub(super) fn new(batch: usize) -> Self {
        Lookahead { frames: VecDeque::new(), batch }
    }

    /// A propagation will ask for `order`, in that order.
    pub(super) fn plan(&mut self, order: &[usize]) {
        self.frames = order.iter().copied().collect();
    }

    /// The propagation is over.
    pub(super) fn clear(&mut self) {
        self.frames.clear();
    }

    /// The model work of the frame at the front is queued: the plan moves past it.
    pub(super) fn advance(&mut self) {
        self.frames.pop_front();
    }

    /// The frames to encode with `frame`: during propagation, the coming frames that are
    /// not `encoded` yet (at most a batch); otherwise `frame` alone.
    pub(super) fn batch_for(&self, frame: usize, encoded: impl Fn(usize) -> bool) -> Vec<usize> {
        if self.frames.front() == Some(&frame) {
            self.frames.iter().copied().filter(|&f| !encoded(f)).take(self.batch).collect()
        } else {
            vec![frame]
        }
    }

    /// How many encoded frames to keep: a batch and the one before it.
    pub(super) fn keep(&self) -> usize {
        self.batch + 1
    }
}

/// A propagation frame whose model work is queued but whose outputs are not yet written.
pub(super) struct Tracked {
    pub(super) frame: usize,
    pub(super) reverse: bool,
    /// New tracking outputs, in RAM only until written out, and their host copies
    /// (queued without blocking; valid once `copied` has passed).
    pub(super) staged: Vec<Staged>,
    pub(super) host: Vec<Entry>,
    copied: Option<CudaEvent>,
    /// Objects prompted on this frame (their output is the prompt's; only marked tracked).
    pub(super) prompted: Vec<ObjectId>,
    pub(super) timings: StageTimings,
}

impl Tracked {
    pub(super) fn new(frame: usize, reverse: bool) -> Self {
        Tracked {
            frame,
            reverse,
            staged: vec![],
            host: vec![],
            copied: None,
            prompted: vec![],
            timings: StageTimings::default(),
        }
    }

    /// Queues the host copies of the staged outputs now, before the next frame's kernels,
    /// so waiting for them later does not mean waiting for the next frame too.
    pub(super) fn copy_to_host(&mut self, bank: &MemoryBank, device: Device) {
        let entries: Vec<_> =
            self.staged.iter().map(|s| bank.get(s.id, s.slot, s.frame).expect("staged entry")).collect();
        self.host = entries_to_host(&entries, device);
        self.copied = CudaEvent::record(device);
    }

    /// Waits until the host copies have landed (a no-op off CUDA).
    pub(super) fn wait_for_host_copies(&self) {
        if let Some(copied) = &self.copied {
            copied.synchronize();
        }
    }
}

/// What the pipeline asks of a predictor, one frame at a time.
pub(super) trait Propagation {
    /// What a written-out frame is handed on as.
    type Output;
    /// Queues the model work of `frame` for every object in `ids` (the body of the
    /// reference's `propagate_in_video` loop, up to its `yield`).
    fn track_frame(&mut self, ids: &[ObjectId], frame: usize, reverse: bool) -> anyhow::Result<Tracked>;
    /// The frame just tracked is queued: the encode-ahead plan moves past it.
    fn queued(&mut self);
    /// Finishes a tracked frame and hands it to `on_frame` (the reference's `yield`).
    fn write_out(
        &mut self,
        t: Tracked,
        last_out: &mut Instant,
        on_frame: &mut dyn FnMut(Self::Output) -> ControlFlow<()>,
    ) -> anyhow::Result<ControlFlow<()>>;
    /// Takes a staged output back out of the memory bank.
    fn unstage(&mut self, s: Staged);
}

/// Tracks the frames of `order`. Frame k's outputs are fetched to the host (a device
/// sync) only after the kernels of the next `depth` frames are queued, so the GPU never
/// idles while the host writes results.
pub(super) fn run<P: Propagation>(
    p: &mut P,
    ids: &[ObjectId],
    order: &[usize],
    reverse: bool,
    depth: usize,
    on_frame: &mut dyn FnMut(P::Output) -> ControlFlow<()>,
) -> anyhow::Result<()> {
    let mut pending: VecDeque<Tracked> = Default::default();
    let mut last_out = Instant::now();
    for &frame in order {
        let tracked = match p.track_frame(ids, frame, reverse) {
            Ok(t) => t,
            Err(e) => {
                // Still deliver the frames that were finished before the failure.
                let _ = write_out_until(p, &mut pending, 0, &mut last_out, on_frame);
                return Err(e);
            }
        };
        pending.push_back(tracked);
        p.queued();
        if write_out_until(p, &mut pending, depth, &mut last_out, on_frame)?.is_break() {
            return Ok(());
        }
    }
    write_out_until(p, &mut pending, 0, &mut last_out, on_frame).map(|_| ())
}

/// Writes out the oldest queued frames until `keep` remain. After a cancel or an
/// error the frames still queued are forgotten: they never happened.
pub(super) fn write_out_until<P: Propagation>(
    p: &mut P,
    pending: &mut VecDeque<Tracked>,
    keep: usize,
    last_out: &mut Instant,
    on_frame: &mut dyn FnMut(P::Output) -> ControlFlow<()>,
) -> anyhow::Result<ControlFlow<()>> {
    while pending.len() > keep {
        let oldest = pending.pop_front().expect("pending frame");
        let written = p.write_out(oldest, last_out, on_frame);
        if !matches!(written, Ok(ControlFlow::Continue(()))) {
            forget(p, std::mem::take(pending));
            return written;
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Undoes queued frames that will not be written out, newest first (each one's
/// staging remembers what the bank held before it).
fn forget(p: &mut impl Propagation, pending: VecDeque<Tracked>) {
    for t in pending.into_iter().rev() {
        t.staged.into_iter().rev().for_each(|s| p.unstage(s));
    }
}

/// The host copies of a frame's outputs, queued without blocking. On a GPU with several
/// objects each field of all of them is joined on the device and copied once (four
/// copies a frame rather than four per object: each copy is a host call, a pinned buffer
/// and a DMA of its own); every object's host entry is then its row of the joined copy,
/// one block per field, so a kept mask does not hold the memory features' block alive.
fn entries_to_host(entries: &[std::rc::Rc<Entry>], device: Device) -> Vec<Entry> {
    let Some(first) = entries.first() else {
        return vec![];
    };
    let alike = |e: &Entry| {
        e.maskmem.as_ref().map(|m| m.kind()) == first.maskmem.as_ref().map(|m| m.kind())
            && e.pred_masks.kind() == first.pred_masks.kind()
            && e.obj_ptr.kind() == first.obj_ptr.kind()
            && e.score.kind() == first.score.kind()
    };
    let joinable =
        entries.len() > 1 && device != Device::Cpu && entries.iter().all(|e| e.maskmem.is_some() && alike(e));
    if !joinable {
        return entries
            .iter()
            .map(|e| Entry {
                maskmem: e.maskmem.as_ref().map(to_host),
                pred_masks: to_host(&e.pred_masks),
                obj_ptr: to_host(&e.obj_ptr),
                score: to_host(&e.score),
            })
            .collect();
    }
    let rows = |field: &dyn Fn(&Entry) -> &Tensor| -> Vec<Tensor> {
        let joined = to_host(&Tensor::cat(&entries.iter().map(|e| field(e)).collect::<Vec<_>>(), 0));
        (0..entries.len() as i64).map(|i| joined.narrow(0, i, 1)).collect()
    };
    let maskmem = rows(&|e| e.maskmem.as_ref().expect("joinable entries have memories"));
    let pred_masks = rows(&|e| &e.pred_masks);
    let obj_ptr = rows(&|e| &e.obj_ptr);
    let score = rows(&|e| &e.score);
    maskmem
        .into_iter()
        .zip(pred_masks)
        .zip(obj_ptr.into_iter().zip(score))
        .map(|((m, p), (o, s))| Entry { maskmem: Some(m), pred_masks: p, obj_ptr: o, score: s })
        .collect()
}

/// A host copy queued on the stream without blocking (into page-locked memory on a
/// GPU; the tensor itself on the CPU).
fn to_host(t: &Tensor) -> Tensor {
    t.to_device_(Device::Cpu, t.kind(), true, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use tch::Kind;

    fn entry(seed: i64, with_memory: bool) -> Rc<Entry> {
        let t = |shape: &[i64]| {
            Tensor::arange(shape.iter().product::<i64>(), (Kind::Float, Device::Cpu)).reshape(shape) + seed as f64
        };
        Rc::new(Entry {
            maskmem: with_memory.then(|| t(&[1, 4, 2, 2]).to_kind(Kind::BFloat16)),
            pred_masks: t(&[1, 1, 8, 8]),
            obj_ptr: t(&[1, 16]),
            score: t(&[1, 1]),
        })
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.size() == b.size() && a.kind() == b.kind() && a.equal(b)
    }

    /// The joined copies (taken on a GPU; here the device is only what the choice reads)
    /// give every object exactly its own values, field by field, in the objects' order.
    #[test]
    fn joined_host_copies_give_each_object_its_own_rows() {
        let entries: Vec<_> = (0..5).map(|i| entry(1000 * i, true)).collect();
        for device in [Device::Cuda(0), Device::Cpu] {
            let host = entries_to_host(&entries, device);
            assert_eq!(host.len(), entries.len());
            for (h, e) in host.iter().zip(&entries) {
                assert!(same(h.maskmem.as_ref().unwrap(), e.maskmem.as_ref().unwrap()));
                assert!(same(&h.pred_masks, &e.pred_masks));
                assert!(same(&h.obj_ptr, &e.obj_ptr));
                assert!(same(&h.score, &e.score));
            }
        }
    }

    /// A frame where every object was prompted stages nothing: nothing to copy.
    #[test]
    fn no_entries_give_no_host_copies() {
        assert!(entries_to_host(&[], Device::Cuda(0)).is_empty());
    }

    /// Entries that cannot be joined (one without memory features) are copied one by one,
    /// each still its own.
    #[test]
    fn entries_without_memories_are_copied_one_by_one() {
        let entries = vec![entry(0, true), entry(7, false), entry(9, true)];
        let host = entries_to_host(&entries, Device::Cuda(0));
        assert!(host[1].maskmem.is_none());
        for (h, e) in host.iter().zip(&entries) {
            assert!(same(&h.pred_masks, &e.pred_masks) && same(&h.score, &e.score));
        }
    }
}
