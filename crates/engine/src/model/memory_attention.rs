//! `MemoryAttention` (`sam2/modeling/memory_attention.py`): the current frame's features
//! attend to themselves (RoPE) and to the memory bank (RoPE on the spatial memories,
//! none on the object-pointer tokens), four pre-norm layers.
use super::layers::{contiguous_in, sum_in, LayerNorm, Linear};
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
        let last = self.layers.len() - 1;
        let (mut out, mut q) = self.until_cross(0, &self.begin(curr, curr_pos));
        for i in 0..last {
            let attn = self.cross(i, &q, &k_in, &v_in, num_obj_ptr_tokens);
            (out, q) = self.between(i, &out, &attn);
        }
        let attn = self.cross(last, &q, &k_in, &v_in, num_obj_ptr_tokens);
        self.end(&self.after_cross(last, &out, &attn))
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
        // One pass each (`sum_in`, `contiguous_in`): the sum, the cast and the copy to
        // batch-first were three over a batch's 28k memory tokens.
        let k_in = sum_in(&memory_first, &memory_pos.transpose(0, 1), kind);
        (k_in, contiguous_in(&memory_first, kind))
    }

    /// The residual stream entering the first layer, batch first.
    pub fn begin(&self, curr: &Tensor, curr_pos: &Tensor) -> Tensor {
        (curr + curr_pos * 0.1).transpose(0, 1)
    }

    /// Layer `i` up to its cross-attention: self-attention, then the cross-attention's
    /// rotated queries. Returns (residual stream, queries).
    pub fn until_cross(&self, i: usize, out: &Tensor) -> (Tensor, Tensor) {
        self.attend_self(i, out, &self.layers[i].norm1.forward_into_matmul(out))
    }

    /// Layer `i`'s attention to the memory, before its output projection.
    pub fn cross(&self, i: usize, q: &Tensor, k_in: &Tensor, v_in: &Tensor, num_obj_ptr_tokens: i64) -> Tensor {
        self.layers[i].cross_attn_image.attend_rope(q, k_in, v_in, &self.rope, num_obj_ptr_tokens)
    }

    /// Layer `i` after its cross-attention: output projection, residual, MLP.
    pub fn after_cross(&self, i: usize, out: &Tensor, attn: &Tensor) -> Tensor {
        let (out, mlp) = self.project_and_mlp(i, out, attn);
        out + mlp
    }

    /// `until_cross(i + 1, &after_cross(i, out, attn))`, with the MLP's residual add made in
    /// the same pass as layer `i + 1`'s first norm (`LayerNorm::add_then_forward_into_matmul`:
    /// the same values). Returns (residual stream, queries).
    pub fn between(&self, i: usize, out: &Tensor, attn: &Tensor) -> (Tensor, Tensor) {
        let (out, mlp) = self.project_and_mlp(i, out, attn);
        let (out, t) = self.layers[i + 1].norm1.add_then_forward_into_matmul(&out, &mlp);
        self.attend_self(i + 1, &out, &t)
    }

    /// Layer `i`'s self-attention on its normed input `t`, then the cross-attention's
    /// queries (its residual add and the next norm in one pass).
    fn attend_self(&self, i: usize, out: &Tensor, t: &Tensor) -> (Tensor, Tensor) {
        let l = &self.layers[i];
        let (out, t) = l.norm2.add_then_forward_into_matmul(out, &l.self_attn.forward_rope(t, t, t, &self.rope, 0));
        (out, l.cross_attn_image.rope_queries(&t, &self.rope))
    }

    /// Layer `i`'s output projection added to the stream (with the next norm in one pass),
    /// and the MLP's output, not yet added: (residual stream, MLP output).
    fn project_and_mlp(&self, i: usize, out: &Tensor, attn: &Tensor) -> (Tensor, Tensor) {
        let l = &self.layers[i];
        let (out, t) = l.norm3.add_then_forward_into_matmul(out, &l.cross_attn_image.project_out(attn));
        let mlp = l.linear2.forward(&l.linear1.forward(&t).relu());
        (out, mlp)
    }

    /// The final norm, back to `[HW, B, 256]`.
    pub fn end(&self, out: &Tensor) -> Tensor {
        self.norm.forward(out).transpose(0, 1)
    }
}
