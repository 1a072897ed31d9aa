//! Memory does not grow with the video: the engine's peak resident memory over a
//! 1,000-frame propagation stays within 10 % of a 100-frame one (frames stream from the
//! decoder, old memories live on disk). Run with `cargo test --release --test
//! memory_bound -- --ignored --nocapture` (a few minutes; kept out of CI's time budget).
mod common;

use sam2_tui::device::Precision;
use sam2_tui::model::{ModelSize, ModelVersion, Sam2Base, Sam2Config};
use sam2_tui::predictor::{VideoOptions, VideoPredictor};
use sam2_tui::session::{Op, Point};
use std::ops::ControlFlow;
use std::rc::Rc;

fn vm_hwm_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

fn vm_rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

/// Peak RSS growth (KB) while propagating `frames` frames of a generated clip.
fn propagate_and_measure(model: Rc<Sam2Base>, frames: usize, dir: &std::path::Path) -> u64 {
    let clip = dir.join(format!("clip{frames}.mp4"));
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
            &frames.to_string(),
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(st.success());
    let source = sam2_tui::media::open(&clip).unwrap();
    let mut p = VideoPredictor::new(
        model,
        source,
        VideoOptions { fill_holes: true, bank_dir: Some(dir.join(format!("bank{frames}"))), ..Default::default() },
    )
    .unwrap();
    p.apply(
        &Op::AddPrompt { frame: 0, object: 1, points: vec![Point::new(80.0, 60.0, true)], bbox: None },
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let before = vm_rss_kb();
    let mut n = 0;
    p.apply(&Op::Propagate { start: None, reverse: false, max_frames: None }, &mut |_| {
        n += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(n, frames);
    vm_hwm_kb().saturating_sub(before)
}

#[test]
#[ignore = "benchmark: several minutes"]
fn peak_memory_of_1000_frames_is_within_10_percent_of_100_frames() {
    tch::set_num_threads(2);
    // The worker's allocator policy: freed blocks stay in the heap (must not grow it).
    sam2_tui::worker::host_memory::keep_freed_memory(true);
    let dir = common::scratch("memory-bound");
    let tensors = common::random_tiny_tensors(&dir);
    let model = Rc::new(
        Sam2Base::from_tensors(
            Sam2Config::new(ModelSize::Tiny, ModelVersion::V2_1).with_image_size(256),
            tensors,
            tch::Device::Cpu,
            Precision::Fp32,
            &Default::default(),
        )
        .unwrap(),
    );
    // 100 frames first: the high-water mark then includes every warm-up allocation.
    let t = std::time::Instant::now();
    let small = propagate_and_measure(model.clone(), 100, &dir);
    let hwm_100 = vm_hwm_kb();
    let large = propagate_and_measure(model, 1000, &dir);
    let hwm_1000 = vm_hwm_kb();
    println!("peak RSS after 100 frames: {} MB; after 1000 more frames: {} MB (growth during runs: {small} KB / {large} KB) in {:.0}s", hwm_100 / 1024, hwm_1000 / 1024, t.elapsed().as_secs_f32());
    assert!(hwm_1000 as f64 <= hwm_100 as f64 * 1.10, "peak RSS grew from {hwm_100} KB to {hwm_1000} KB");
}
