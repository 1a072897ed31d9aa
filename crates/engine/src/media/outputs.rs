//! The result directory of `segment --out DIR`, written as masks arrive:
//!
//! * `masks.json` — video info, model label and, per frame, every object's score and COCO
//!   compressed RLE (pycocotools-compatible). Written last, atomically, by `finish`. A
//!   non-finite score (a NaN from the model) is `"score": null` with `"score_nonfinite":
//!   "NaN"` (or "inf"/"-inf"); its mask is empty, as the reference's `logits > 0` makes it.
//! * `annotations/<frame:05>.png` — DAVIS-style palette PNGs (index = object id, 0 =
//!   background). Where objects overlap the smaller id wins, as in the reference's
//!   `tools/vos_inference.py` (it paints ids in descending order).
//! * `logits/<object>/<frame:05>.npy` — float32 H×W mask logits, when asked for.
//!
//! Every file is written with temp + rename. A (frame, object) may be reported more than
//! once (a later propagation overwrites an earlier one): the latest report wins
//! everywhere. Only the RLEs are kept in memory (a few KB a frame); a frame's PNG is
//! written once the stream has moved on to another frame, and again if it changes later.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

use super::{npy, palette};
use sam2_api::rle::Rle;

pub use sam2_api::masks_json::EngineInfo;
pub use sam2_api::masks_json::VideoInfo;
use sam2_api::masks_json::{FrameEntry, MasksJson, ObjectEntry};

pub struct OutputWriter {
    dir: PathBuf,
    video: VideoInfo,
    model: String,
    engine: Option<EngineInfo>,
    write_logits: bool,
    /// frame -> object -> (score, mask)
    masks: BTreeMap<usize, BTreeMap<u32, (f32, Rle)>>,
    /// Frames whose annotation PNG is missing or stale.
    dirty: BTreeSet<usize>,
    current: Option<usize>,
    /// Write no PNG before `finish` (`defer_annotations`).
    deferred: bool,
}

/// Threads writing annotation PNGs at once: the cores, at most 8 (the disk's flushes, not
/// the cores, bound it beyond).
fn annotation_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

/// Row-major 0/1 mask from logits, thresholded at 0 as the reference does
/// (`out_mask_logits > 0.0`).
pub fn binarize(logits: &[f32]) -> Vec<u8> {
    logits.iter().map(|&v| (v > 0.0) as u8).collect()
}

/// A `[H, W]` float tensor (any device, any float kind) as row-major f32 on the host.
pub fn logits_to_vec(logits: &tch::Tensor, height: u32, width: u32) -> anyhow::Result<Vec<f32>> {
    let size = logits.size();
    let expected = [height as i64, width as i64];
    let squeezed: Vec<i64> = size.iter().copied().filter(|&d| d != 1).collect();
    if size.iter().product::<i64>() != expected[0] * expected[1] || (squeezed.len() == 2 && squeezed != expected) {
        bail!("mask logits of shape {size:?} do not match the {width}x{height} video");
    }
    let host = logits.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous().view([-1]);
    Vec::<f32>::try_from(&host).map_err(|e| anyhow!("cannot read mask logits: {e}"))
}

