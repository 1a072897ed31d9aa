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
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
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

/// The decoder: walks each plan in order until a newer plan replaces it.
fn decoder(
    source: Shared,
    plans: Receiver<Plan>,
    jobs: SyncSender<Job>,
    generation: Arc<AtomicU64>,
    cancelled: Arc<AtomicBool>,
) {
    while let Ok(plan) = plans.recv() {
        for index in plan.indices {
            if cancelled.load(Ordering::Relaxed) || generation.load(Ordering::Acquire) != plan.generation {
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
fn resizer(
    jobs: Arc<Mutex<Receiver<Job>>>,
    out: SyncSender<Ready>,
    prep: Prep,
    generation: Arc<AtomicU64>,
    cancelled: Arc<AtomicBool>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if cancelled.load(Ordering::Relaxed) {
            return;
        }
        if generation.load(Ordering::Acquire) != job.generation {
            continue;
        }
        let frame = job.image.map(|image| prep.frame(job.index, image));
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
    generation: Arc<AtomicU64>,
    cancelled: Arc<AtomicBool>,
    plans: Option<mpsc::Sender<Plan>>,
    ready: Receiver<Ready>,
    /// Finished frames of the current plan that arrived before they were asked for.
    early: BTreeMap<usize, anyhow::Result<Frame>>,
    /// Indices the pipeline will still deliver under the current plan, in order.
    expected: VecDeque<usize>,
    /// How far into `expected` a `get` may look and still count as foreseen.
    window: usize,
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
        let generation = Arc::new(AtomicU64::new(0));
        let cancelled = Arc::new(AtomicBool::new(false));
        let (plan_tx, plan_rx) = mpsc::channel();
        let (job_tx, job_rx) = mpsc::sync_channel(n);
        let (ready_tx, ready_rx) = mpsc::sync_channel(DEPTH);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut threads = Vec::with_capacity(n + 1);
        {
            let (source, generation, cancelled) = (source.clone(), generation.clone(), cancelled.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("frame-decode".into())
                    .spawn(move || decoder(source, plan_rx, job_tx, generation, cancelled))
                    .expect("cannot spawn the frame decode thread"),
            );
        }
        for i in 0..n {
            let (jobs, out, generation, cancelled) =
                (job_rx.clone(), ready_tx.clone(), generation.clone(), cancelled.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("frame-resize-{i}"))
                    .spawn(move || resizer(jobs, out, prep, generation, cancelled))
                    .expect("cannot spawn a frame resize thread"),
            );
        }
        Prefetcher {
            source,
            prep,
            frames,
            frame_size,
            fps,
            generation,
            cancelled,
            plans: Some(plan_tx),
            ready: ready_rx,
            early: BTreeMap::new(),
            expected: VecDeque::new(),
            // Everything that can be in flight: queued, being resized, waiting.
            window: DEPTH + 2 * n + 1,
            direction: 1,
            threads,
            hits: 0,
            misses: 0,
        }
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
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        // Free stages blocked on a full queue so they see the new generation.
        while self.ready.try_recv().is_ok() {}
        self.early.clear();
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
        let current = self.generation.load(Ordering::Acquire);
        if let Some(pos) = self.expected.iter().take(self.window).position(|&i| i == index) {
            // Frames planned before this one will not be asked for any more.
            let skipped: Vec<usize> = self.expected.drain(..=pos).collect();
            for i in &skipped[..skipped.len() - 1] {
                self.early.remove(i);
            }
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
                if self.expected.iter().take(self.window).any(|&i| i == ready.index) {
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
        self.cancelled.store(true, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.plans = None;
        // Stages finish at most the frame in hand, then see the flag (or a closed channel).
        for t in std::mem::take(&mut self.threads) {
            while !t.is_finished() {
                while self.ready.try_recv().is_ok() {}
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = t.join();
        }
    }
}
