//! `MaskDecoder` (`sam2/modeling/sam/mask_decoder.py`): tokens + image embedding through
//! the two-way transformer, upscaled with the high-res features, four hypernetwork masks,
//! IoU and object-score heads, and the output selection rules.
use super::layers::{Activation, Conv2d, ConvTranspose2d, LayerNorm2d, Mlp};
use super::params::P;
use super::transformer::TwoWayTransformer;
use tch::{Kind, Tensor};

pub struct DecoderOutput {
    /// `[B, M, 4e, 4e]` mask logits (M = 3 multimask, else 1).
    pub masks: Tensor,
    /// `[B, M]` predicted IoU.
    pub iou: Tensor,
    /// `[B, M', 256]` the SAM output token(s) for the object pointer.
    pub sam_tokens: Tensor,
    /// `[B, 1]`.
    pub object_score_logits: Tensor,
}

pub struct MaskDecoder {
    transformer: TwoWayTransformer,
    iou_token: Tensor,
    mask_tokens: Tensor,
    obj_score_token: Tensor,
    dc1: ConvTranspose2d,
    ln1: LayerNorm2d,
    dc2: ConvTranspose2d,
    pub conv_s0: Conv2d,
    pub conv_s1: Conv2d,
    hypernetworks: Vec<Mlp>,
    iou_head: Mlp,
    obj_score_head: Mlp,
}

/// `dynamic_multimask_via_stability` thresholds set by `build_sam2*` with post-processing.
const STABILITY_DELTA: f64 = 0.05;
const STABILITY_THRESH: f64 = 0.98;

impl MaskDecoder {
    pub fn new(p: P) -> Self {
        let d = 256;
        MaskDecoder {
            transformer: TwoWayTransformer::new(p.sub("transformer")),
            iou_token: p.get("iou_token.weight", &[1, d]),
            mask_tokens: p.get("mask_tokens.weight", &[4, d]),
            obj_score_token: p.get("obj_score_token.weight", &[1, d]),
            dc1: ConvTranspose2d::new(p.sub("output_upscaling.0"), d, d / 4, 2, 2),
            ln1: LayerNorm2d::new(p.sub("output_upscaling.1"), d / 4, 1e-6),
            dc2: ConvTranspose2d::new(p.sub("output_upscaling.3"), d / 4, d / 8, 2, 2),
            conv_s0: Conv2d::new(p.sub("conv_s0"), d, d / 8, 1, 1, 0, 1),
            conv_s1: Conv2d::new(p.sub("conv_s1"), d, d / 4, 1, 1, 0, 1),
            hypernetworks: (0..4)
                .map(|i| {
                    Mlp::new(p.sub(format!("output_hypernetworks_mlps.{i}")), d, d, d / 8, 3, Activation::Relu, false)
                })
                .collect(),
            iou_head: Mlp::new(p.sub("iou_prediction_head"), d, 256, 4, 3, Activation::Relu, true),
            obj_score_head: Mlp::new(p.sub("pred_obj_score_head"), d, d, 1, 3, Activation::Relu, false),
        }
    }

    /// `predict_masks`: all four masks, IoU, mask tokens and the object score.
    fn predict_masks(
        &self,
        image: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        high_res: &[Tensor; 2],
    ) -> (Tensor, Tensor, Tensor, Tensor) {
        let b = sparse.size()[0];
        let out_tokens = Tensor::cat(&[&self.obj_score_token, &self.iou_token, &self.mask_tokens], 0)
            .unsqueeze(0)
            .expand([b, -1, -1], false);
        let tokens = Tensor::cat(&[out_tokens, sparse.shallow_clone()], 1);
        let src = image + dense;
        let pos_src = image_pe.repeat_interleave_self_int(tokens.size()[0], 0, None);
        let (bb, c, h, w) = src.size4().unwrap();
        let (hs, src) = self.transformer.forward(&src, &pos_src, &tokens);
        let iou_token_out = hs.select(1, 1);
        let mask_tokens_out = hs.narrow(1, 2, 4);
        let src = src.transpose(1, 2).reshape([bb, c, h, w]);
        let (feat_s0, feat_s1) = (&high_res[0], &high_res[1]);
        let up = self.ln1.forward_gelu_into_matmul(&(self.dc1.forward(&src) + feat_s1));
        let up = (self.dc2.forward(&up) + feat_s0).gelu("none");
        let hyper: Vec<Tensor> =
            (0..4).map(|i| self.hypernetworks[i].forward(&mask_tokens_out.select(1, i as i64))).collect();
        let hyper = Tensor::stack(&hyper, 1);
        let (ub, uc, uh, uw) = up.size4().unwrap();
        let masks = hyper.matmul(&up.reshape([ub, uc, uh * uw])).reshape([ub, -1, uh, uw]);
        let iou = self.iou_head.forward(&iou_token_out);
        let obj = self.obj_score_head.forward(&hs.select(1, 0));
        (masks, iou, mask_tokens_out, obj)
    }

    pub fn forward(
        &self,
        image: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        multimask: bool,
        high_res: &[Tensor; 2],
    ) -> DecoderOutput {
        let (masks, iou, mask_tokens_out, object_score_logits) =
            self.predict_masks(image, image_pe, sparse, dense, high_res);
        let (masks, iou) = if multimask {
            (masks.narrow(1, 1, 3), iou.narrow(1, 1, 3))
        } else {
            dynamic_multimask_via_stability(&masks, &iou)
        };
        // `use_multimask_token_for_obj_ptr`: the three multimask tokens, else token 0.
        let sam_tokens = if multimask { mask_tokens_out.narrow(1, 1, 3) } else { mask_tokens_out.narrow(1, 0, 1) };
        DecoderOutput { masks, iou, sam_tokens, object_score_logits }
    }
}

/// Stability of a mask's logits: area above +δ over area above −δ (1 when both are 0).
fn stability_scores(logits: &Tensor) -> Tensor {
    let l = logits.flatten(-2, -1);
    let area_i = l.gt(STABILITY_DELTA).sum_dim_intlist(-1, false, Kind::Float);
    let area_u = l.gt(-STABILITY_DELTA).sum_dim_intlist(-1, false, Kind::Float);
    (&area_i / &area_u).where_self(&area_u.gt(0.0), &area_u.ones_like())
}

/// Single-mask output with the fallback to the best multimask output when token 0's
/// mask is unstable (`_dynamic_multimask_via_stability`).
fn dynamic_multimask_via_stability(masks: &Tensor, iou: &Tensor) -> (Tensor, Tensor) {
    let multi = masks.narrow(1, 1, 3);
    let multi_iou = iou.narrow(1, 1, 3);
    let best = multi_iou.argmax(-1, false);
    let b = masks.size()[0];
    let batch = Tensor::arange(b, (Kind::Int64, masks.device()));
    let best_masks = multi.index(&[Some(&batch), Some(&best)]).unsqueeze(1);
    let best_iou = multi_iou.index(&[Some(&batch), Some(&best)]).unsqueeze(1);
    let single = masks.narrow(1, 0, 1);
    let single_iou = iou.narrow(1, 0, 1);
    let stable = stability_scores(&single).ge(STABILITY_THRESH);
    let m = single.where_self(&stable.unsqueeze(-1).unsqueeze(-1).expand_as(&single), &best_masks);
    let i = single_iou.where_self(&stable.expand_as(&single_iou), &best_iou);
    (m, i)
}
