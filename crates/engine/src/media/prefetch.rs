//! Decode-ahead: frames the predictor will ask for next are decoded and preprocessed in the
//! background while the model computes on the current one.
//!
//! Two stages, so that a fast GPU is never waiting on one CPU core: one decoder thread
//! reads the source in plan order (a video stream must be read forwards, never racing
//! itself), and a small pool resizes the decoded frames in parallel (the bicubic resize
//! to 1024² is the expensive part). Results can finish out of order; `get` sorts them out.
//!
//! The consumer states the expected order with [`Prefetcher::hint`] (forward or reverse
//! from a start frame). The pipeline runs at most a few frames ahead (bounded channels),
//! so memory stays at a handful of frames whatever the video length. A `get` for a frame
//! the plan foresaw is served from the pipeline; any other index is decoded directly and
//! the plan continues from it in the same direction. A new hint bumps a generation
//! counter so the stages abandon the old plan; stale frames are dropped.
//!
//! The decoder never runs more than [`Prefetcher::most_ahead`] frames past the last one
//! taken. Bounded channels alone do not bound it: frames that finish before the one asked
//! for wait in `get`'s reorder buffer, which frees the channels, so a resizer stalled on
//! one frame would let the others race arbitrarily far ahead (and frames that far ahead
//! could not be kept, so a later `get` would wait for a frame already dropped).
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use image::RgbImage;

use super::{preprocess, FrameSource};

/// Frames waiting for the consumer, beyond those being resized.
pub const DEPTH: usize = 3;

/// A frame ready for the model.
#[derive(Debug)]
pub struct Frame {
    pub index: usize,
    /// The decoded frame at the video's size (for overlays and previews).
    pub image: RgbImage,
    /// The resized model-input bytes, `[1, S, S, 3]` uint8 on the CPU — in page-locked
    /// memory when the prefetcher serves a GPU, so the upload does not stall the stream.
    /// [`preprocess::normalize`] turns them into the model input on the device.
    pub pixels: tch::Tensor,
}

impl Frame {
    /// The normalised model input `[1, 3, S, S]` float32 on the CPU.
    pub fn input(&self) -> tch::Tensor {
        preprocess::normalize(&self.pixels)
    }
}

struct Plan {
    generation: u64,
    indices: Vec<usize>,
}

struct Job {
    generation: u64,
    index: usize,
    image: anyhow::Result<Decoded>,
}

/// A decoded frame, and the same frame already at the model's side where the source
/// scales it so itself (`FrameSource::scale_for_model`).
type Decoded = (RgbImage, Option<RgbImage>);

struct Ready {
    generation: u64,
    index: usize,
    frame: anyhow::Result<Frame>,
}

type Shared = Arc<Mutex<Box<dyn FrameSource>>>;

/// Where the consumer is: the current plan, how many of its frames it has taken, and
/// whether the prefetcher is being dropped. The stages read it; the decoder also waits
/// on it for room ahead.
#[derive(Default)]
struct Progress {
    state: Mutex<Position>,
    moved: Condvar,
}

#[derive(Default, Clone, Copy)]
struct Position {
    generation: u64,
    taken: usize,
    cancelled: bool,
}

impl Progress {
    fn now(&self) -> Position {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Position)) -> Position {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state);
        self.moved.notify_all();
        *state
    }

    /// Waits until the plan's `position`-th frame is at most `ahead` past the last one
    /// taken; false once the plan is replaced or everything is cancelled.
    fn wait_for_room(&self, generation: u64, position: usize, ahead: usize) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.cancelled || state.generation != generation {
                return false;
            }
            if position < state.taken + ahead {
                return true;
            }
            state = self.moved.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// How the pixels are prepared: the model side, the threads each frame's resize is split
/// over and, for a GPU, the device to pin for.
#[derive(Clone, Copy)]
struct Prep {
    size: u32,
    resize_threads: usize,
    pin_for: Option<tch::Device>,
}

impl Prep {
    fn frame(&self, index: usize, (image, scaled): Decoded) -> Frame {
        let pixels = match scaled {
            Some(s) if s.dimensions() == (self.size, self.size) => {
                tch::Tensor::from_slice(s.as_raw()).reshape([1, self.size as i64, self.size as i64, 3])
            }
            _ => preprocess::to_model_pixels_on(&image, self.size, self.resize_threads),
        };
        let pixels = match self.pin_for {
            // Pinning needs a working CUDA runtime; if it fails, pageable memory still works.
            Some(dev) => pixels.f_pin_memory(dev).unwrap_or(pixels),
            None => pixels,
        };
        Frame { index, image, pixels }
    }
}

fn decode(source: &Shared, index: usize) -> anyhow::Result<Decoded> {
    let mut src = source.lock().map_err(|_| anyhow::anyhow!("frame source poisoned by a panic"))?;
    let image = src.frame(index)?;
    Ok((image, src.model_frame(index)?))
}

