//! Fixtures for the console's tests (and for trying views by hand): an `App` with a video
//! open and engine events of the kinds the supervisor sends. Deterministic on purpose.
use super::action::Action;
use super::app::App;
use super::keymap::Keymap;
use crate::config::{Config, Theme};
use crate::device::{DeviceChoice, Precision};
use crate::model::config::{ModelSize, ModelVersion};
use crate::rle::Rle;
use crate::supervisor::events::{
    CudaMemory, EngineEvent, EngineState, FrameMasks, ModelLabel, MpsMemory, ObjectMask, StageTimings, WorkerStats,
};
use std::path::PathBuf;

pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 360;
pub const FRAMES: usize = 300;

/// A console on a 640×360, 300-frame clip with a ready tiny model on MPS.
pub fn app_with_video(width: u16, height: u16) -> App {
    let cfg = Config::default();
    let mut app = App::new(
        &cfg,
        Theme::dark(),
        Keymap::default(),
        Some(PathBuf::from("clip.mp4")),
        PathBuf::from("clip.session.json"),
    );
    app.update(Action::Resize { width, height });
    app.update(Action::MediaOpened { width: WIDTH, height: HEIGHT, frames: FRAMES, fps: 30.0 });
    app.update(Action::Engine(worker_started(DeviceChoice::Mps, 0)));
    app.update(Action::Engine(EngineEvent::State(EngineState::Ready)));
    app.update(Action::Engine(EngineEvent::Stats(mps_stats())));
    app
}

pub fn worker_started(device: DeviceChoice, restarts: u32) -> EngineEvent {
    EngineEvent::WorkerStarted {
        pid: 4242 + restarts,
        device,
        precision: Precision::Fp32,
        model: ModelLabel { size: ModelSize::Tiny, version: ModelVersion::V2_1, random_init: false },
        restarts,
    }
}

const GIB: u64 = 1 << 30;

pub fn mps_stats() -> WorkerStats {
    WorkerStats {
        device_kind: "mps".into(),
        device_name: "Apple M4".into(),
        torch_version: "2.11.0".into(),
        threads: 4,
        rss_bytes: 2 * GIB,
        mps: Some(MpsMemory {
            current_allocated: 3 * GIB,
            driver_allocated: 5 * GIB,
            recommended_max: 16 * GIB,
            high_watermark_ratio: Some(1.4),
            low_watermark_ratio: Some(1.0),
        }),
        cuda: None,
    }
}

pub fn cuda_stats() -> WorkerStats {
    WorkerStats {
        device_kind: "cuda".into(),
        device_name: "NVIDIA H100".into(),
        torch_version: "2.11.0".into(),
        threads: 8,
        rss_bytes: 3 * GIB,
        mps: None,
        cuda: Some(CudaMemory {
            allocated: 6 * GIB,
            reserved: 8 * GIB,
            peak_allocated: 7 * GIB,
            total: 80 * GIB,
            used: 9 * GIB,
        }),
    }
}

pub fn cpu_stats() -> WorkerStats {
    WorkerStats {
        device_kind: "cpu".into(),
        device_name: "cpu".into(),
        torch_version: "2.11.0".into(),
        threads: 8,
        rss_bytes: 3 * GIB,
        mps: None,
        cuda: None,
    }
}

/// A filled ellipse mask at video resolution.
pub fn ellipse(cx: f32, cy: f32, rx: f32, ry: f32) -> Rle {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut m = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
            m[y * w + x] = (dx * dx + dy * dy <= 1.0) as u8;
        }
    }
    Rle::encode(&m, h, w)
}

pub fn masks(frame: usize, objects: &[(u32, Rle)]) -> EngineEvent {
    EngineEvent::Masks(FrameMasks {
        frame,
        objects: objects.iter().map(|(o, r)| ObjectMask { object: *o, rle: r.clone(), score: 4.0 }).collect(),
    })
}

pub fn progress(frame: usize, done: usize, total: usize, fps: f32) -> EngineEvent {
    EngineEvent::Progress {
        frame,
        done,
        total,
        fps,
        timings: StageTimings {
            decode_ms: 3.0,
            image_encoder_ms: 41.5,
            memory_attention_ms: 12.25,
            mask_decoder_ms: 4.5,
            memory_encoder_ms: 6.0,
            write_out_ms: 0.5,
            total_ms: 67.25,
            ..StageTimings::default()
        },
    }
}
