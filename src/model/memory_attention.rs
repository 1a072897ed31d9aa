//! `MemoryAttention` (`sam2/modeling/memory_attention.py`): the current frame's features
//! attend to themselves (RoPE) and to the memory bank (RoPE on the spatial memories,
//! none on the object-pointer tokens), four pre-norm layers.
use super::layers::{LayerNorm, Linear};
use super::params::P;
use super::position_encoding::Rope;
use super::transformer::Attention;
use tch::Tensor;

struct MemoryAttentionLayer {
    self_attn: Attention,
    cross_attn_image: Attention,
    linear1: Linear,
    linear2: Linear,
    norm1: LayerNorm,
    norm2: LayerNorm,
    norm3: LayerNorm,
}

pub struct MemoryAttention {
    layers: Vec<MemoryAttentionLayer>,
    norm: LayerNorm,
    /// RoPE tables for the current frame's token grid (built for the model's size).
    rope: Rope,
}

impl MemoryAttention {
    pub fn new(p: P, feat_size: i64) -> Self {
        let d = 256;
        let layers = (0..4)
            .map(|i| {
                let lp = p.sub(format!("layers.{i}"));
                MemoryAttentionLayer {
                    self_attn: Attention::new(lp.sub("self_attn"), d, 1, 1, d),
                    cross_attn_image: Attention::new(lp.sub("cross_attn_image"), d, 1, 1, 64),
                    linear1: Linear::new(lp.sub("linear1"), d, 2048),
                    linear2: Linear::new(lp.sub("linear2"), 2048, d),
                    norm1: LayerNorm::new(lp.sub("norm1"), d, 1e-5),
                    norm2: LayerNorm::new(lp.sub("norm2"), d, 1e-5),
                    norm3: LayerNorm::new(lp.sub("norm3"), d, 1e-5),
                }
            })
            .collect();
        MemoryAttention {
            layers,
            norm: LayerNorm::new(p.sub("norm"), d, 1e-5),
            rope: Rope::new(256, feat_size, feat_size, 10000.0, p.device()),
        }
    }

    /// curr `[HW, B, 256]`, curr_pos same, memory `[M, B, 64]`, memory_pos same →
    /// `[HW, B, 256]`. The last `num_obj_ptr_tokens` memory tokens skip RoPE.
    pub fn forward(&self, curr: &Tensor, curr_pos: &Tensor, memory: &Tensor, memory_pos: &Tensor, num_obj_ptr_tokens: i64) -> Tensor {
        let mut out = (curr + curr_pos * 0.1).transpose(0, 1);
        let memory = memory.transpose(0, 1);
        let memory_pos = memory_pos.transpose(0, 1);
        let k_in = &memory + &memory_pos;
        for l in &self.layers {
            let t = l.norm1.forward(&out);
            out = &out + l.self_attn.forward_rope(&t, &t, &t, &self.rope, 0);
            let t = l.norm2.forward(&out);
            out = &out + l.cross_attn_image.forward_rope(&t, &k_in, &memory, &self.rope, num_obj_ptr_tokens);
            let t = l.norm3.forward(&out);
            out = &out + l.linear2.forward(&l.linear1.forward(&t).relu());
        }
        self.norm.forward(&out).transpose(0, 1)
    }
}