fn load(source: &Shared, index: usize, prep: Prep) -> anyhow::Result<Frame> {
    Ok(prep.frame(index, decode(source, index)?))
}

/// The decoder: walks each plan in order, at most `ahead` frames past the consumer,
/// until a newer plan replaces it.
fn decoder(source: Shared, plans: Receiver<Plan>, jobs: SyncSender<Job>, progress: Arc<Progress>, ahead: usize) {
    while let Ok(plan) = plans.recv() {
        for (position, index) in plan.indices.into_iter().enumerate() {
            if !progress.wait_for_room(plan.generation, position, ahead) {
                break;
            }
            let image = decode(&source, index);
            if jobs.send(Job { generation: plan.generation, index, image }).is_err() {
                return;
            }
        }
    }
}

/// A resizer: takes decoded frames from the shared queue, skipping stale ones.
fn resizer(jobs: Arc<Mutex<Receiver<Job>>>, out: SyncSender<Ready>, prep: Prep, progress: Arc<Progress>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let now = progress.now();
        if now.cancelled {
            return;
        }
        if now.generation != job.generation {
            continue;
        }
        // A panic here (libtorch failing to allocate the pixels) must not lose the frame:
        // the other resizers keep the queue open, so `get` would wait for it forever.
        let index = job.index;
        let frame = job.image.and_then(|image| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prep.frame(index, image)))
                .map_err(|_| anyhow::anyhow!("frame {index}: preparing the model input panicked"))
        });
        if out.send(Ready { generation: job.generation, index: job.index, frame }).is_err() {
            return;
        }
    }
}

/// Resizer threads: `configured` (the `prefetch_threads` knob), or for 0 a quarter of the
/// machine, at most 4 (each also splits its frame's rows, see `resize_threads`).
pub fn resizers(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).clamp(1, 4))
}

pub struct Prefetcher {
    source: Shared,
    prep: Prep,
    frames: usize,
    frame_size: (u32, u32),
    fps: f32,
    progress: Arc<Progress>,
    plans: Option<mpsc::Sender<Plan>>,
    ready: Receiver<Ready>,
    /// Finished frames of the current plan that arrived before they were asked for.
    early: BTreeMap<usize, anyhow::Result<Frame>>,
    /// Frames in the current plan, and the indices the pipeline will still deliver
    /// under it, in order (so `planned - expected.len()` have been taken or skipped).
    planned: usize,
    expected: VecDeque<usize>,
    /// How far past the last frame taken the decoder may run; also how far into
    /// `expected` a `get` may look and still count as foreseen.
    ahead: usize,
    /// +1 forward, -1 reverse: how to continue after a miss.
    direction: i64,
    threads: Vec<JoinHandle<()>>,
    /// Frames served from the pipeline and decoded directly (for stats and tests).
    pub hits: usize,
    pub misses: usize,
}

impl Prefetcher {
    /// Starts the pipeline for a CPU model; `size` is the model's input side S. Nothing is
    /// decoded until the first `hint` or `get`.
    pub fn new(source: Box<dyn FrameSource>, size: u32) -> Self {
        Self::for_device(source, size, tch::Device::Cpu)
    }

    /// As `new`, for a model on `device`: for a GPU the pixels land in page-locked memory.
    pub fn for_device(source: Box<dyn FrameSource>, size: u32, device: tch::Device) -> Self {
        Self::with_threads(source, size, device, 0, 0)
    }

    /// As `for_device`, with `n` resizer threads.
    pub fn with_resizers(source: Box<dyn FrameSource>, size: u32, device: tch::Device, n: usize) -> Self {
        Self::with_threads(source, size, device, n.max(1), 0)
    }

