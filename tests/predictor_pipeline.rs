//! Propagation runs ahead of its outputs (frames k+1..=k+depth are queued before frame k
//! is written out: one frame on the CPU, three on CUDA). That must not be observable: a
//! cancelled pass leaves exactly the state of a pass that stopped at the last frame it
//! delivered, and the masks do not depend on the depth.
mod common;

use sam2_tui::device::Precision;
use sam2_tui::model::{ModelSize, ModelVersion, Sam2Base, Sam2Config};
use sam2_tui::predictor::{FrameOutput, VideoOptions, VideoPredictor};
use sam2_tui::session::{Op, Point};
use sam2_tui::tuning::Tuning;
use std::ops::ControlFlow;
use std::path::Path;
use std::rc::Rc;

fn model(dir: &Path) -> Rc<Sam2Base> {
    let tensors = common::present_tiny_tensors(dir);
    let config = Sam2Config::new(ModelSize::Tiny, ModelVersion::V2_1).with_image_size(256);
    Rc::new(Sam2Base::from_tensors(config, tensors, tch::Device::Cpu, Precision::Fp32, &Tuning::default()).unwrap())
}

fn predictor(dir: &Path, name: &str) -> VideoPredictor {
    predictor_with(dir, name, VideoOptions::default())
}

fn predictor_with(dir: &Path, name: &str, opts: VideoOptions) -> VideoPredictor {
    let clip = dir.join("clip.mp4");
    if !clip.exists() {
        let st = std::process::Command::new("ffmpeg")
            .stdin(std::process::Stdio::null())
            .args([
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=160x120:rate=25",
                "-frames:v",
                "8",
                "-pix_fmt",
                "yuv420p",
            ])
            .arg(&clip)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let source = sam2_tui::media::open(&clip).unwrap();
    VideoPredictor::new(model(dir), source, VideoOptions { fill_holes: true, bank_dir: Some(dir.join(name)), ..opts })
        .unwrap()
}

fn click(frame: usize) -> Op {
    Op::AddPrompt { frame, object: 1, points: vec![Point::new(80.0, 60.0, true)], bbox: None }
}

/// Runs `op`, returning the delivered frames' logits; cancels after `stop_after` frames.
fn run(p: &mut VideoPredictor, op: &Op, stop_after: Option<usize>) -> Vec<(usize, Vec<f32>)> {
    let mut got = vec![];
    p.apply(op, &mut |f: FrameOutput| {
        got.push((f.frame, Vec::<f32>::try_from(f.objects[0].logits.flatten(0, -1)).unwrap()));
        if stop_after.is_some_and(|n| got.len() >= n) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    got
}

fn deep(depth: usize) -> VideoOptions {
    VideoOptions { tuning: Tuning { pipeline_depth: depth, ..Default::default() }, ..Default::default() }
}

#[test]
fn a_cancelled_propagation_leaves_no_trace_of_the_frames_it_tracked_ahead() {
    tch::set_num_threads(2);
    let dir = common::scratch("predictor-pipeline");
    let forward = |max_frames| Op::Propagate { start: None, reverse: false, max_frames };

    // Stopped by max_frames after frames 0..=2, then a click on frame 3.
    let mut stopped = predictor(&dir, "stopped");
    run(&mut stopped, &click(0), None);
    let frames: Vec<usize> = run(&mut stopped, &forward(Some(2)), None).iter().map(|f| f.0).collect();
    assert_eq!(frames, vec![0, 1, 2]);
    let want = run(&mut stopped, &click(3), None);

    // Cancelled by the consumer after frame 2, while frame 3 (depth 1) or frames 3..=5
    // (depth 3) were already being tracked.
    for depth in [1, 3] {
        let mut cancelled = predictor_with(&dir, &format!("cancelled-{depth}"), deep(depth));
        run(&mut cancelled, &click(0), None);
        let frames: Vec<usize> = run(&mut cancelled, &forward(None), Some(3)).iter().map(|f| f.0).collect();
        assert_eq!(frames, vec![0, 1, 2]);
        let got = run(&mut cancelled, &click(3), None);
        assert!(
            got == want,
            "depth {depth}: a click after the cancel differs from one after a pass that stopped at frame 2"
        );
    }

    // The check can fail: had frame 3 been tracked, the click would be a correction.
    let mut tracked = predictor(&dir, "tracked");
    run(&mut tracked, &click(0), None);
    run(&mut tracked, &forward(Some(3)), None);
    assert!(run(&mut tracked, &click(3), None) != want, "a click on a tracked frame should differ");
}

#[test]
fn queueing_frames_deeper_changes_no_mask_and_no_order() {
    tch::set_num_threads(2);
    let dir = common::scratch("predictor-depth");
    let forward = Op::Propagate { start: None, reverse: false, max_frames: None };
    let mut outputs = vec![];
    for depth in [1, 4] {
        let mut p = predictor_with(&dir, &format!("depth-{depth}"), deep(depth));
        run(&mut p, &click(0), None);
        outputs.push(run(&mut p, &forward, None));
    }
    assert_eq!(outputs[1].iter().map(|f| f.0).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    assert!(outputs[0] == outputs[1], "the masks depend on how many frames were queued ahead");
}

#[test]
fn encoding_the_coming_frames_in_batches_tracks_as_one_at_a_time() {
    tch::set_num_threads(2);
    let dir = common::scratch("predictor-batch-encode");
    let forward = Op::Propagate { start: None, reverse: false, max_frames: None };
    let mut one = predictor_with(
        &dir,
        "one",
        VideoOptions { tuning: Tuning { encode_batch: 1, ..Default::default() }, ..Default::default() },
    );
    run(&mut one, &click(0), None);
    let want = run(&mut one, &forward, None);
    let mut batched = predictor_with(
        &dir,
        "batched",
        VideoOptions { tuning: Tuning { encode_batch: 3, ..Default::default() }, ..Default::default() },
    );
    run(&mut batched, &click(0), None);
    let got = run(&mut batched, &forward, None);
    assert_eq!(got.iter().map(|f| f.0).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    for ((f, a), (_, b)) in got.iter().zip(&want) {
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        let flipped = a.iter().zip(b).filter(|(x, y)| (**x > 0.0) != (**y > 0.0)).count();
        // Batched GEMMs may sum in another order: last-bit differences, no flipped pixel.
        assert!(diff < 1e-3 && flipped == 0, "frame {f}: max |Δlogit| {diff}, {flipped} pixels flipped");
    }
}