impl OutputWriter {
    /// Creates `dir` (and its `annotations/`); nothing else is written yet.
    pub fn new(dir: &Path, video: VideoInfo, model_label: &str, write_logits: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("annotations"))
            .map_err(|e| anyhow!("{}: cannot create output directory: {}", dir.display(), super::io_reason(&e)))?;
        Ok(OutputWriter {
            dir: dir.to_path_buf(),
            video,
            model: model_label.to_string(),
            engine: None,
            write_logits,
            masks: BTreeMap::new(),
            dirty: BTreeSet::new(),
            current: None,
            deferred: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the annotation PNGs only in `finish`, all at once on several threads: for a
    /// caller that adds every mask just before finishing (a job's outputs from the
    /// supervisor's store), where writing them one by one as frames go by would put
    /// the PNG encoding and each file's flush to the disk end to end (0.7 s for 200
    /// frames of 960x540 on an H100 host, longer than tracking them).
    pub fn defer_annotations(&mut self) {
        self.deferred = true;
    }

    /// Records the engine that made the masks (masks.json's `engine`).
    pub fn set_engine(&mut self, engine: EngineInfo) {
        self.engine = Some(engine);
    }

    /// Records object `object`'s mask on `frame`: `mask_logits` is `[H, W]` float at the
    /// video's size; `score` is the object score the engine reports.
    pub fn add(&mut self, frame: usize, object: u32, mask_logits: &tch::Tensor, score: f32) -> anyhow::Result<()> {
        let (w, h) = (self.video.width, self.video.height);
        let logits = logits_to_vec(mask_logits, h, w).map_err(|e| anyhow!("frame {frame}, object {object}: {e}"))?;
        self.add_logits(frame, object, &logits, score)
    }

    /// As [`add`](Self::add), with the logits already on the host (row-major H×W).
    pub fn add_logits(&mut self, frame: usize, object: u32, logits: &[f32], score: f32) -> anyhow::Result<()> {
        let (w, h) = (self.video.width, self.video.height);
        sam2_api::limits::check_object_id(object).map_err(|e| anyhow!(e))?;
        if frame >= self.video.frames {
            bail!("frame {frame} out of range ({} frames)", self.video.frames);
        }
        if logits.len() != (w * h) as usize {
            bail!("frame {frame}, object {object}: {} logits for a {w}x{h} video", logits.len());
        }
        let rle = Rle::encode(&binarize(logits), h as usize, w as usize);
        if self.write_logits {
            let path = self.dir.join("logits").join(object.to_string()).join(format!("{frame:05}.npy"));
            sam2_api::util::atomic_write(&path, &npy::f32_array(&[h as usize, w as usize], logits))?;
        }
        self.add_rle(frame, object, rle, score)
    }

    /// Records a mask that is already RLE-encoded at the video's size (what the
    /// supervisor keeps of every finished frame).
    pub fn add_rle(&mut self, frame: usize, object: u32, rle: Rle, score: f32) -> anyhow::Result<()> {
        let (w, h) = (self.video.width, self.video.height);
        sam2_api::limits::check_object_id(object).map_err(|e| anyhow!(e))?;
        if frame >= self.video.frames {
            bail!("frame {frame} out of range ({} frames)", self.video.frames);
        }
        if rle.size != [h, w] {
            bail!("frame {frame}, object {object}: mask of {:?} for a {w}x{h} video", rle.size);
        }
        self.masks.entry(frame).or_default().insert(object, (score, rle));
        if self.current != Some(frame) && !self.deferred {
            self.flush_annotations()?;
            self.current = Some(frame);
        }
        self.dirty.insert(frame);
        Ok(())
    }

    /// Writes the PNGs of every changed frame except the one still being filled, on up to
    /// `annotation_threads()` threads (each file is encoded and flushed on its own).
    fn flush_annotations(&mut self) -> anyhow::Result<()> {
        let pending: Vec<usize> = self.dirty.iter().copied().filter(|f| Some(*f) != self.current).collect();
        let threads = annotation_threads().min(pending.len());
        if threads <= 1 {
            for &frame in &pending {
                self.write_annotation(frame)?;
            }
        } else {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let this = &*self;
            let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&frame) = pending.get(k) else { return Ok(()) };
                            this.write_annotation(frame)?;
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_else(|_| Err(anyhow!("a PNG writer panicked"))))
                    .collect()
            });
            results.into_iter().collect::<anyhow::Result<()>>()?;
        }
        for frame in pending {
            self.dirty.remove(&frame);
        }
        Ok(())
    }

    /// The DAVIS index image of one frame.
    pub fn annotation(&self, frame: usize) -> anyhow::Result<Vec<u8>> {
        let (w, h) = (self.video.width as usize, self.video.height as usize);
        let mut index = vec![0u8; w * h];
        if let Some(objects) = self.masks.get(&frame) {
            // Descending ids, so the smallest id is painted last and wins overlaps.
            for (&id, (_, rle)) in objects.iter().rev() {
                let mask = rle.decode().map_err(|e| anyhow!("frame {frame}, object {id}: {e}"))?;
                for (dst, &m) in index.iter_mut().zip(&mask) {
                    if m != 0 {
                        *dst = id as u8;
                    }
                }
            }
        }
        Ok(index)
    }

    fn write_annotation(&self, frame: usize) -> anyhow::Result<()> {
        let index = self.annotation(frame)?;
        let path = self.dir.join("annotations").join(format!("{frame:05}.png"));
        palette::write_indexed_png(&path, &index, self.video.width, self.video.height)
    }

    /// The latest mask of (frame, object), as recorded.
    pub fn mask(&self, frame: usize, object: u32) -> Option<&(f32, Rle)> {
        self.masks.get(&frame)?.get(&object)
    }

    /// Writes the remaining PNGs, then `masks.json` (atomically, last, so a reader that
    /// sees it sees a complete directory). Returns its path.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        self.current = None;
        self.flush_annotations()?;
        let doc = MasksJson {
            video: self.video.clone(),
            model: self.model.clone(),
            engine: self.engine.clone(),
            frames: self
                .masks
                .iter()
                .map(|(&frame, objects)| FrameEntry {
                    frame,
                    objects: objects
                        .iter()
                        .map(|(&id, (score, rle))| ObjectEntry::new(id, *score, rle.clone()))
                        .collect(),
                })
                .collect(),
        };
        let path = self.dir.join("masks.json");
        let text = serde_json::to_vec(&doc)?;
        sam2_api::util::atomic_write(&path, &text)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of two overlapping objects, some reported twice (a later pass overwrites).
    fn fill(w: &mut OutputWriter, frames: usize) {
        let (width, height) = (24usize, 10usize);
        let rect = |x0: usize, f: usize| {
            let mut m = vec![0u8; width * height];
            for y in 2..8 {
                for x in (x0 + f % 5)..(x0 + f % 5 + 9) {
                    m[y * width + x] = 1;
                }
            }
            Rle::encode(&m, height, width)
        };
        for f in 0..frames {
            w.add_rle(f, 1, rect(1, f), 0.5).unwrap();
            w.add_rle(f, 2, rect(6, f), 0.25).unwrap();
        }
        for f in (0..frames).step_by(3) {
            w.add_rle(f, 2, rect(9, f + 1), 0.75).unwrap();
        }
    }

    #[test]
    fn deferred_annotations_are_written_only_at_the_end_and_are_the_same_files() {
        let frames = 40;
        let info = VideoInfo { width: 24, height: 10, frames, fps: 10.0, source: "x".into() };
        let root = tempfile::tempdir().unwrap();
        let (one_by_one, deferred) = (root.path().join("one-by-one"), root.path().join("deferred"));
        let mut a = OutputWriter::new(&one_by_one, info.clone(), "m", false).unwrap();
        fill(&mut a, frames);
        a.finish().unwrap();
        let mut b = OutputWriter::new(&deferred, info, "m", false).unwrap();
        b.defer_annotations();
        fill(&mut b, frames);
        assert_eq!(std::fs::read_dir(deferred.join("annotations")).unwrap().count(), 0, "nothing before finish");
        b.finish().unwrap();
        for f in 0..frames {
            let name = format!("annotations/{f:05}.png");
            let (x, y) = (std::fs::read(one_by_one.join(&name)).unwrap(), std::fs::read(deferred.join(&name)).unwrap());
            assert!(x == y, "{name} differs");
        }
        assert_eq!(
            std::fs::read(one_by_one.join("masks.json")).unwrap(),
            std::fs::read(deferred.join("masks.json")).unwrap()
        );
    }
}
