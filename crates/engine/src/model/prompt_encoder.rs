//! `PromptEncoder` (`sam2/modeling/sam/prompt_encoder.py`): points (boxes arrive as two
//! points labelled 2 and 3) to sparse embeddings, a low-res mask to a dense one.
use super::layers::{Conv2d, LayerNorm2d};
use super::params::P;
use super::position_encoding::PositionEmbeddingRandom;
use tch::{Kind, Tensor};

pub struct PromptEncoder {
    pe_layer: PositionEmbeddingRandom,
    /// Labels 0 (negative), 1 (positive), 2 and 3 (box corners).
    point_embeddings: Vec<Tensor>,
    not_a_point_embed: Tensor,
    no_mask_embed: Tensor,
    mask_downscaling: (Conv2d, LayerNorm2d, Conv2d, LayerNorm2d, Conv2d),
    image_size: i64,
    embed_size: i64,
    /// `get_dense_pe()`, `[1, 256, e, e]`, computed once.
    dense_pe: Tensor,
}

impl PromptEncoder {
    pub fn new(p: P, image_size: i64) -> Self {
        let d = 256;
        let embed_size = image_size / 16;
        let pe_layer = PositionEmbeddingRandom::new(p.sub("pe_layer"), d / 2);
        let dense_pe = pe_layer.grid(embed_size, embed_size).unsqueeze(0).to_kind(p.kind());
        let md = p.sub("mask_downscaling");
        PromptEncoder {
            point_embeddings: (0..4).map(|i| p.get(&format!("point_embeddings.{i}.weight"), &[1, d])).collect(),
            not_a_point_embed: p.get("not_a_point_embed.weight", &[1, d]),
            no_mask_embed: p.get("no_mask_embed.weight", &[1, d]),
            mask_downscaling: (
                Conv2d::new(md.sub("0"), 1, 4, 2, 2, 0, 1),
                LayerNorm2d::new(md.sub("1"), 4, 1e-6),
                Conv2d::new(md.sub("3"), 4, 16, 2, 2, 0, 1),
                LayerNorm2d::new(md.sub("4"), 16, 1e-6),
                Conv2d::new(md.sub("6"), 16, d, 1, 1, 0, 1),
            ),
            pe_layer,
            image_size,
            embed_size,
            dense_pe,
        }
    }

    pub fn dense_pe(&self) -> &Tensor {
        &self.dense_pe
    }

    /// Low-res mask size the decoder's mask prompt must have (4× the embedding).
    pub fn mask_input_size(&self) -> i64 {
        4 * self.embed_size
    }

    /// Points `[B, N, 2]` in model-input pixels and labels `[B, N]` (int) →
    /// sparse `[B, N+1, 256]` (a padding point is always appended: boxes are points here).
    fn embed_points(&self, points: &Tensor, labels: &Tensor) -> Tensor {
        let b = points.size()[0];
        let dev = points.device();
        let points = points.to_kind(Kind::Float) + 0.5;
        let points = Tensor::cat(&[points, Tensor::zeros([b, 1, 2], (Kind::Float, dev))], 1);
        let labels = Tensor::cat(&[labels.to_kind(Kind::Int64), Tensor::full([b, 1], -1, (Kind::Int64, dev))], 1);
        let mut emb = self.pe_layer.points(&points, self.image_size).to_kind(self.not_a_point_embed.kind());
        let is = |l: i64| labels.eq(l).unsqueeze(-1);
        emb = emb.where_self(&is(-1).logical_not(), &(emb.zeros_like() + &self.not_a_point_embed));
        for (l, pe) in self.point_embeddings.iter().enumerate() {
            emb = (&emb + pe).where_self(&is(l as i64), &emb);
        }
        emb
    }

    fn embed_mask(&self, mask: &Tensor) -> Tensor {
        let (c1, n1, c2, n2, c3) = &self.mask_downscaling;
        let x = n1.forward(&c1.forward(mask)).gelu("none");
        let x = n2.forward(&c2.forward(&x)).gelu("none");
        c3.forward(&x)
    }

    /// `forward(points=(coords, labels), boxes=None, masks)` → (sparse, dense).
    pub fn forward(&self, points: &Tensor, labels: &Tensor, mask: Option<&Tensor>) -> (Tensor, Tensor) {
        let sparse = self.embed_points(points, labels);
        let b = points.size()[0];
        let dense = match mask {
            Some(m) => self.embed_mask(m),
            None => self.no_mask_embed.reshape([1, -1, 1, 1]).expand([b, -1, self.embed_size, self.embed_size], false),
        };
        (sparse, dense)
    }
}
