//! A worker's warm-up before its first session (the `warm_up` knob; no reference
//! counterpart). A fresh process pays, on the first frames it tracks, for libtorch's kernel
//! choices, the growth of the caching allocator's pools and the capture of the CUDA graphs
//! of the tracking step: about as long as a whole short clip takes afterwards. `serve`
//! starts its spare workers before anyone asks for them, so they pay that there, on a
//! synthetic clip: one object clicked on the first frame and tracked until the memory bank
//! and the object-pointer slots are full, the steady state a session's graphs are captured
//! in. The graphs are then handed to the session's predictor. A graph replays the model's
//! kernels on whatever its input buffers hold when it is replayed, so nothing of the clip
//! reaches a session: the masks are those of a cold worker.
use super::graphs::Graphs;
use super::video_predictor::{VideoOptions, VideoPredictor};
use crate::media::FrameSource;
use crate::model::Sam2Base;
use sam2_api::session::{Op, Point};
use sam2_api::tuning::Tuning;
use std::ops::ControlFlow;
use std::rc::Rc;

/// Frames tracked: past the last frame where the memory bank (7 memories) or the
/// object-pointer slots (16) still grow, plus two, since a graph is captured on the second
/// frame of a repeated shape.
const CLIP_FRAMES: usize = 20;

/// The graphs a warm-up captured, for the next session on the same model.
pub struct WarmGraphs {
    model: Rc<Sam2Base>,
    graphs: Graphs,
}

/// Tracks one object over a synthetic clip on `model` when `tuning` asks for a warm-up and
/// there is something to warm (CUDA with graphs on); None otherwise.
pub fn warm_up(model: &Rc<Sam2Base>, tuning: &Tuning) -> anyhow::Result<Option<WarmGraphs>> {
    if !(tuning.warm_up && tuning.cuda_graphs && matches!(model.device, tch::Device::Cuda(_))) {
        return Ok(None);
    }
    // Not traced, no logits written: what the user asked of those is about their sessions.
    let tuning = Tuning { trace: None, logits_dir: None, ..tuning.clone() };
    let opts = VideoOptions { fill_holes: true, bank_dir: None, tuning };
    let mut video = VideoPredictor::new(model.clone(), Box::new(SyntheticClip), opts)?;
    let (w, h) = SyntheticClip.size();
    let click = Op::AddPrompt {
        frame: 0,
        object: 1,
        points: vec![Point::new(w as f32 / 2.0, h as f32 / 2.0, true)],
        bbox: None,
    };
    let track = Op::Propagate { start: Some(0), reverse: false, max_frames: None };
    for op in [click, track] {
        video.apply(&op, &mut |_| ControlFlow::Continue(()))?;
    }
    Ok(Some(WarmGraphs { model: model.clone(), graphs: video.into_graphs() }))
}

impl VideoPredictor {
    /// Takes over the graphs a warm-up captured on this predictor's model (on another
    /// model they would replay that model's weights, so they are dropped).
    pub fn adopt(&mut self, warm: WarmGraphs) {
        if Rc::ptr_eq(&warm.model, &self.model) {
            self.graphs = warm.graphs;
        }
    }
}

/// A small clip of a bright square drifting over a gradient (its frames are resized to the
/// model's input like any video's).
struct SyntheticClip;

impl FrameSource for SyntheticClip {
    fn len(&self) -> usize {
        CLIP_FRAMES
    }
    fn size(&self) -> (u32, u32) {
        (160, 96)
    }
    fn fps(&self) -> f32 {
        24.0
    }
    fn frame(&mut self, index: usize) -> anyhow::Result<image::RgbImage> {
        let (w, h) = self.size();
        let x0 = 50 + 2 * index as u32;
        Ok(image::RgbImage::from_fn(w, h, |x, y| {
            let inside = (x0..x0 + 60).contains(&x) && (18..78).contains(&y);
            if inside {
                image::Rgb([240, 220, 40])
            } else {
                image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90])
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Precision;
    use crate::model::config::{ModelSize, ModelVersion};
    use crate::model::random_init::write_random_checkpoint;
    use crate::model::sam2_base::LoadOptions;

    /// Run on a CUDA machine: `cargo test --release --lib warm_up -- --ignored`.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn a_session_on_warmed_graphs_tracks_exactly_as_a_cold_one() {
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let _knobs = crate::cuda::knob_lock(); // loading the model sets the kernel switches
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("tiny.random-init.safetensors");
        write_random_checkpoint(&ckpt, ModelSize::Tiny, ModelVersion::V2_1, 0).unwrap();
        let tuning = Tuning { warm_up: true, ..Tuning::default() };
        let opts = LoadOptions {
            checkpoint: ckpt,
            size: None,
            version: None,
            device: tch::Device::Cuda(0),
            precision: Precision::Bf16,
            image_size: 1024,
            tuning: tuning.clone(),
        };
        let model = Rc::new(Sam2Base::load(&opts).unwrap());
        let warm = warm_up(&model, &tuning).unwrap().expect("a warm-up on CUDA");
        let masks = |warm: Option<WarmGraphs>| {
            let opts = VideoOptions { fill_holes: true, bank_dir: None, tuning: tuning.clone() };
            let mut clip = SyntheticClip;
            let frames = (0..CLIP_FRAMES).rev().map(|i| clip.frame(i).unwrap()).collect::<Vec<_>>();
            let mut v = VideoPredictor::new(model.clone(), Box::new(Frames(frames)), opts).unwrap();
            if let Some(w) = warm {
                v.adopt(w);
            }
            let mut out = vec![];
            let ops = [
                Op::AddPrompt { frame: 3, object: 1, points: vec![Point::new(40.0, 50.0, true)], bbox: None },
                Op::Propagate { start: Some(3), reverse: false, max_frames: None },
            ];
            for op in ops {
                v.apply(&op, &mut |f| {
                    out.extend(f.objects.into_iter().map(|o| o.logits));
                    ControlFlow::Continue(())
                })
                .unwrap();
            }
            out
        };
        let (warmed, cold) = (masks(Some(warm)), masks(None));
        assert_eq!(warmed.len(), cold.len());
        assert!(
            warmed.iter().zip(&cold).all(|(a, b)| a.equal(b)),
            "a warmed session's logits differ from a cold one's"
        );
    }

    /// Frames held in memory (the clip reversed: other pictures than the warm-up's).
    struct Frames(Vec<image::RgbImage>);

    impl FrameSource for Frames {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn size(&self) -> (u32, u32) {
            self.0[0].dimensions()
        }
        fn fps(&self) -> f32 {
            24.0
        }
        fn frame(&mut self, index: usize) -> anyhow::Result<image::RgbImage> {
            Ok(self.0[index].clone())
        }
    }
}
