//! `ImageEncoder` = Hiera trunk + `FpnNeck` (`sam2/modeling/backbones/image_encoder.py`).
use super::config::Sam2Config;
use super::hieradet::Hiera;
use super::layers::Conv2d;
use super::params::P;
use super::position_encoding::sine_2d;
use tch::{Kind, Tensor};

/// What the backbone hands the rest of the model: three FPN levels (stride 4, 8, 16 —
/// the stride-32 level is dropped, `scalp=1`) and their sine position encodings.
pub struct BackboneOut {
    pub backbone_fpn: Vec<Tensor>,
    pub vision_pos_enc: Vec<Tensor>,
}

pub struct FpnNeck {
    convs: Vec<Conv2d>,
    /// Position encodings per level, computed once (they depend only on the size).
    pos: Vec<Tensor>,
}

impl FpnNeck {
    fn new(p: P, channels: [i64; 4], image_size: i64) -> Self {
        let convs = channels
            .iter()
            .enumerate()
            .map(|(i, &c)| Conv2d::new(p.sub(format!("convs.{i}.conv")), c, 256, 1, 1, 0, 1))
            .collect();
        let pos = [4, 8, 16, 32]
            .iter()
            .map(|s| sine_2d(256, image_size / s, image_size / s, p.device()).to_kind(p.kind()))
            .collect();
        FpnNeck { convs, pos }
    }

    /// Levels `first..` of the pyramid (the top-down path needs the levels above, not
    /// below, so lower levels can be left to the caller).
    fn forward(&self, xs: &[Tensor], first: usize) -> (Vec<Tensor>, Vec<Tensor>) {
        let n = self.convs.len() - 1;
        let mut feats = Vec::new();
        let mut prev: Option<Tensor> = None;
        for i in (first..=n).rev() {
            let lateral = self.convs[n - i].forward(&xs[i]);
            // Top-down only into levels 2 and 3 (`fpn_top_down_levels=[2,3]`): nearest ×2,
            // computed in fp32, summed.
            let f = match (&prev, i >= 2) {
                (Some(p), true) => {
                    let (h, w) = (p.size()[2], p.size()[3]);
                    let td = p.to_kind(Kind::Float).upsample_nearest2d([h * 2, w * 2], 2.0, 2.0);
                    // Back to the compute dtype (the reference relies on autocast for this).
                    (&lateral + td).to_kind(lateral.kind())
                }
                _ => lateral,
            };
            feats.push(f.shallow_clone());
            prev = Some(f);
        }
        feats.reverse();
        let pos = self.pos[first..].iter().map(|p| p.shallow_clone()).collect();
        (feats, pos)
    }
}

pub struct ImageEncoder {
    trunk: Hiera,
    neck: FpnNeck,
}

impl ImageEncoder {
    pub fn new(p: P, cfg: &Sam2Config) -> Self {
        ImageEncoder {
            trunk: Hiera::new(p.sub("trunk"), &cfg.hiera, cfg.image_size),
            neck: FpnNeck::new(p.sub("neck"), cfg.hiera.backbone_channel_list(), cfg.image_size),
        }
    }

    /// The raw trunk outputs, NCHW, one per stage (see `forward_from` for the neck).
    pub fn trunk(&self, x: &Tensor) -> Vec<Tensor> {
        self.trunk.forward(x)
    }

    /// The pyramid from level `first` up (levels below `first` are left out of
    /// `backbone_fpn` and `vision_pos_enc`), from the trunk's outputs.
    pub fn forward_from(&self, trunk: &[Tensor], first: usize) -> BackboneOut {
        let (mut feats, mut pos) = self.neck.forward(trunk, first);
        // `scalp=1`: the stride-32 level is dropped.
        feats.pop();
        pos.pop();
        let b = trunk[0].size()[0];
        let pos = pos.into_iter().map(|p| if b > 1 { p.expand([b, -1, -1, -1], false) } else { p }).collect();
        BackboneOut { backbone_fpn: feats, vision_pos_enc: pos }
    }

    /// The neck's 1×1 lateral convolution of trunk level `level`.
    pub fn lateral(&self, level: usize) -> &Conv2d {
        &self.neck.convs[self.neck.convs.len() - 1 - level]
    }
}
