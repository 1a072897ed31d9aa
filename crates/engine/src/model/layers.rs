//! The small building blocks every SAM 2 module uses (nn.Linear, nn.LayerNorm,
//! LayerNorm2d, Conv2d, ConvTranspose2d, the reference's MLP).
use super::params::P;
use tch::{Kind, Tensor};

pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(p: P, in_dim: i64, out_dim: i64) -> Self {
        Linear { weight: p.get_matmul("weight", &[out_dim, in_dim]), bias: p.get_matmul("bias", &[out_dim]) }
    }
    /// On the CPU, a batch (dim 0: objects or videos tracked together) whose items have a
    /// row count the BLAS may not split evenly goes item by item. MKL computes a block of
    /// rows and its tail differently, so an item's rows placed at another offset in the
    /// batch round differently than alone: measured on an AMD EPYC, any row count not a
    /// multiple of 4 (the mask decoder's 6–8 tokens), and one object's masks then changed
    /// when another object was removed from its batch. Alone, each item is computed as in
    /// a batch of one, which is also what the one-by-one path does. Image-sized items
    /// (multiples of 16 rows) stay one call; a batch of one is never split.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let rows: i64 = size.iter().skip(1).rev().skip(1).product();
        if x.device() == tch::Device::Cpu && size.len() >= 3 && size[0] > 1 && rows % 16 != 0 {
            let items: Vec<Tensor> =
                (0..size[0]).map(|i| x.select(0, i).linear(&self.weight, Some(&self.bias))).collect();
            return Tensor::stack(&items, 0);
        }
        x.linear(&self.weight, Some(&self.bias))
    }
}

/// `a + b` in the dtype `kind` a projection computes in, written contiguous in one pass:
/// the sum in `a`'s and `b`'s dtype, rounded once to `kind` as it is stored (libtorch's
/// add computes in the inputs' dtype and casts on the way out). The same values as
/// `(a + b).to_kind(kind).contiguous()`, which under bf16 autocast on CUDA is the sum
/// libtorch writes in fp32, the cast autocast makes of it, and a copy for the layout:
/// three passes over a batch's 4,096- or 28,000-token tensors where one is needed. Where
/// `kind` is the inputs' own (the CPU's fp32), it is the sum, made contiguous.
pub fn sum_in(a: &Tensor, b: &Tensor, kind: Kind) -> Tensor {
    let (sa, sb) = (a.size(), b.size());
    if sa.len() != sb.len() {
        return (a + b).to_kind(kind).contiguous();
    }
    // The broadcast shape (a dim of 1 on one side takes the other's).
    let size: Vec<i64> = sa.iter().zip(&sb).map(|(&x, &y)| if x == 1 { y } else { x }).collect();
    let out = Tensor::empty(size.as_slice(), (kind, a.device()));
    a.add_out(&out, b)
}

/// `x` in the dtype `kind` and contiguous, in one pass where either is needed (the same
/// values as `x.to_kind(kind).contiguous()`, which copies twice for a strided `x`).
pub fn contiguous_in(x: &Tensor, kind: Kind) -> Tensor {
    if x.kind() == kind && x.is_contiguous() {
        return x.shallow_clone();
    }
    let size = x.size();
    let mut out = Tensor::empty(size.as_slice(), (kind, x.device()));
    out.copy_(x);
    out
}

/// nn.LayerNorm over the last dimension.
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    dim: i64,
}

impl LayerNorm {
    pub fn new(p: P, dim: i64, eps: f64) -> Self {
        LayerNorm { weight: p.get("weight", &[dim]), bias: p.get("bias", &[dim]), eps, dim }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.dim], Some(&self.weight), Some(&self.bias), self.eps, true)
    }

    /// `forward` for a caller that feeds the result to matmuls only: under bf16 autocast
    /// on CUDA the output comes straight in bf16 (`cuda::fused`), the dtype those matmuls
    /// would cast it to; elsewhere it is `forward`.
    pub fn forward_into_matmul(&self, x: &Tensor) -> Tensor {
        crate::cuda::fused::layer_norm_to_bf16(x, &self.weight, &self.bias, self.eps).unwrap_or_else(|| self.forward(x))
    }

    /// A residual add and `forward_into_matmul` of its result: (`x + delta`, the norm). On
    /// CUDA under bf16 autocast one pass (`cuda::fused`), with the same sum.
    pub fn add_then_forward_into_matmul(&self, x: &Tensor, delta: &Tensor) -> (Tensor, Tensor) {
        crate::cuda::fused::add_layer_norm_to_bf16(x, delta, &self.weight, &self.bias, self.eps).unwrap_or_else(|| {
            let sum = x + delta;
            let normed = self.forward_into_matmul(&sum);
            (sum, normed)
        })
    }
}

