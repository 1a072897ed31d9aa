//! What the supervisor remembers across worker deaths: the journal on disk, the finished
//! masks (latest per (frame, object) wins), and how far an interrupted propagation got.
use sam2_api::events::ObjectMask;
use sam2_api::session::{Journal, ObjectId, Op};
use std::collections::BTreeMap;
use std::path::Path;

/// A new session journal holding `initial`, saved (atomically) at `path`. From then on
/// the supervisor saves it on every change, before the op is sent.
pub fn create_journal(path: &Path, initial: Vec<Op>) -> anyhow::Result<Journal> {
    let journal = Journal { version: Journal::VERSION, ops: initial };
    journal.save(path)?;
    Ok(journal)
}

/// Every mask the workers delivered; a recomputation overwrites, nothing is dropped
/// because a worker died.
#[derive(Debug, Default)]
pub struct MaskStore {
    masks: BTreeMap<(usize, ObjectId), ObjectMask>,
}

impl MaskStore {
    pub fn insert(&mut self, frame: usize, objects: &[ObjectMask]) {
        for o in objects {
            self.masks.insert((frame, o.object), o.clone());
        }
    }
    pub fn get(&self, frame: usize, object: ObjectId) -> Option<&ObjectMask> {
        self.masks.get(&(frame, object))
    }
    pub fn len(&self) -> usize {
        self.masks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }
    /// All masks in (frame, object) order.
    pub fn iter(&self) -> impl Iterator<Item = (&(usize, ObjectId), &ObjectMask)> {
        self.masks.iter()
    }
    /// The effect of a completed op on what is shown (`reset_state`, `remove_object`).
    pub fn apply_completed(&mut self, op: &Op) {
        match op {
            Op::Reset => self.masks.clear(),
            Op::RemoveObject { object } => self.masks.retain(|(_, o), _| o != object),
            _ => {}
        }
    }
}

/// How far one propagation op got, across however many workers ran it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PropagationProgress {
    /// The first frame it delivered (its effective start frame).
    pub first: Option<usize>,
    pub last: Option<usize>,
    pub delivered: usize,
}

impl PropagationProgress {
    pub fn record(&mut self, frame: usize) {
        self.first.get_or_insert(frame);
        self.last = Some(frame);
        self.delivered += 1;
    }
}

/// The last frame a propagation reaches, with the reference's semantics
/// (`propagate_in_video`: forward to min(start+max, n-1), reverse down to max(start-max, 0)).
pub fn end_frame(start: usize, reverse: bool, max_frames: Option<usize>, num_frames: usize) -> usize {
    let max = max_frames.unwrap_or(num_frames);
    if reverse {
        start.saturating_sub(max)
    } else {
        (start + max).min(num_frames.saturating_sub(1))
    }
}

/// Frames a propagation from `start` covers.
pub fn span(start: usize, reverse: bool, max_frames: Option<usize>, num_frames: usize) -> usize {
    let end = end_frame(start, reverse, max_frames, num_frames);
    if reverse {
        if start == 0 {
            0
        } else {
            start - end + 1
        }
    } else {
        end + 1 - start
    }
}

/// What to send so an interrupted propagation continues at the frame after the last one
/// delivered. `Some(op unchanged)` when nothing was delivered; `None` when it had in fact
/// finished.
pub fn resume(op: &Op, p: &PropagationProgress, num_frames: usize) -> Option<Op> {
    let Op::Propagate { start, reverse, max_frames } = op else {
        return Some(op.clone());
    };
    let (Some(first), Some(last)) = (start.or(p.first), p.last) else {
        return Some(op.clone());
    };
    let end = end_frame(first, *reverse, *max_frames, num_frames);
    if *reverse {
        if last <= end {
            return None;
        }
        // The reference skips a reverse propagation that *starts* at frame 0, so when
        // only frame 0 is left it cannot be resumed from there: resume at frame 1 instead.
        // Re-tracking it gives the same result (in reverse it attends to the frames after
        // it, which have not changed) and frame 0 follows.
        let next = (last - 1).max(1);
        Some(Op::Propagate { start: Some(next), reverse: true, max_frames: Some(next - end) })
    } else {
        if last >= end {
            return None;
        }
        let next = last + 1;
        Some(Op::Propagate { start: Some(next), reverse: false, max_frames: Some(end - next) })
    }
}

