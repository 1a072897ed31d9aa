//! The Hiera trunk (`sam2/modeling/backbones/hieradet.py`).
use super::config::HieraConfig;
use super::layers::{sdpa, Activation, Conv2d, LayerNorm, Linear, Mlp};
use super::params::P;
use tch::{Device, Tensor};

/// `window_partition`: `[B,H,W,C]` → `[B*nW, ws, ws, C]`, zero-padding H and W up to a
/// multiple of `ws`. The padded tokens take part in attention like the reference's.
fn window_partition(x: &Tensor, ws: i64) -> (Tensor, (i64, i64)) {
    let (b, h, w, c) = x.size4().unwrap();
    let ph = (ws - h % ws) % ws;
    let pw = (ws - w % ws) % ws;
    let x = if ph > 0 || pw > 0 { x.constant_pad_nd([0, 0, 0, pw, 0, ph]) } else { x.shallow_clone() };
    let (hp, wp) = (h + ph, w + pw);
    let x = x.view([b, hp / ws, ws, wp / ws, ws, c]).permute([0, 1, 3, 2, 4, 5]).reshape([-1, ws, ws, c]);
    (x, (hp, wp))
}

fn window_unpartition(windows: &Tensor, ws: i64, (hp, wp): (i64, i64), (h, w): (i64, i64)) -> Tensor {
    let b = windows.size()[0] / (hp * wp / ws / ws);
    let x = windows.reshape([b, hp / ws, wp / ws, ws, ws, -1]).permute([0, 1, 3, 2, 4, 5]).reshape([b, hp, wp, -1]);
    if hp > h || wp > w {
        x.narrow(1, 0, h).narrow(2, 0, w)
    } else {
        x
    }
}

/// 2×2 max-pool over a BHWC tensor (`do_pool`: `max_pool2d`, odd edges dropped), as the
/// maximum of its four strided quarters. The reference permutes to NCHW for `max_pool2d`,
/// which first copies the strided queries into a contiguous tensor; the maxima are the
/// same values.
fn pool(x: &Tensor) -> Tensor {
    let (_, h, w, _) = x.size4().unwrap();
    let x = x.narrow(1, 0, h / 2 * 2).narrow(2, 0, w / 2 * 2);
    let quarter = |dy: i64, dx: i64| x.slice(1, dy, None, 2).slice(2, dx, None, 2);
    quarter(0, 0).maximum(&quarter(0, 1)).maximum(&quarter(1, 0).maximum(&quarter(1, 1)))
}

struct MultiScaleAttention {
    qkv: Linear,
    proj: Linear,
    heads: i64,
    q_pool: bool,
}

impl MultiScaleAttention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, h, w, _) = x.size4().unwrap();
        let qkv = self.qkv.forward(x).reshape([b, h * w, 3, self.heads, -1]);
        let mut q = qkv.select(2, 0);
        let k = qkv.select(2, 1);
        let v = qkv.select(2, 2);
        let (mut h, mut w) = (h, w);
        if self.q_pool {
            q = pool(&q.reshape([b, h, w, -1]));
            h = q.size()[1];
            w = q.size()[2];
            q = q.reshape([b, h * w, self.heads, -1]);
        }
        let x = sdpa(&q.transpose(1, 2), &k.transpose(1, 2), &v.transpose(1, 2));
        let x = x.transpose(1, 2).reshape([b, h, w, -1]);
        self.proj.forward(&x)
    }
}

struct MultiScaleBlock {
    norm1: LayerNorm,
    norm2: LayerNorm,
    attn: MultiScaleAttention,
    mlp: Mlp,
    proj: Option<Linear>,
    window_size: i64,
    q_stride: bool,
}

impl MultiScaleBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut shortcut = x.shallow_clone();
        // The normed input feeds the qkv and shortcut projections only.
        let x = self.norm1.forward_into_matmul(x);
        if let Some(proj) = &self.proj {
            // The shortcut is projected from the *normed* input, then pooled.
            shortcut = proj.forward(&x);
            if self.q_stride {
                shortcut = pool(&shortcut);
            }
        }
        let mut ws = self.window_size;
        let (h, w) = (x.size()[1], x.size()[2]);
        let (mut x, mut pad_hw) = if ws > 0 { window_partition(&x, ws) } else { (x, (h, w)) };
        x = self.attn.forward(&x);
        let (mut h, mut w) = (h, w);
        if self.q_stride {
            // The window shrinks with the pooled queries; padding is recomputed.
            ws = self.window_size / 2;
            h = shortcut.size()[1];
            w = shortcut.size()[2];
            let ph = if ws > 0 { (ws - h % ws) % ws } else { 0 };
            let pw = if ws > 0 { (ws - w % ws) % ws } else { 0 };
            pad_hw = (h + ph, w + pw);
        }
        if self.window_size > 0 {
            x = window_unpartition(&x, ws, pad_hw, (h, w));
        }
        let x = shortcut + x;
        let y = self.mlp.forward(&self.norm2.forward_into_matmul(&x));
        x + y
    }
}

