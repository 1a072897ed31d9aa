//! `MemoryEncoder` (`sam2/modeling/memory_encoder.py`): the predicted mask, downsampled
//! to the feature grid, fused with the frame's features into a 64-channel memory.
use super::layers::{Conv2d, LayerNorm2d, Linear};
use super::params::P;
use super::position_encoding::sine_2d;
use tch::Tensor;

struct CxBlock {
    dwconv: Conv2d,
    norm: LayerNorm2d,
    pwconv1: Linear,
    pwconv2: Linear,
    gamma: Tensor,
}

impl CxBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.norm.forward_into_matmul(&self.dwconv.forward(x)).permute([0, 2, 3, 1]);
        let y = self.pwconv2.forward(&self.pwconv1.forward(&y).gelu("none"));
        let y = (&self.gamma * y).permute([0, 3, 1, 2]);
        x + y
    }
}

pub struct MemoryEncoder {
    /// (conv, norm) ×4 with GELU, then a 1×1 conv (`MaskDownSampler`).
    downsampler: Vec<(Conv2d, LayerNorm2d)>,
    downsampler_out: Conv2d,
    pix_feat_proj: Conv2d,
    fuser: Vec<CxBlock>,
    out_proj: Conv2d,
    /// Sine encoding of the 64-channel memory grid: the same for every frame.
    pos: Tensor,
}

impl MemoryEncoder {
    pub fn new(p: P, feat_size: i64) -> Self {
        let d = 256;
        let mp = p.sub("mask_downsampler.encoder");
        let chans = [1, 4, 16, 64, 256];
        let downsampler = (0..4)
            .map(|i| {
                (
                    Conv2d::new(mp.sub(format!("{}", 3 * i)), chans[i], chans[i + 1], 3, 2, 1, 1),
                    LayerNorm2d::new(mp.sub(format!("{}", 3 * i + 1)), chans[i + 1], 1e-6),
                )
            })
            .collect();
        let fuser = (0..2)
            .map(|i| {
                let fp = p.sub(format!("fuser.layers.{i}"));
                CxBlock {
                    dwconv: Conv2d::new(fp.sub("dwconv"), d, d, 7, 1, 3, d),
                    norm: LayerNorm2d::new(fp.sub("norm"), d, 1e-6),
                    pwconv1: Linear::new(fp.sub("pwconv1"), d, 4 * d),
                    pwconv2: Linear::new(fp.sub("pwconv2"), 4 * d, d),
                    gamma: fp.get("gamma", &[d]),
                }
            })
            .collect();
        MemoryEncoder {
            downsampler,
            downsampler_out: Conv2d::new(mp.sub("12"), 256, d, 1, 1, 0, 1),
            pix_feat_proj: Conv2d::new(p.sub("pix_feat_proj"), d, d, 1, 1, 0, 1),
            fuser,
            out_proj: Conv2d::new(p.sub("out_proj"), d, 64, 1, 1, 0, 1),
            pos: sine_2d(64, feat_size, feat_size, p.device()).to_kind(p.kind()),
        }
    }

    pub fn pos(&self) -> &Tensor {
        &self.pos
    }

    /// pix_feat `[B,256,e,e]`, masks `[B,1,S,S]` (already scaled, no sigmoid) → `[B,64,e,e]`.
    pub fn forward(&self, pix_feat: &Tensor, masks: &Tensor) -> Tensor {
        let mut m = masks.shallow_clone();
        for (conv, norm) in &self.downsampler {
            m = norm.after_conv_gelu_into_matmul(conv, &m);
        }
        let m = self.downsampler_out.forward(&m);
        let mut x = self.pix_feat_proj.forward(pix_feat) + m;
        for blk in &self.fuser {
            x = blk.forward(&x);
        }
        self.out_proj.forward(&x)
    }
}
