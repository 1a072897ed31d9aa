//! `TwoWayTransformer`, `Attention` and `RoPEAttention` (`sam2/modeling/sam/transformer.py`).
use super::layers::{sdpa, sum_in, Activation, LayerNorm, Linear, Mlp};
use super::params::P;
use super::position_encoding::Rope;
use tch::Tensor;

/// Attention with an optional down-projection of the embedding (`downsample_rate`) and
/// keys/values of another width (`kv_in_dim`).
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: i64,
}

impl Attention {
    pub fn new(p: P, dim: i64, heads: i64, downsample: i64, kv_in_dim: i64) -> Self {
        let internal = dim / downsample;
        Attention {
            q_proj: Linear::new(p.sub("q_proj"), dim, internal),
            k_proj: Linear::new(p.sub("k_proj"), kv_in_dim, internal),
            v_proj: Linear::new(p.sub("v_proj"), kv_in_dim, internal),
            out_proj: Linear::new(p.sub("out_proj"), internal, dim),
            heads,
        }
    }

    fn separate(&self, x: &Tensor) -> Tensor {
        let (b, n, c) = x.size3().unwrap();
        x.reshape([b, n, self.heads, c / self.heads]).transpose(1, 2)
    }

    fn recombine(x: &Tensor) -> Tensor {
        let (b, h, n, c) = x.size4().unwrap();
        x.transpose(1, 2).reshape([b, n, h * c])
    }

    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let q = self.separate(&self.q_proj.forward(q));
        let k = self.separate(&self.k_proj.forward(k));
        let v = self.separate(&self.v_proj.forward(v));
        self.out_proj.forward(&Self::recombine(&Self::attend(&q, &k, &v)))
    }

    /// SDPA, or cuDNN's kernel for a batch of memory attentions on CUDA (`cuda::attention`).
    fn attend(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        crate::cuda::attention::cudnn(q, k, v).unwrap_or_else(|| sdpa(q, k, v))
    }

    /// The dtype the key and value projections compute in (their weights'; bf16 under
    /// CUDA autocast).
    pub fn kv_kind(&self) -> tch::Kind {
        self.k_proj.weight.kind()
    }

    /// RoPE attention (`RoPEAttention.forward`): rotary encoding on q and on the first
    /// `k.len - num_k_exclude_rope` keys (the object-pointer tokens at the end get none).
    pub fn forward_rope(&self, q: &Tensor, k: &Tensor, v: &Tensor, rope: &Rope, num_k_exclude_rope: i64) -> Tensor {
        self.project_out(&self.attend_rope(&self.rope_queries(q, rope), k, v, rope, num_k_exclude_rope))
    }

    /// `forward_rope` in three parts, so that a caller can run the part whose shapes
    /// follow the keys (`attend_rope`) apart from the fixed-shape rest: the queries,
    /// projected and rotated …
    pub fn rope_queries(&self, q: &Tensor, rope: &Rope) -> Tensor {
        rope.apply(&self.separate(&self.q_proj.forward(q)))
    }

    /// … attention over keys and values (their projections, RoPE on all but the last
    /// `num_k_exclude_rope` keys), heads recombined …
    pub fn attend_rope(&self, q: &Tensor, k: &Tensor, v: &Tensor, rope: &Rope, num_k_exclude_rope: i64) -> Tensor {
        let k = self.rotated_keys(k, rope, num_k_exclude_rope);
        if let Some(out) = self.attend_folded(q, &k, v).or_else(|| self.attend_folded_cudnn(q, &k, v)) {
            return out;
        }
        let v = self.separate(&self.v_proj.forward(v));
        Self::recombine(&Self::attend(q, &k, &v))
    }

    /// The keys projected, heads separated, and rotated but for the last `tail`. One head
    /// of 64-wide memory tokens in bf16 on CUDA goes through one kernel
    /// (`cuda::fused::linear64_rope_bf16`: the projected keys are never written unrotated).
    fn rotated_keys(&self, k: &Tensor, rope: &Rope, tail: i64) -> Tensor {
        if self.heads == 1 && !rope.is_complex() {
            let (cos, sin) = rope.tables();
            let rotated = k.size()[1] - tail;
            let fused =
                crate::cuda::fused::linear64_rope_bf16(k, &self.k_proj.weight, &self.k_proj.bias, cos, sin, rotated);
            if let Some(k) = fused {
                return k.unsqueeze(1);
            }
        }
        rope.apply_except_tail(&self.separate(&self.k_proj.forward(k)), tail)
    }

    /// One head on the CPU: the attention over the unprojected values, `v_proj` after it
    /// (`cpu::attention`; a quarter of the P·V work when the values are 64 wide and the
    /// head 256), sequence by sequence for a batch (objects tracked together: each one
    /// computed exactly as alone). None where that kernel does not apply, and on a CPU
    /// taking the MPS branches (MPS runs libtorch's SDPA, as the reference does).
    fn attend_folded(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Option<Tensor> {
        let (b, h, _, d) = q.size4().ok()?;
        if q.device() != tch::Device::Cpu
            || crate::device::takes_mps_branches(q.device())
            || h != 1
            || self.heads != 1
            || v.size().len() != 3
            || k.size()[0] != b
            || v.size()[0] != b
        {
            return None;
        }
        let mut outs = Vec::with_capacity(b as usize);
        for i in 0..b {
            let out = crate::cpu::attention::attend_folded(
                &q.select(0, i).select(0, 0),
                &k.select(0, i).select(0, 0),
                &v.select(0, i),
                1.0 / (d as f64).sqrt(),
            )?;
            outs.push(self.v_proj.forward(&out));
        }
        Some(if b == 1 { outs.pop()?.unsqueeze(0) } else { Tensor::stack(&outs, 0) })
    }

    /// The same fold on CUDA for a batch that goes to cuDNN's kernel (`cuda::attention`),
    /// which takes values narrower than the keys: it attends over the 64-wide memory tokens
    /// and `v_proj` maps the result. The P·V half of the work shrinks 4× and the 256-wide
    /// values are never written (an H100, 16 objects at a full bank: 2.1 against 2.8 ms a
    /// layer). Equal in real arithmetic; in bf16 the result is rounded at 64 wide before
    /// the projection rather than the values after it. FlashAttention, which one object
    /// uses, needs equal widths and stays unfolded (and is faster there: 0.38 against
    /// cuDNN's 0.45 ms folded).
    fn attend_folded_cudnn(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Option<Tensor> {
        if self.heads != 1 || v.dim() != 3 || !crate::cuda::attention::wants_cudnn(q) {
            return None;
        }
        let out = crate::cuda::attention::cudnn(q, k, &v.unsqueeze(1))?;
        Some(self.v_proj.forward(&Self::recombine(&out)))
    }

    /// … and the output projection.
    pub fn project_out(&self, x: &Tensor) -> Tensor {
        self.out_proj.forward(x)
    }
}

struct TwoWayAttentionBlock {
    self_attn: Attention,
    norm1: LayerNorm,
    cross_attn_token_to_image: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    norm3: LayerNorm,
    norm4: LayerNorm,
    cross_attn_image_to_token: Attention,
    skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    fn forward(&self, queries: &Tensor, keys: &Tensor, query_pe: &Tensor, key_pe: &Tensor) -> (Tensor, Tensor) {
        let queries = if self.skip_first_layer_pe {
            // No PE and no residual in the very first self-attention.
            self.self_attn.forward(queries, queries, queries)
        } else {
            let q = queries + query_pe;
            queries + self.self_attn.forward(&q, &q, queries)
        };
        let queries = self.norm1.forward(&queries);
        let q = &queries + query_pe;
        let (k, image) = image_into_projections(keys, key_pe, self.cross_attn_token_to_image.kv_kind());
        let queries = self.norm2.forward(&(&queries + self.cross_attn_token_to_image.forward(&q, &k, &image)));
        let queries = self.norm3.forward(&(&queries + self.mlp.forward(&queries)));
        let q = &queries + query_pe;
        let keys = self.norm4.forward(&(keys + self.cross_attn_image_to_token.forward(&k, &q, &queries)));
        (queries, keys)
    }
}

/// The image tokens as the projections read them: `keys + key_pe` (the attentions' keys,
/// and the queries of the image's attention to the tokens) and `keys` (values), each in
/// the dtype the projections compute in. Under bf16 autocast every projection cast its
/// fp32 input itself: `keys + key_pe` was written in fp32 and cast twice, `keys` once, a
/// pass each over the batch's image tokens; here the sum is rounded as it is stored and
/// each tensor cast once, the same values (what autocast's casts made). A view (one
/// image's first layer, read transposed as the reference's matmuls read it) or fp32
/// projections (the CPU) keep the sums and layouts they had.
fn image_into_projections(keys: &Tensor, key_pe: &Tensor, kind: tch::Kind) -> (Tensor, Tensor) {
    if kind == keys.kind() || !keys.is_contiguous() {
        return (keys + key_pe, keys.shallow_clone());
    }
    (sum_in(keys, key_pe, kind), keys.to_kind(kind))
}

pub struct TwoWayTransformer {
    layers: Vec<TwoWayAttentionBlock>,
    final_attn_token_to_image: Attention,
    norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    pub fn new(p: P) -> Self {
        let (d, heads, mlp) = (256, 8, 2048);
        let layers = (0..2)
            .map(|i| {
                let lp = p.sub(format!("layers.{i}"));
                TwoWayAttentionBlock {
                    self_attn: Attention::new(lp.sub("self_attn"), d, heads, 1, d),
                    norm1: LayerNorm::new(lp.sub("norm1"), d, 1e-5),
                    cross_attn_token_to_image: Attention::new(lp.sub("cross_attn_token_to_image"), d, heads, 2, d),
                    norm2: LayerNorm::new(lp.sub("norm2"), d, 1e-5),
                    mlp: Mlp::new(lp.sub("mlp"), d, mlp, d, 2, Activation::Relu, false),
                    norm3: LayerNorm::new(lp.sub("norm3"), d, 1e-5),
                    norm4: LayerNorm::new(lp.sub("norm4"), d, 1e-5),
                    cross_attn_image_to_token: Attention::new(lp.sub("cross_attn_image_to_token"), d, heads, 2, d),
                    skip_first_layer_pe: i == 0,
                }
            })
            .collect();
        TwoWayTransformer {
            layers,
            final_attn_token_to_image: Attention::new(p.sub("final_attn_token_to_image"), d, heads, 2, d),
            norm_final_attn: LayerNorm::new(p.sub("norm_final_attn"), d, 1e-5),
        }
    }

    /// image `[B,C,H,W]`, image_pe same shape, tokens `[B,N,C]` → (queries, keys `[B,HW,C]`).
    pub fn forward(&self, image: &Tensor, image_pe: &Tensor, tokens: &Tensor) -> (Tensor, Tensor) {
        let image = image.flatten(2, -1).permute([0, 2, 1]);
        let image_pe = image_pe.flatten(2, -1).permute([0, 2, 1]);
        // A batch (several objects on one frame) lays the image tokens out once: as the
        // permuted view, every addition of the position encoding ran strided and every
        // projection copied its input first (a batch's view cannot be flattened to the
        // matmul's rows). Element-wise sums and the projections' inputs are the same values
        // either way. One image keeps the view, whose matmuls read it transposed, exactly
        // as the reference's do.
        let (image, image_pe) =
            if image.size()[0] > 1 { (image.contiguous(), image_pe.contiguous()) } else { (image, image_pe) };
        let mut queries = tokens.shallow_clone();
        let mut keys = image;
        for layer in &self.layers {
            let (q, k) = layer.forward(&queries, &keys, tokens, &image_pe);
            queries = q;
            keys = k;
        }
        let q = &queries + tokens;
        let (k, image) = image_into_projections(&keys, &image_pe, self.final_attn_token_to_image.kv_kind());
        let queries =
            self.norm_final_attn.forward(&(&queries + self.final_attn_token_to_image.forward(&q, &k, &image)));
        (queries, keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::Params;
    use std::collections::BTreeMap;
    use tch::{Device, Kind};

    /// Run on a CUDA machine: `cargo test --release --lib transformer -- --ignored`.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn memory_cross_attention_with_the_value_projection_folded_matches_the_unfolded_one() {
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let dev = Device::Cuda(0);
        let _knobs = crate::cuda::knob_lock();
        tch::manual_seed(5);
        let mut tensors = BTreeMap::new();
        for (name, cin) in [("q_proj", 256), ("k_proj", 64), ("v_proj", 64), ("out_proj", 256)] {
            tensors
                .insert(format!("{name}.weight"), Tensor::randn([256, cin], (Kind::Float, dev)) / (cin as f64).sqrt());
            tensors.insert(format!("{name}.bias"), Tensor::randn([256], (Kind::Float, dev)) * 0.1);
        }
        let params = Params::new(tensors, dev, Kind::Float).with_matmul_kind(Kind::BFloat16);
        let attn = Attention::new(params.root(), 256, 1, 1, 64);
        let rope = Rope::new(256, 16, 16, 10000.0, dev);
        // Six objects' queries over three memory frames and 16 object-pointer tokens.
        let bf = |t: Tensor| t.to_kind(Kind::BFloat16);
        let q = bf(Tensor::randn([6, 256, 256], (Kind::Float, dev)));
        let mem = bf(Tensor::randn([6, 3 * 256 + 16, 64], (Kind::Float, dev)));
        let run = |min_batch| {
            crate::cuda::attention::set_min_batch(min_batch);
            let out = attn.attend_rope(&attn.rope_queries(&q, &rope), &mem, &mem, &rope, 16);
            crate::cuda::attention::set_min_batch(0);
            out.to_kind(Kind::Float)
        };
        let (folded, unfolded) = (run(4), run(0));
        assert_eq!(folded.size(), [6, 256, 256]);
        let scale = unfolded.abs().max().double_value(&[]);
        let worst = (&folded - &unfolded).abs().max().double_value(&[]);
        // Two bf16 roundings in each, in another order: within a few bf16 steps of the scale.
        assert!(worst < 0.03 * scale, "max |Δ| {worst} at scale {scale}");
    }
}
