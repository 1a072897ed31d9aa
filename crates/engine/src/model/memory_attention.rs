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
    pub fn forward(
        &self,
        curr: &Tensor,
        curr_pos: &Tensor,
        memory: &Tensor,
        memory_pos: &Tensor,
        num_obj_ptr_tokens: i64,
    ) -> Tensor {
        let (k_in, v_in) = self.memory_inputs(memory, memory_pos);
        let mut out = self.begin(curr, curr_pos);
        for i in 0..self.layers.len() {
            let (residual, q) = self.until_cross(i, &out);
            let attn = self.cross(i, &q, &k_in, &v_in, num_obj_ptr_tokens);
            out = self.after_cross(i, &residual, &attn);
        }
        self.end(&out)
    }

    // `forward` in parts. Only `cross` has shapes that follow the number of memories;
    // everything between two `cross` calls has the same shapes on every frame, which is
    // what lets a GPU replay those parts as graphs while the memory bank is still filling.

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The memory tokens, batch first, as keys (with their position encodings) and values,
    /// made once for the four layers in the form their projections compute in: contiguous
    /// (a batch-first view of `[M, B, 64]` is not, once B > 1, and `linear` then copies it
    /// and adds the bias in a pass of its own, per layer) and in the projections' weight
    /// dtype (under CUDA autocast, bf16: the cast autocast would make in each layer, made
    /// once, so the same values). One object's inputs are already contiguous, as they are
    /// in the reference, so it computes exactly what it did; a batch now computes each
    /// object's projections the way one object alone does (bias inside the matmul).
    pub fn memory_inputs(&self, memory: &Tensor, memory_pos: &Tensor) -> (Tensor, Tensor) {
        let kind = self.layers[0].cross_attn_image.kv_kind();
        let memory_first = memory.transpose(0, 1);
        let k_in = (&memory_first + memory_pos.transpose(0, 1)).to_kind(kind).contiguous();
        (k_in, memory_first.to_kind(kind).contiguous())
    }

    /// The residual stream entering the first layer, batch first.
    pub fn begin(&self, curr: &Tensor, curr_pos: &Tensor) -> Tensor {
        (curr + curr_pos * 0.1).transpose(0, 1)
    }

    /// Layer `i` up to its cross-attention: self-attention, then the cross-attention's
    /// rotated queries. Returns (residual stream, queries).
    pub fn until_cross(&self, i: usize, out: &Tensor) -> (Tensor, Tensor) {
        let l = &self.layers[i];
        let t = l.norm1.forward_into_matmul(out);
        let out = out + l.self_attn.forward_rope(&t, &t, &t, &self.rope, 0);
        let q = l.cross_attn_image.rope_queries(&l.norm2.forward_into_matmul(&out), &self.rope);
        (out, q)
    }

    /// Layer `i`'s attention to the memory, before its output projection.
    pub fn cross(&self, i: usize, q: &Tensor, k_in: &Tensor, v_in: &Tensor, num_obj_ptr_tokens: i64) -> Tensor {
        self.layers[i].cross_attn_image.attend_rope(q, k_in, v_in, &self.rope, num_obj_ptr_tokens)
    }

    /// Layer `i` after its cross-attention: output projection, residual, MLP.
    pub fn after_cross(&self, i: usize, out: &Tensor, attn: &Tensor) -> Tensor {
        let l = &self.layers[i];
        let out = out + l.cross_attn_image.project_out(attn);
        let t = l.norm3.forward_into_matmul(&out);
        &out + l.linear2.forward(&l.linear1.forward(&t).relu())
    }

    /// The final norm, back to `[HW, B, 256]`.
    pub fn end(&self, out: &Tensor) -> Tensor {
        self.norm.forward(out).transpose(0, 1)
    }
}