pub struct Hiera {
    patch_embed: Conv2d,
    /// `pos_embed` resized to the patch grid plus the tiled window embedding, BHWC,
    /// precomputed once (bicubic on the CPU: no bicubic kernel needed on the device).
    pos_embed: Tensor,
    blocks: Vec<MultiScaleBlock>,
    stage_ends: Vec<usize>,
}

impl Hiera {
    pub fn new(p: P, cfg: &HieraConfig, image_size: i64) -> Self {
        let mut dim = cfg.embed_dim;
        let mut heads = cfg.num_heads;
        let patch_embed = Conv2d::new(p.sub("patch_embed.proj"), 3, dim, 7, 4, 3, 1);
        let [bh, bw] = cfg.window_pos_embed_bkg_spatial_size;
        let w0 = cfg.window_spec[0];
        let pos = p.get_f32("pos_embed", &[1, dim, bh, bw]).to_device(Device::Cpu);
        let win = p.get_f32("pos_embed_window", &[1, dim, w0, w0]).to_device(Device::Cpu);
        let g = image_size / 4;
        let pos = pos.upsample_bicubic2d([g, g], false, None, None);
        let pos = &pos + win.tile([1, 1, g / w0, g / w0]);
        let pos_embed = pos.permute([0, 2, 3, 1]).contiguous().to_device(p.device()).to_kind(p.kind());

        let depth: usize = cfg.stages.iter().sum();
        let stage_ends: Vec<usize> = (1..=4).map(|i| cfg.stages[..i].iter().sum::<usize>() - 1).collect();
        let q_pool_blocks: Vec<usize> = stage_ends[..3].iter().map(|x| x + 1).collect();
        let mut cur_stage = 1;
        let mut blocks = Vec::with_capacity(depth);
        for i in 0..depth {
            let mut dim_out = dim;
            // The window size lags one block: read before the stage counter moves.
            let mut window_size = cfg.window_spec[cur_stage - 1];
            if cfg.global_att_blocks.contains(&i) {
                window_size = 0;
            }
            if i > 0 && stage_ends.contains(&(i - 1)) {
                dim_out = dim * 2;
                heads *= 2;
                cur_stage += 1;
            }
            let bp = p.sub(format!("blocks.{i}"));
            let q_stride = q_pool_blocks.contains(&i);
            blocks.push(MultiScaleBlock {
                norm1: LayerNorm::new(bp.sub("norm1"), dim, 1e-6),
                norm2: LayerNorm::new(bp.sub("norm2"), dim_out, 1e-6),
                attn: MultiScaleAttention {
                    qkv: Linear::new(bp.sub("attn.qkv"), dim, dim_out * 3),
                    proj: Linear::new(bp.sub("attn.proj"), dim_out, dim_out),
                    heads,
                    q_pool: q_stride,
                },
                mlp: Mlp::new(bp.sub("mlp"), dim_out, dim_out * 4, dim_out, 2, Activation::Gelu, false),
                proj: (dim != dim_out).then(|| Linear::new(bp.sub("proj"), dim, dim_out)),
                window_size,
                q_stride,
            });
            dim = dim_out;
        }
        Hiera { patch_embed, pos_embed, blocks, stage_ends }
    }

    /// The end of every stage, NCHW, highest resolution first.
    pub fn forward(&self, x: &Tensor) -> Vec<Tensor> {
        let x = self.patch_embed.forward(x).permute([0, 2, 3, 1]);
        // The sum keeps the conv's NCHW layout behind the BHWC view; made contiguous once
        // here, the first stage's layer norms need not each copy it (the reference's do).
        let mut x = (x + &self.pos_embed).contiguous();
        let mut outputs = Vec::with_capacity(4);
        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(&x);
            if self.stage_ends.contains(&i) {
                outputs.push(x.permute([0, 3, 1, 2]));
            }
        }
        outputs
    }
}
