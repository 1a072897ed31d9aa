//! Decode-ahead: a background thread decodes and preprocesses the frames the predictor
//! will ask for next while the model computes on the current one.
//!
//! The consumer states the expected order with [`Prefetcher::hint`] (forward or reverse
//! from a start frame). The worker walks that plan, at most [`DEPTH`] frames ahead (a
//! bounded channel), so memory stays at a few frames whatever the video length. A `get`
//! for the frame the plan expected is served from the queue; any other index is decoded
//! directly and the plan continues from it in the same direction. A new hint bumps a
//! generation counter so the worker abandons the old plan; stale frames are dropped.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image::RgbImage;

use super::{preprocess, FrameSource};

/// Frames decoded ahead of the consumer (queued, plus one being decoded).
pub const DEPTH: usize = 3;

/// A frame ready for the model.
#[derive(Debug)]
pub struct Frame {
    pub index: usize,
    /// The decoded frame at the video's size (for overlays and previews).
    pub image: RgbImage,
    /// The model input, `[1, 3, S, S]` float32 on the CPU.
    pub input: tch::Tensor,
}

struct Plan {
    generation: u64,
    indices: Vec<usize>,
}

struct Ready {
    generation: u64,
    index: usize,
    frame: anyhow::Result<Frame>,
}

type Shared = Arc<Mutex<Box<dyn FrameSource>>>;

pub struct Prefetcher {
    source: Shared,
    size: u32,
    frames: usize,
    frame_size: (u32, u32),
    fps: f32,
    generation: Arc<AtomicU64>,
    cancelled: Arc<AtomicBool>,
    plans: Option<mpsc::Sender<Plan>>,
    ready: Receiver<Ready>,
    /// Indices the worker will still deliver under the current plan, in order.
    expected: VecDeque<usize>,
    /// +1 forward, -1 reverse: how to continue after a miss.
    direction: i64,
    worker: Option<JoinHandle<()>>,
    /// Frames served from the queue and decoded directly (for stats and tests).
    pub hits: usize,
    pub misses: usize,
}

fn load(source: &Shared, index: usize, size: u32) -> anyhow::Result<Frame> {
    let image = {
        let mut src = source.lock().map_err(|_| anyhow::anyhow!("frame source poisoned by a panic"))?;
        src.frame(index)?
    };
    let input = preprocess::to_model_input(&image, size);
    Ok(Frame { index, image, input })
}

fn work(source: Shared, size: u32, plans: Receiver<Plan>, out: SyncSender<Ready>, generation: Arc<AtomicU64>, cancelled: Arc<AtomicBool>) {
    while let Ok(plan) = plans.recv() {
        for index in plan.indices {
            if cancelled.load(Ordering::Relaxed) || generation.load(Ordering::Acquire) != plan.generation {
                break;
            }
            let frame = load(&source, index, size);
            if out.send(Ready { generation: plan.generation, index, frame }).is_err() {
                return;
            }
        }
    }
}

impl Prefetcher {
    /// Starts the worker; `size` is the model's input side S. Nothing is decoded until the
    /// first `hint` or `get`.
    pub fn new(source: Box<dyn FrameSource>, size: u32) -> Self {
        let frames = source.len();
        let frame_size = source.size();
        let fps = source.fps();
        let source: Shared = Arc::new(Mutex::new(source));
        let generation = Arc::new(AtomicU64::new(0));
        let cancelled = Arc::new(AtomicBool::new(false));
        let (plan_tx, plan_rx) = mpsc::channel();
        // DEPTH - 1 queued plus the one the worker holds while blocked on a full queue.
        let (ready_tx, ready_rx) = mpsc::sync_channel(DEPTH - 1);
        let worker = {
            let (source, generation, cancelled) = (source.clone(), generation.clone(), cancelled.clone());
            std::thread::Builder::new()
                .name("frame-prefetch".into())
                .spawn(move || work(source, size, plan_rx, ready_tx, generation, cancelled))
                .expect("cannot spawn the frame prefetch thread")
        };
        Prefetcher {
            source,
            size,
            frames,
            frame_size,
            fps,
            generation,
            cancelled,
            plans: Some(plan_tx),
            ready: ready_rx,
            expected: VecDeque::new(),
            direction: 1,
            worker: Some(worker),
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
        // Free a worker blocked on a full queue so it sees the new generation.
        while self.ready.try_recv().is_ok() {}
        self.expected = indices.iter().copied().collect();
        if let Some(plans) = &self.plans {
            let _ = plans.send(Plan { generation, indices });
        }
    }

    /// Stops decoding ahead (the plan is dropped); `get` still works, directly.
    pub fn cancel(&mut self) {
        self.hint(std::iter::empty());
    }

    /// Frame `index` with its model input: from the queue if the plan foresaw it, else
    /// decoded here (and the plan then continues after it in the same direction).
    pub fn get(&mut self, index: usize) -> anyhow::Result<Frame> {
        if index >= self.frames {
            // Let the source phrase the error (it names the file).
            return load(&self.source, index, self.size);
        }
        let current = self.generation.load(Ordering::Acquire);
        if let Some(pos) = self.expected.iter().take(DEPTH + 1).position(|&i| i == index) {
            for _ in 0..=pos {
                self.expected.pop_front();
            }
            while let Ok(ready) = self.ready.recv() {
                if ready.generation == current && ready.index == index {
                    self.hits += 1;
                    return ready.frame;
                }
            }
            // The worker is gone (it panicked); fall through to a direct decode.
        }
        self.misses += 1;
        let frame = load(&self.source, index, self.size);
        let next: Vec<usize> = if self.direction > 0 { (index + 1..self.frames).collect() } else { (0..index).rev().collect() };
        self.hint(next);
        frame
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.plans = None;
        while self.ready.try_recv().is_ok() {}
        if let Some(worker) = self.worker.take() {
            // The worker finishes at most the frame in hand, then sees the flag.
            while !worker.is_finished() {
                while self.ready.try_recv().is_ok() {}
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = worker.join();
        }
    }
}
