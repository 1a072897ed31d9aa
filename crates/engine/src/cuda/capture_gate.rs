//! When a CUDA graph is worth capturing for a key (an input shape): once the shape
//! repeats, so the growing shapes of a video's first frames (the memory bank filling)
//! run eagerly and the steady state replays. Pure bookkeeping, no CUDA: a capture costs a
//! warm-up run, the capture and a private memory pool, wasted on a shape used once.
//!
//! Two ways to say "repeats". By default a key is ready on its second consecutive use
//! (the image encoder, one object's tracking step: one call of the cache per frame). A
//! cache told where frames begin ([`CaptureGate::next_frame`]) makes a key ready once it
//! was used on the previous frame: a batched frame tracks its objects in one call per
//! group of equal memory shape, and with two groups (an object prompted on more frames
//! than the others keeps one more memory for good) consecutive calls alternate between
//! two keys, so neither would ever repeat back to back and both would stay eager.
pub(crate) struct CaptureGate<K> {
    last: Option<K>,
    /// (keys used on the previous frame, keys used on this one), once frames are marked.
    frames: Option<(Vec<K>, Vec<K>)>,
}

impl<K: PartialEq + Clone> CaptureGate<K> {
    pub(crate) fn new() -> Self {
        CaptureGate { last: None, frames: None }
    }

    /// Whether the next use of `key` should be captured (or replayed) rather than run eagerly.
    pub(crate) fn ready(&self, key: &K) -> bool {
        match &self.frames {
            Some((previous, _)) => previous.contains(key),
            None => self.last.as_ref() == Some(key),
        }
    }

    /// `key` was used, whichever way it ran.
    pub(crate) fn used(&mut self, key: K) {
        if let Some((_, now)) = &mut self.frames {
            if !now.contains(&key) {
                now.push(key.clone());
            }
        }
        self.last = Some(key);
    }

    /// A new frame begins: the keys of the one that ended are the ones that repeat.
    pub(crate) fn next_frame(&mut self) {
        let (previous, now) = self.frames.get_or_insert_with(|| (vec![], vec![]));
        *previous = std::mem::take(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `frames` (each the keys of its calls, in order) through a gate marked per
    /// frame (or not) and returns, per call, whether it was ready.
    fn run(frames: &[&[u32]], per_frame: bool) -> Vec<Vec<bool>> {
        let mut gate = CaptureGate::new();
        frames
            .iter()
            .map(|keys| {
                if per_frame {
                    gate.next_frame();
                }
                keys.iter()
                    .map(|&k| {
                        let ready = gate.ready(&k);
                        gate.used(k);
                        ready
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn without_frames_a_key_is_ready_on_its_second_consecutive_use() {
        // A bank filling (shapes 1, 2, 3), then the steady shape 7.
        assert_eq!(
            run(&[&[1], &[2], &[3], &[7], &[7], &[7]], false),
            [[false], [false], [false], [false], [true], [true]]
        );
        // Two keys alternating never repeat back to back: why frames exist.
        assert_eq!(run(&[&[7, 8], &[7, 8], &[7, 8]], false), [[false, false], [false, false], [false, false]]);
    }

    #[test]
    fn with_frames_every_group_shape_seen_on_the_previous_frame_is_ready() {
        // Two groups of other shapes on every frame (15 objects with 7 memories, one with
        // 8): both ready from the second steady frame on.
        assert_eq!(run(&[&[7, 8], &[7, 8], &[7, 8]], true), [[false, false], [true, true], [true, true]]);
        // Two groups of one shape within a frame while the bank fills: the second call
        // of a frame is not a repeat, so no capture for a shape that never comes back.
        assert_eq!(
            run(&[&[1, 1], &[2, 2], &[3, 3], &[3, 3]], true),
            [[false, false], [false, false], [false, false], [true, true]]
        );
        // A shape that skips a frame waits for two frames in a row again.
        assert_eq!(run(&[&[7], &[8], &[7], &[7]], true), [[false], [false], [false], [true]]);
    }
}