/// The journal form of a propagation cancelled after `p`: exactly the frames it ran, so a
/// full replay (model switch) recomputes what the user saw. None when nothing ran.
pub fn as_ran(op: &Op, p: &PropagationProgress) -> Option<Op> {
    let Op::Propagate { reverse, .. } = op else {
        return Some(op.clone());
    };
    let (first, last) = (p.first?, p.last?);
    Some(Op::Propagate { start: Some(first), reverse: *reverse, max_frames: Some(first.abs_diff(last)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(start: Option<usize>, reverse: bool, max: Option<usize>) -> Op {
        Op::Propagate { start, reverse, max_frames: max }
    }

    fn progress(frames: impl IntoIterator<Item = usize>) -> PropagationProgress {
        let mut p = PropagationProgress::default();
        frames.into_iter().for_each(|f| p.record(f));
        p
    }

    #[test]
    fn a_forward_propagation_resumes_after_the_last_delivered_frame() {
        // 20 frames, started at 2 (earliest prompt), died after delivering 2..=6.
        let r = resume(&prop(None, false, None), &progress(2..=6), 20).unwrap();
        assert_eq!(r, prop(Some(7), false, Some(12)));
        assert_eq!(span(7, false, Some(12), 20), 13);
        assert_eq!(span(2, false, None, 20), 18);
    }

    #[test]
    fn a_bounded_propagation_keeps_its_end_frame() {
        let r = resume(&prop(Some(3), false, Some(5)), &progress(3..=4), 100).unwrap();
        assert_eq!(r, prop(Some(5), false, Some(3))); // still ends at 8
    }

    #[test]
    fn a_reverse_propagation_resumes_below_the_last_frame() {
        let r = resume(&prop(Some(10), true, None), &progress([10, 9, 8]), 20).unwrap();
        assert_eq!(r, prop(Some(7), true, Some(7)));
    }

    #[test]
    fn a_reverse_propagation_cut_off_just_above_frame_0_still_tracks_frame_0() {
        // Died after delivering 5..=1: frame 0 is left. A reverse run *starting* at frame 0
        // covers nothing (the reference skips it), so the resumed run redoes frame 1.
        let r = resume(&prop(Some(5), true, None), &progress((1..=5).rev()), 20).unwrap();
        assert_eq!(r, prop(Some(1), true, Some(1)));
        assert_eq!(end_frame(1, true, Some(1), 20), 0);
        assert_eq!(span(1, true, Some(1), 20), 2);
        assert_eq!(span(0, true, Some(0), 20), 0, "what the old resume sent: nothing");
    }

    #[test]
    fn nothing_delivered_means_resend_and_all_delivered_means_done() {
        let op = prop(None, false, None);
        assert_eq!(resume(&op, &PropagationProgress::default(), 10), Some(op.clone()));
        assert_eq!(resume(&op, &progress(0..10), 10), None);
        assert_eq!(resume(&prop(Some(4), true, None), &progress((0..=4).rev()), 10), None);
    }

    #[test]
    fn a_cancelled_propagation_is_journaled_as_the_frames_it_ran() {
        assert_eq!(as_ran(&prop(None, false, None), &progress(2..=6)), Some(prop(Some(2), false, Some(4))));
        assert_eq!(as_ran(&prop(None, true, None), &progress([6, 5])), Some(prop(Some(6), true, Some(1))));
        assert_eq!(as_ran(&prop(None, false, None), &PropagationProgress::default()), None);
    }

    #[test]
    fn the_latest_mask_per_frame_and_object_wins_and_reset_clears() {
        use sam2_api::rle::Rle;
        let m = |o, v: u8| ObjectMask { object: o, rle: Rle::encode(&[v; 4], 2, 2), score: 1.0 };
        let mut s = MaskStore::default();
        s.insert(3, &[m(1, 0), m(2, 1)]);
        s.insert(3, &[m(1, 1)]);
        assert_eq!(s.get(3, 1).unwrap().rle.area(), 4);
        assert_eq!(s.len(), 2);
        s.apply_completed(&Op::RemoveObject { object: 2 });
        assert_eq!(s.len(), 1);
        s.apply_completed(&Op::Reset);
        assert!(s.is_empty());
    }
}
