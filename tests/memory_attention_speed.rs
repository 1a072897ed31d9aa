//! How long memory attention takes on this machine with a full memory bank (tiny, model
//! input 1024: 7 memories of 4096 tokens + 16 object pointers), the CPU's heaviest stage
//! after the image encoder. A benchmark, not a check: `cargo test --release --test
//! memory_attention_speed -- --ignored --nocapture`; compare with the reference's
//! `model.memory_attention(...)` on the same shapes and thread count.
mod common;

use sam2_tui::device::Precision;
use sam2_tui::model::sam2_base::FrameFeatures;
use sam2_tui::model::{ModelSize, ModelVersion, Sam2Base, Sam2Config};
use tch::{Device, Kind, Tensor};

#[test]
#[ignore = "benchmark"]
fn memory_attention_with_a_full_bank() {
    tch::set_num_threads(2);
    let dir = common::scratch("memory-attention-speed");
    let tensors = common::random_tiny_tensors(&dir);
    let model = Sam2Base::from_tensors(
        Sam2Config::new(ModelSize::Tiny, ModelVersion::V2_1),
        tensors,
        Device::Cpu,
        Precision::Fp32,
        &Default::default(),
    )
    .unwrap();
    let _g = tch::no_grad_guard();
    let opts = (Kind::Float, Device::Cpu);
    let feats = FrameFeatures {
        high_res: [Tensor::zeros([1, 32, 256, 256], opts), Tensor::zeros([1, 64, 128, 128], opts)],
        feat: Tensor::randn([1, 256, 64, 64], opts),
        pos: Tensor::randn([1, 256, 64, 64], opts),
    };
    let memory = Tensor::randn([7 * 4096 + 64, 1, 64], opts);
    let memory_pos = Tensor::randn([7 * 4096 + 64, 1, 64], opts);
    let _ = model.attend_memory(&feats, &memory, &memory_pos, 64);
    let times: Vec<f64> = (0..2)
        .map(|_| {
            let t = std::time::Instant::now();
            let _ = model.attend_memory(&feats, &memory, &memory_pos, 64);
            t.elapsed().as_secs_f64()
        })
        .collect();
    println!("memory attention, 7 memories + 64 pointer tokens, 2 threads: {times:.3?} s");
}