    /// As `for_device`, with `resizers` resizer threads each splitting a frame over
    /// `resize_threads` (the `prefetch_threads` and `resize_threads` knobs; 0: the machine's
    /// defaults).
    pub fn with_threads(
        source: Box<dyn FrameSource>,
        size: u32,
        device: tch::Device,
        resizers: usize,
        resize_threads: usize,
    ) -> Self {
        let n = self::resizers(resizers);
        let prep = Prep {
            size,
            resize_threads: preprocess::resize_threads(resize_threads),
            pin_for: matches!(device, tch::Device::Cuda(_)).then_some(device),
        };
        let frames = source.len();
        let frame_size = source.size();
        let fps = source.fps();
        let source: Shared = Arc::new(Mutex::new(source));
        let progress = Arc::new(Progress::default());
        let ahead = Self::most_ahead(n);
        let (plan_tx, plan_rx) = mpsc::channel();
        let (job_tx, job_rx) = mpsc::sync_channel(n);
        let (ready_tx, ready_rx) = mpsc::sync_channel(DEPTH);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut threads = Vec::with_capacity(n + 1);
        {
            let (source, progress) = (source.clone(), progress.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("frame-decode".into())
                    .spawn(move || decoder(source, plan_rx, job_tx, progress, ahead))
                    .expect("cannot spawn the frame decode thread"),
            );
        }
        for i in 0..n {
            let (jobs, out, progress) = (job_rx.clone(), ready_tx.clone(), progress.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("frame-resize-{i}"))
                    .spawn(move || resizer(jobs, out, prep, progress))
                    .expect("cannot spawn a frame resize thread"),
            );
        }
        Prefetcher {
            source,
            prep,
            frames,
            frame_size,
            fps,
            progress,
            plans: Some(plan_tx),
            ready: ready_rx,
            early: BTreeMap::new(),
            planned: 0,
            expected: VecDeque::new(),
            ahead,
            direction: 1,
            threads,
            hits: 0,
            misses: 0,
        }
    }

    /// How far the decoder may run past the last frame taken with `resizers` resizer
    /// threads: enough to fill every stage (queued, being resized, waiting) twice over.
    pub fn most_ahead(resizers: usize) -> usize {
        DEPTH + 2 * resizers.max(1) + 1
    }

    /// Finished frames waiting in the reorder buffer for their `get` (bounded by
    /// `most_ahead`, whatever a stage stalls on).
    pub fn frames_held(&self) -> usize {
        self.early.len()
    }

    pub fn len(&self) -> usize {
        self.frames
    }
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }
    pub fn frame_size(&self) -> (u32, u32) {
        self.frame_size
    }
    pub fn fps(&self) -> f32 {
        self.fps
    }

    /// The order the next `get`s will come in. Replaces any earlier plan; indices past
    /// the end are dropped.
    pub fn hint(&mut self, next: impl IntoIterator<Item = usize>) {
        let indices: Vec<usize> = next.into_iter().take_while(|&i| i < self.frames).take(self.frames).collect();
        if indices.len() >= 2 {
            self.direction = if indices[1] >= indices[0] { 1 } else { -1 };
        }
        let generation = self.progress.update(|p| (p.generation, p.taken) = (p.generation + 1, 0)).generation;
        // Free stages blocked on a full queue so they see the new generation.
        while self.ready.try_recv().is_ok() {}
        self.early.clear();
        self.planned = indices.len();
        self.expected = indices.iter().copied().collect();
        if let Some(plans) = &self.plans {
            let _ = plans.send(Plan { generation, indices });
        }
    }

    /// Stops decoding ahead (the plan is dropped); `get` still works, directly.
    pub fn cancel(&mut self) {
        self.hint(std::iter::empty());
    }

    /// Frame `index` with its model input: from the pipeline if the plan foresaw it,
    /// else decoded here (and the plan then continues after it in the same direction).
    pub fn get(&mut self, index: usize) -> anyhow::Result<Frame> {
        if index >= self.frames {
            // Let the source phrase the error (it names the file).
            return load(&self.source, index, self.prep);
        }
        let current = self.progress.now().generation;
        if let Some(pos) = self.expected.iter().take(self.ahead).position(|&i| i == index) {
            // Frames planned before this one will not be asked for any more.
            let skipped: Vec<usize> = self.expected.drain(..=pos).collect();
            for i in &skipped[..skipped.len() - 1] {
                self.early.remove(i);
            }
            let taken = self.planned - self.expected.len();
            self.progress.update(|p| p.taken = taken);
            if let Some(frame) = self.early.remove(&index) {
                self.hits += 1;
                return frame;
            }
            while let Ok(ready) = self.ready.recv() {
                if ready.generation != current {
                    continue;
                }
                if ready.index == index {
                    self.hits += 1;
                    return ready.frame;
                }
                // The decoder stays within `ahead` of `taken`, so a frame of this plan is
                // either still expected there or was skipped.
                if self.expected.iter().take(self.ahead).any(|&i| i == ready.index) {
                    self.early.insert(ready.index, ready.frame);
                }
            }
            // Every stage is gone (one panicked); fall through to a direct decode.
        }
        self.misses += 1;
        let frame = load(&self.source, index, self.prep);
        let next: Vec<usize> =
            if self.direction > 0 { (index + 1..self.frames).collect() } else { (0..index).rev().collect() };
        self.hint(next);
        frame
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Wakes a decoder waiting for room; the stages finish at most the frame in hand.
        self.progress.update(|p| p.cancelled = true);
        // Closed channels end the rest: no plans for the decoder, nobody to take a resizer's
        // frame (a resizer blocked on the full queue returns at once).
        self.plans = None;
        drop(std::mem::replace(&mut self.ready, mpsc::sync_channel(0).1));
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}