/// `sam2_utils.LayerNorm2d`: normalises over channels of an NCHW tensor, written out as
/// the reference does (mean, biased variance, sqrt) so the rounding matches.
pub struct LayerNorm2d {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm2d {
    pub fn new(p: P, channels: i64, eps: f64) -> Self {
        LayerNorm2d {
            weight: p.get("weight", &[channels]).view([-1, 1, 1]),
            bias: p.get("bias", &[channels]).view([-1, 1, 1]),
            eps,
        }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.norm(x, false, false)
    }

    /// `forward` for a caller that feeds the result to a convolution or a Linear only:
    /// under bf16 autocast on CUDA the output comes straight in bf16, the dtype that
    /// consumer would cast it to; elsewhere it is `forward`.
    pub fn forward_into_matmul(&self, x: &Tensor) -> Tensor {
        self.norm(x, false, true)
    }

    /// `gelu(forward(x))` for a caller that feeds the result to a convolution or a Linear
    /// only (see `forward_into_matmul`), in the same pass where the fused kernel applies.
    pub fn forward_gelu_into_matmul(&self, x: &Tensor) -> Tensor {
        self.norm(x, true, true)
    }

    fn norm(&self, x: &Tensor, gelu: bool, out_bf16: bool) -> Tensor {
        crate::cuda::fused::layer_norm_2d(x, &self.weight, &self.bias, self.eps, gelu, out_bf16).unwrap_or_else(|| {
            let y = self.spelled_out(x);
            if gelu {
                y.gelu("none")
            } else {
                y
            }
        })
    }

    /// `forward_gelu_into_matmul(conv.forward(x))`: one pass where the fused kernel applies
    /// (the mask downsampler's narrow 3×3 stride-2 stages under bf16 autocast on CUDA).
    pub fn after_conv_gelu_into_matmul(&self, conv: &Conv2d, x: &Tensor) -> Tensor {
        (conv.stride == 2 && conv.padding == 1 && conv.groups == 1)
            .then(|| {
                crate::cuda::fused::conv3x3s2_layer_norm_gelu(
                    x,
                    &conv.weight,
                    &conv.bias,
                    &self.weight,
                    &self.bias,
                    self.eps,
                )
            })
            .flatten()
            .unwrap_or_else(|| self.forward_gelu_into_matmul(&conv.forward(x)))
    }

    fn spelled_out(&self, x: &Tensor) -> Tensor {
        let u = x.mean_dim(1, true, None);
        let d = x - &u;
        let s = d.square().mean_dim(1, true, None);
        let x = d / (s + self.eps).sqrt();
        &self.weight * x + &self.bias
    }
}

pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: i64,
    groups: i64,
}

impl Conv2d {
    pub fn new(p: P, cin: i64, cout: i64, k: i64, stride: i64, padding: i64, groups: i64) -> Self {
        Conv2d {
            weight: p.get_matmul("weight", &[cout, cin / groups, k, k]),
            bias: p.get_matmul("bias", &[cout]),
            stride,
            padding,
            groups,
        }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, Some(&self.bias), [self.stride], [self.padding], [1], self.groups)
    }

    /// The single 1×1 convolution that equals `self` followed by `next` (both 1×1, no
    /// activation between: a product of two linear maps), composed in fp32.
    pub fn then(&self, next: &Conv2d) -> Conv2d {
        let (w1, b1) = (self.weight.to_kind(Kind::Float).flatten(1, -1), self.bias.to_kind(Kind::Float));
        let (w2, b2) = (next.weight.to_kind(Kind::Float).flatten(1, -1), next.bias.to_kind(Kind::Float));
        assert!(
            self.weight.size()[2..] == [1, 1]
                && next.weight.size()[2..] == [1, 1]
                && self.groups == 1
                && next.groups == 1,
            "only 1x1 convolutions compose"
        );
        let weight = w2.matmul(&w1).unsqueeze(-1).unsqueeze(-1).to_kind(self.weight.kind());
        let bias = (w2.matmul(&b1) + b2).to_kind(self.bias.kind());
        Conv2d { weight, bias, stride: 1, padding: 0, groups: 1 }
    }
}

pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
}

impl ConvTranspose2d {
    pub fn new(p: P, cin: i64, cout: i64, k: i64, stride: i64) -> Self {
        ConvTranspose2d {
            weight: p.get_matmul("weight", &[cin, cout, k, k]),
            bias: p.get_matmul("bias", &[cout]),
            stride,
        }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv_transpose2d(&self.weight, Some(&self.bias), [self.stride], [0], [0], 1, [1])
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Gelu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu("none"),
        }
    }
}

/// `sam2_utils.MLP`: `num_layers` linears, activation between them, optional sigmoid.
pub struct Mlp {
    layers: Vec<Linear>,
    act: Activation,
    sigmoid_output: bool,
}

impl Mlp {
    pub fn new(
        p: P,
        input: i64,
        hidden: i64,
        output: i64,
        num_layers: usize,
        act: Activation,
        sigmoid_output: bool,
    ) -> Self {
        let layers = (0..num_layers)
            .map(|i| {
                let n = if i == 0 { input } else { hidden };
                let k = if i + 1 == num_layers { output } else { hidden };
                Linear::new(p.sub(format!("layers.{i}")), n, k)
            })
            .collect();
        Mlp { layers, act, sigmoid_output }
    }
    /// A 2-D input is one row per object (SAM 2's heads and the object-pointer
    /// projection): on the CPU, as a batch of one-row items, so that `Linear` computes
    /// each object as alone.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if x.dim() == 2 && x.size()[0] > 1 && x.device() == tch::Device::Cpu {
            return self.forward(&x.unsqueeze(1)).squeeze_dim(1);
        }
        let n = self.layers.len();
        let mut x = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x);
            if i + 1 < n {
                x = self.act.apply(&x);
            }
        }
        if self.sigmoid_output {
            x.sigmoid()
        } else {
            x
        }
    }
}

/// F.scaled_dot_product_attention with the default scale, no mask, no dropout (eval).
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    Tensor::scaled_dot_product_attention::<Tensor>(q, k, v, None, 0.0, false, None, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn conv(cin: i64, cout: i64) -> Conv2d {
        let opts = (Kind::Float, Device::Cpu);
        Conv2d {
            weight: Tensor::randn([cout, cin, 1, 1], opts),
            bias: Tensor::randn([cout], opts),
            stride: 1,
            padding: 0,
            groups: 1,
        }
    }

    #[test]
    fn two_1x1_convolutions_compose_into_one() {
        tch::manual_seed(3);
        let (lateral, narrow) = (conv(12, 40), conv(40, 5));
        let x = Tensor::randn([2, 12, 9, 7], (Kind::Float, Device::Cpu));
        let composed = lateral.then(&narrow);
        assert_eq!(composed.weight.size(), [5, 12, 1, 1]);
        let diff = (composed.forward(&x) - narrow.forward(&lateral.forward(&x))).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "max |Δ| {diff}");
    }

    /// What a projection under bf16 autocast reads: the fp32 sum of a batch-first view
    /// and a broadcast position encoding, rounded once, and a strided tensor cast.
    #[test]
    fn a_sum_or_a_cast_made_in_one_pass_has_the_values_of_the_spelled_out_passes() {
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        // [M, B, C] seq-first, read batch-first as the memory attention does.
        let memory = Tensor::randn([300, 3, 64], opts).transpose(0, 1);
        let pos = Tensor::randn([300, 1, 64], opts).transpose(0, 1);
        for kind in [Kind::BFloat16, Kind::Half, Kind::Float] {
            let spelled = (&memory + &pos).to_kind(kind).contiguous();
            let fused = sum_in(&memory, &pos, kind);
            assert!(fused.is_contiguous());
            assert_eq!(fused.size(), [3, 300, 64]);
            assert!(fused.equal(&spelled), "{kind:?}: the sum rounded differently");
            let cast = contiguous_in(&memory, kind);
            assert!(cast.is_contiguous());
            assert!(cast.equal(&memory.to_kind(kind).contiguous()), "{kind:?}: the cast differs");
        }
        // A sum rounded to bf16 is not the sum of the rounded inputs: the test can tell.
        let rounded_first = (memory.to_kind(Kind::BFloat16) + pos.to_kind(Kind::BFloat16)).contiguous();
        assert!(!sum_in(&memory, &pos, Kind::BFloat16).equal(&rounded_first));
    }
}
