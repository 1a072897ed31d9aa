//! `SAM2Base` (`sam2/modeling/sam2_base.py`): the wiring of all modules — image features,
//! the SAM heads, memory conditioning and memory encoding. The bookkeeping of which
//! frames' memories to use lives in the predictor; this file is the arithmetic.
use super::config::{ModelSize, ModelVersion, Sam2Config};
use super::image_encoder::ImageEncoder;
use super::layers::{Activation, Conv2d, Linear, Mlp};
use super::mask_decoder::MaskDecoder;
use super::memory_attention::MemoryAttention;
use super::memory_encoder::MemoryEncoder;
use super::params::Params;
use super::position_encoding::sine_1d;
use super::prompt_encoder::PromptEncoder;
use crate::device::{Precision, PrecisionExt};
use sam2_api::tuning::Tuning;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// Low-res logits of "no object" (`NO_OBJ_SCORE`).
pub const NO_OBJ_SCORE: f64 = -1024.0;
/// `num_maskmem`: all conditioning frames + this many minus one previous frames.
pub const NUM_MASKMEM: usize = 7;
/// `max_obj_ptrs_in_encoder`.
pub const MAX_OBJ_PTRS: usize = 16;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub checkpoint: PathBuf,
    /// What the user asked for; a checkpoint of another size/version is an error.
    pub size: Option<ModelSize>,
    pub version: Option<ModelVersion>,
    pub device: Device,
    pub precision: Precision,
    /// 1024 for the official models; smaller in logic tests.
    pub image_size: i64,
    /// The knobs the model reads (TF32, attention kernels, fp32 heads, fused and CPU
    /// kernels); the predictor reads its own from `VideoOptions`.
    pub tuning: Tuning,
}

/// One frame's image features, computed once and shared by every object.
pub struct FrameFeatures {
    /// High-res features for the decoder (after conv_s0 / conv_s1): `[1,32,4e,4e]`, `[1,64,2e,2e]`.
    pub high_res: [Tensor; 2],
    /// The stride-16 feature map `[1,256,e,e]` (raw backbone output, no memory).
    pub feat: Tensor,
    /// Its sine position encoding `[1,256,e,e]`.
    pub pos: Tensor,
}

/// The prompt of one object on one frame, in model-input pixels.
pub struct PointInputs {
    /// `[1, N, 2]` float.
    pub coords: Tensor,
    /// `[1, N]` int (0 neg, 1 pos, 2/3 box corners).
    pub labels: Tensor,
}

/// Memory tokens ready for memory attention: `[M, 1, 64]` each.
pub struct AssembledMemory {
    pub tokens: Tensor,
    pub pos: Tensor,
    pub num_ptr_tokens: i64,
}

/// What the SAM heads produce for one object on one frame (`_forward_sam_heads`).
pub struct SamOutput {
    /// `[1,1,4e,4e]` the selected low-res logits (−1024 where no object).
    pub low_res_masks: Tensor,
    /// `[1,1,S,S]` the same, bilinear to the model input size.
    pub high_res_masks: Tensor,
    /// `[1,M,4e,4e]` all candidates and `[1,M]` their IoU.
    pub low_res_multimasks: Tensor,
    pub ious: Tensor,
    /// `[1,256]`.
    pub obj_ptr: Tensor,
    /// `[1,1]`.
    pub object_score_logits: Tensor,
}

/// A memory to attend to: a spatial memory with its temporal slot.
pub struct SpatialMemory<'a> {
    /// `[1,64,e,e]` (stored as bf16 like the reference).
    pub features: &'a Tensor,
    /// Index into `maskmem_tpos_enc` (6 for conditioning frames, 0 for the previous frame).
    pub tpos_index: usize,
}

/// An object pointer with its signed (2.1) or absolute (2.0) frame distance.
pub struct PointerMemory<'a> {
    pub ptr: &'a Tensor,
    pub pos: i64,
}

pub struct Sam2Base {
    pub config: Sam2Config,
    pub device: Device,
    pub precision: Precision,
    pub image_encoder: ImageEncoder,
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder,
    pub memory_attention: MemoryAttention,
    pub memory_encoder: MemoryEncoder,
    /// The high-resolution features the mask decoder reads come from the neck's lateral
    /// 1×1 conv of trunk levels 0 and 1 and the decoder's `conv_s0` / `conv_s1` (1×1),
    /// composed into one conv each. The reference computes the 256-channel maps between
    /// (at model input 1024, 256×256×256 for level 0) only to narrow them to 32 and 64
    /// channels; on two CPU cores that is 0.13 s a frame. In fp32 the composed conv agrees
    /// to ~1e-6 (video parity: max |Δlogit| 4e-6). Not under CUDA autocast, whose masks are
    /// compared with the reference's autocast masks: the reference rounds those maps to
    /// bf16, and skipping that rounding moved base_plus's masks away from the reference's
    /// (H100: 99.33 % vs 99.61 % of pixels). The CPU's pure-bf16 mode is compared with exact
    /// mode, and agrees as well composed as not (99.18 % vs 99.16 %, base_plus journal).
    high_res_convs: Option<[Conv2d; 2]>,
    maskmem_tpos_enc: Tensor,
    no_mem_embed: Tensor,
    no_obj_ptr: Tensor,
    no_obj_embed_spatial: Option<Tensor>,
    obj_ptr_proj: Mlp,
    obj_ptr_tpos_proj: Option<Linear>,
    /// `mask_downsample` (used only for mask prompts; kept for a strict load).
    _mask_downsample: Conv2d,
    /// The dtype the SAM heads compute in: the model's, except in the pure low-precision
    /// modes, which keep them in fp32 (see `Precision::fp32_modules`). Their inputs are
    /// cast on entry (a no-op where the dtypes agree).
    heads_kind: Kind,
}

impl Sam2Base {
    /// Loads an official checkpoint (`.pt` or `.safetensors`), checks it is the model the
    /// user asked for, and builds the model on the device.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Sam2Base> {
        crate::model::config::check_image_size(opts.image_size).map_err(anyhow::Error::msg)?;
        crate::device::configure_cuda_math(opts.device, &opts.tuning);
        let ckpt = crate::weights::load(&opts.checkpoint)?;
        let det = crate::weights::detect(&ckpt).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        crate::weights::check_requested(&det, opts.size, opts.version, &opts.checkpoint)?;
        let config = Sam2Config::new(det.size, det.version).with_image_size(opts.image_size);
        Self::from_tensors(config, ckpt.tensors, opts.device, opts.precision, &opts.tuning)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", opts.checkpoint.display()))
    }

    /// Builds the model from a state dict (reference key names), strictly. The fused
    /// CUDA kernels and the CPU attention kernel are called deep inside the layers and
    /// switched for the whole process: the model built last sets them from `tuning`.
    pub fn from_tensors(
        config: Sam2Config,
        tensors: BTreeMap<String, Tensor>,
        device: Device,
        precision: Precision,
        tuning: &Tuning,
    ) -> anyhow::Result<Sam2Base> {
        crate::cuda::fused::set_enabled(tuning.fused);
        crate::cuda::fused::set_keys_enabled(tuning.fused_keys);
        crate::cuda::attention::set_min_batch(tuning.cudnn_batch);
        crate::cpu::attention::set_enabled(tuning.cpu_attention);
        let fp32_modules = if tuning.fp32_heads { precision.fp32_modules(device) } else { vec![] };
        let params = Params::new(tensors, device, precision.weights_kind(device)).with_fp32_modules(&fp32_modules);
        let params = match precision.autocast(device) {
            Some(lowp) => params.with_matmul_kind(lowp),
            None => params,
        };
        let model = Self::build(config, &params, precision)?;
        params.finish()?;
        Ok(model)
    }

    /// Builds every module from `params` (which records what is missing or left over).
    pub fn build(config: Sam2Config, params: &Params, precision: Precision) -> anyhow::Result<Sam2Base> {
        let _guard = tch::no_grad_guard();
        let p = params.root();
        let device = params.device();
        let e = config.image_size / 16;
        let v21 = config.is_v2_1();
        let image_encoder = ImageEncoder::new(p.sub("image_encoder"), &config);
        let mask_decoder = MaskDecoder::new(p.sub("sam_mask_decoder"));
        let high_res_convs = precision.autocast(device).is_none().then(|| {
            [image_encoder.lateral(0).then(&mask_decoder.conv_s0), image_encoder.lateral(1).then(&mask_decoder.conv_s1)]
        });
        let model = Sam2Base {
            image_encoder,
            prompt_encoder: PromptEncoder::new(p.sub("sam_prompt_encoder"), config.image_size),
            mask_decoder,
            high_res_convs,
            memory_attention: MemoryAttention::new(p.sub("memory_attention"), e),
            memory_encoder: MemoryEncoder::new(p.sub("memory_encoder"), e),
            maskmem_tpos_enc: p.get("maskmem_tpos_enc", &[NUM_MASKMEM as i64, 1, 1, 64]),
            no_mem_embed: p.get("no_mem_embed", &[1, 1, 256]),
            no_obj_ptr: p.get("no_obj_ptr", &[1, 256]),
            no_obj_embed_spatial: v21.then(|| p.get("no_obj_embed_spatial", &[1, 64])),
            obj_ptr_proj: Mlp::new(p.sub("obj_ptr_proj"), 256, 256, 256, 3, Activation::Relu, false),
            obj_ptr_tpos_proj: v21.then(|| Linear::new(p.sub("obj_ptr_tpos_proj"), 256, 64)),
            _mask_downsample: Conv2d::new(p.sub("mask_downsample"), 1, 1, 4, 4, 0, 1),
            heads_kind: p.sub("sam_mask_decoder").kind(),
            config,
            device,
            precision,
        };
        // A parameter the reference has but never uses at inference (strict load).
        let _ = p.get("no_mem_pos_enc", &[1, 1, 256]);
        Ok(model)
    }

    /// The type of the weights and of the explicit casts (fp32 under CUDA autocast).
    pub fn kind(&self) -> Kind {
        self.precision.weights_kind(self.device)
    }

    pub fn image_size(&self) -> i64 {
        self.config.image_size
    }

    /// `forward_image` for one frame's resized pixels `[1,S,S,3]` uint8 (see
    /// `media::preprocess`): uploaded without blocking (from page-locked memory the copy
    /// overlaps the kernels still queued), then normalised on the device.
    pub fn forward_pixels(&self, pixels: &Tensor) -> FrameFeatures {
        let on_device = pixels.to_device_(self.device, Kind::Uint8, true, false);
        self.forward_image(&crate::media::preprocess::normalize(&on_device))
    }

    /// `forward_image` for one preprocessed frame `[1,3,S,S]` (fp32, normalised).
    pub fn forward_image(&self, image: &Tensor) -> FrameFeatures {
        let _g = tch::no_grad_guard();
        let x = image.to_device(self.device).to_kind(self.kind());
        let trunk = self.image_encoder.trunk(&x);
        let (high_res, out) = match &self.high_res_convs {
            Some([s0, s1]) => {
                ([s0.forward(&trunk[0]), s1.forward(&trunk[1])], self.image_encoder.forward_from(&trunk, 2))
            }
            None => {
                let out = self.image_encoder.forward_from(&trunk, 0);
                let fpn = &out.backbone_fpn;
                ([self.mask_decoder.conv_s0.forward(&fpn[0]), self.mask_decoder.conv_s1.forward(&fpn[1])], out)
            }
        };
        let level2 = out.backbone_fpn.len() - 1;
        FrameFeatures {
            high_res,
            feat: out.backbone_fpn[level2].shallow_clone(),
            pos: out.vision_pos_enc[level2].shallow_clone(),
        }
    }

    /// `_forward_sam_heads` for one object, or for a batch of objects on one frame
    /// (`pix_feat` `[B,256,e,e]`, no prompt: tracking; every output gains the batch).
    pub fn forward_sam_heads(
        &self,
        pix_feat: &Tensor,
        points: Option<&PointInputs>,
        mask_input: Option<&Tensor>,
        high_res: &[Tensor; 2],
        multimask: bool,
    ) -> SamOutput {
        let _g = tch::no_grad_guard();
        let dev = self.device;
        let b = pix_feat.size()[0];
        let (coords, labels) = match points {
            Some(p) => (p.coords.to_device(dev), p.labels.to_device(dev)),
            // No prompt: one padding point, label −1 (per object).
            None => (Tensor::zeros([b, 1, 2], (Kind::Float, dev)), Tensor::full([b, 1], -1, (Kind::Int, dev))),
        };
        let k = self.heads_kind;
        let mask = mask_input.map(|m| m.to_device(dev).to_kind(k));
        let (sparse, dense) = self.prompt_encoder.forward(&coords, &labels, mask.as_ref());
        let high_res = [high_res[0].to_kind(k), high_res[1].to_kind(k)];
        let out = self.mask_decoder.forward(
            &pix_feat.to_kind(k),
            self.prompt_encoder.dense_pe(),
            &sparse,
            &dense,
            multimask,
            &high_res,
        );
        let appearing = out.object_score_logits.gt(0.0);
        let low_multi = out
            .masks
            .where_self(
                &appearing.unsqueeze(-1).unsqueeze(-1),
                &Tensor::full([], NO_OBJ_SCORE, (out.masks.kind(), dev)),
            )
            .to_kind(Kind::Float);
        // Bilinear upsampling treats each mask on its own, so the chosen candidate is
        // picked first and only it is brought to the model's resolution: the same values
        // as the reference's upsample-all-then-pick, for a third of the work.
        let (low, token) = if multimask && b > 1 {
            // Each object's own best candidate.
            let best = out.iou.argmax(-1, false).view([b, 1, 1, 1]);
            let (_, _, h, w) = low_multi.size4().unwrap();
            let low = low_multi.gather(1, &best.expand([b, 1, h, w], false), false);
            let width = out.sam_tokens.size()[2];
            let token = out.sam_tokens.gather(1, &best.view([b, 1, 1]).expand([b, 1, width], false), false);
            (low, token.squeeze_dim(1))
        } else if multimask {
            // Index with a device tensor: no host round trip (a GPU sync) per object-frame.
            let best = out.iou.argmax(-1, false);
            (low_multi.index_select(1, &best), out.sam_tokens.index_select(1, &best).squeeze_dim(1))
        } else {
            (low_multi.shallow_clone(), out.sam_tokens.select(1, 0))
        };
        let s = self.image_size();
        let high = low.upsample_bilinear2d([s, s], false, None, None);
        let obj_ptr = self.obj_ptr_proj.forward(&token);
        // `fixed_no_obj_ptr` with a hard λ.
        let lambda = appearing.to_kind(obj_ptr.kind());
        let obj_ptr = &lambda * obj_ptr + (lambda.ones_like() - &lambda) * &self.no_obj_ptr;
        SamOutput {
            low_res_masks: low,
            high_res_masks: high,
            low_res_multimasks: low_multi,
            ious: out.iou,
            obj_ptr,
            object_score_logits: out.object_score_logits,
        }
    }

    /// `_prepare_memory_conditioned_features` once the predictor has chosen the memories.
    /// `None` memories = an initial conditioning frame: features + `no_mem_embed`.
    pub fn condition_on_memory(
        &self,
        feats: &FrameFeatures,
        memories: Option<(&[SpatialMemory], &[PointerMemory], usize)>,
    ) -> Tensor {
        let _g = tch::no_grad_guard();
        let Some((spatial, ptrs, num_frames)) = memories else {
            let (b, c, h, w) = feats.feat.size4().unwrap();
            let curr = feats.feat.flatten(2, -1).permute([2, 0, 1]);
            return (curr + &self.no_mem_embed).permute([1, 2, 0]).reshape([b, c, h, w]);
        };
        let memory = self.assemble_memory(spatial, ptrs, num_frames);
        self.attend_memory(feats, &memory.tokens, &memory.pos, memory.num_ptr_tokens)
    }

    /// The memory tokens of the chosen memories with their position encodings (spatial
    /// memories with their temporal slot, then each object pointer as four tokens).
    pub fn assemble_memory(
        &self,
        spatial: &[SpatialMemory],
        ptrs: &[PointerMemory],
        num_frames: usize,
    ) -> AssembledMemory {
        self.assemble_memories(&[(spatial, ptrs, num_frames)])
    }

    /// `assemble_memory` for B objects at once, side by side: `[L, B, 64]` tokens and
    /// positions, object b's column what `assemble_memory` gives it alone. Each member is
    /// (spatial memories, pointers, its video's frame count); every member has the same
    /// number of spatial memories and of pointers (the caller groups them so).
    /// A few copies for the whole group instead of some forty small ops per object: the
    /// features of all members go through one `cat`, the pointers through one `stack`, and
    /// the position encodings (which follow only the memories' temporal slots and the
    /// pointers' frame distances, the same for objects prompted on the same frames) are
    /// computed once per distinct layout.
    pub fn assemble_memories(&self, members: &[(&[SpatialMemory], &[PointerMemory], usize)]) -> AssembledMemory {
        let _g = tch::no_grad_guard();
        let b = members.len() as i64;
        let (s, p) = (members[0].0.len() as i64, members[0].1.len() as i64);
        assert!(
            members.iter().all(|(sp, pt, _)| sp.len() as i64 == s && pt.len() as i64 == p),
            "objects assembled together have as many memories and pointers each"
        );
        let mut tokens = Vec::new();
        if s > 0 {
            // [B·S, 64, e, e] member-major → [S·HW, B, 64]. Gathered and reordered in the
            // dtype they are stored in (bf16 in the fast mode), then converted once: one
            // conversion per memory was 112 small kernels a frame at 16 objects. The same
            // values (bf16 → fp32 is exact).
            let f: Vec<Tensor> =
                members.iter().flat_map(|(sp, _, _)| sp.iter().map(|m| self.on_model_device(m.features))).collect();
            let f = Tensor::cat(&f, 0);
            let (c, hw) = (f.size()[1], f.size()[2] * f.size()[3]);
            tokens.push(self.as_model_input(&f.view([b, s, c, hw]).permute([1, 3, 0, 2]).reshape([s * hw, b, c])));
        }
        if p > 0 {
            // Stored pointers may come back from the bank in fp32: compute in the model's
            // kind. [B·P, 1, 256] member-major → each 256-d pointer four 64-d tokens
            // [4P, B, 64].
            let f: Vec<Tensor> =
                members.iter().flat_map(|(_, pt, _)| pt.iter().map(|m| self.as_model_input(m.ptr))).collect();
            tokens.push(Tensor::stack(&f, 0).view([b, p, 4, 64]).permute([1, 2, 0, 3]).reshape([4 * p, b, 64]));
        }
        let tokens = if tokens.len() == 1 { tokens.pop().unwrap() } else { Tensor::cat(&tokens, 0) };
        // Position encodings, once per layout (temporal slots, pointer distances and the
        // pointer count they are scaled by).
        let layout = |(sp, pt, n): &(&[SpatialMemory], &[PointerMemory], usize)| {
            let slots = sp.iter().map(|m| m.tpos_index).collect::<Vec<_>>();
            (slots, pt.iter().map(|m| m.pos).collect::<Vec<_>>(), (*n).min(MAX_OBJ_PTRS))
        };
        type Layout = (Vec<usize>, Vec<i64>, usize);
        let mut seen: Vec<(Layout, Tensor)> = vec![];
        let mut pos = Vec::with_capacity(members.len());
        for m in members {
            let key = layout(m);
            let t = match seen.iter().find(|(k, _)| *k == key) {
                Some((_, t)) => t.shallow_clone(),
                None => {
                    let t = self.memory_pos(&key.0, &key.1, key.2);
                    seen.push((key, t.shallow_clone()));
                    t
                }
            };
            pos.push(t);
        }
        let pos = if seen.len() == 1 {
            let one = pos.swap_remove(0);
            if b == 1 {
                one
            } else {
                one.expand([-1, b, -1], false)
            }
        } else {
            Tensor::cat(&pos, 1)
        };
        AssembledMemory { tokens, pos, num_ptr_tokens: 4 * p }
    }

    /// `t` on the model's device, in whatever dtype it has.
    fn on_model_device(&self, t: &Tensor) -> Tensor {
        if t.device() == self.device {
            t.shallow_clone()
        } else {
            t.to_device(self.device)
        }
    }

    /// `t` on the model's device in its kind; a memory usually is already, and a
    /// conversion that changes nothing still costs a dispatcher call (hundreds of them a
    /// frame with many objects).
    fn as_model_input(&self, t: &Tensor) -> Tensor {
        if t.device() == self.device && t.kind() == self.kind() {
            t.shallow_clone()
        } else {
            t.to_device(self.device).to_kind(self.kind())
        }
    }

    /// The position encodings `[L, 1, 64]` of one object's memory tokens: each spatial
    /// memory's (the encoder's sine encoding plus its temporal slot's embedding), then
    /// each pointer's four tokens (its frame distance, sine-encoded and projected).
    fn memory_pos(&self, tpos_indices: &[usize], ptr_pos: &[i64], num_frames: usize) -> Tensor {
        let b = 1;
        let mem_pos_base = self.memory_encoder.pos().flatten(2, -1).permute([2, 0, 1]);
        let mut mem_pos: Vec<Tensor> =
            tpos_indices.iter().map(|&i| &mem_pos_base + self.maskmem_tpos_enc.get(i as i64)).collect();
        if !ptr_pos.is_empty() {
            let max_ptrs = num_frames.min(MAX_OBJ_PTRS) as f64;
            let n = ptr_pos.len() as i64;
            let obj_pos = match &self.obj_ptr_tpos_proj {
                Some(proj) => {
                    // Non-blocking: a blocking upload would wait for every queued kernel.
                    let pos = Tensor::from_slice(ptr_pos)
                        .to_device_(self.device, Kind::Int64, true, false)
                        .to_kind(Kind::Float)
                        / (max_ptrs - 1.0);
                    let pe = sine_1d(&pos, 256).to_kind(self.kind());
                    proj.forward(&pe).unsqueeze(1).expand([n, b, 64], false)
                }
                None => Tensor::zeros([n, b, 64], (self.kind(), self.device)),
            };
            mem_pos.push(obj_pos.repeat_interleave_self_int(4, 0, None));
        }
        Tensor::cat(&mem_pos, 0)
    }

    /// Memory attention of the current frame's features over assembled memory tokens.
    pub fn attend_memory(
        &self,
        feats: &FrameFeatures,
        memory: &Tensor,
        memory_pos: &Tensor,
        num_ptr_tokens: i64,
    ) -> Tensor {
        let _g = tch::no_grad_guard();
        let (b, c, h, w) = feats.feat.size4().unwrap();
        let curr = feats.feat.flatten(2, -1).permute([2, 0, 1]);
        let curr_pos = feats.pos.flatten(2, -1).permute([2, 0, 1]);
        let out = self.memory_attention.forward(&curr, &curr_pos, memory, memory_pos, num_ptr_tokens);
        out.permute([1, 2, 0]).reshape([b, c, h, w])
    }

    /// Memory attention for several objects on one frame, each over its own memory:
    /// memory `[M, B, 64]` (B objects whose memories have the same length and the same
    /// number of pointer tokens) → `[B, 256, e, e]`. Layer 0 up to its cross-attention
    /// reads only the frame, so it runs once for all of them; from there each object's
    /// stream is what `attend_memory` computes for it alone (the batch of every linear
    /// layer is larger; the cross-attention runs object by object on the CPU kernel).
    pub fn attend_memory_batched(
        &self,
        feats: &FrameFeatures,
        memory: &Tensor,
        memory_pos: &Tensor,
        num_ptr_tokens: i64,
    ) -> Tensor {
        let _g = tch::no_grad_guard();
        let b = memory.size()[1];
        let (out, q) = self.track_begin(&feats.feat, &feats.pos);
        let begun = (out.expand([b, -1, -1], false), q.expand([b, -1, -1, -1], false));
        self.attend_memory_begun(begun, memory, memory_pos, num_ptr_tokens, feats.feat.size()[2])
    }

    /// Memory attention from the first cross-attention on, for B queries each over its own
    /// memory: `begun` = `track_begin`'s (residual stream, queries) with a batch of B —
    /// one frame's repeated (several objects on one frame) or several frames' (the objects
    /// of several videos, see `predictor::streams`) — and memory `[M, B, 64]` →
    /// `[B, 256, e, e]` (`e` = the feature grid's side).
    pub fn attend_memory_begun(
        &self,
        begun: (Tensor, Tensor),
        memory: &Tensor,
        memory_pos: &Tensor,
        num_ptr_tokens: i64,
        e: i64,
    ) -> Tensor {
        let _g = tch::no_grad_guard();
        let b = memory.size()[1];
        let ma = &self.memory_attention;
        let (k_in, v_in) = self.memory_attention.memory_inputs(memory, memory_pos);
        let (mut out, mut q) = begun;
        let last = ma.num_layers() - 1;
        for i in 0..last {
            let attn = ma.cross(i, &q, &k_in, &v_in, num_ptr_tokens);
            (out, q) = ma.between(i, &out, &attn);
        }
        let attn = ma.cross(last, &q, &k_in, &v_in, num_ptr_tokens);
        let out = ma.end(&ma.after_cross(last, &out, &attn));
        let c = out.size()[2];
        out.permute([1, 2, 0]).reshape([b, c, e, e])
    }

    /// `track_step` of a propagation frame (no prompt, memory encoder on), from assembled
    /// memory to the stored output: fixed shapes and no host round trip, so a GPU can
    /// capture it as one graph. Returns (low-res masks, object pointer, object score,
    /// memory features).
    pub fn track_step(
        &self,
        feats: &FrameFeatures,
        memory: &Tensor,
        memory_pos: &Tensor,
        num_ptr_tokens: i64,
    ) -> (Tensor, Tensor, Tensor, Tensor) {
        let (k_in, v_in) = self.memory_attention.memory_inputs(memory, memory_pos);
        let last = self.memory_attention.num_layers() - 1;
        let (mut out, mut q) = self.track_begin(&feats.feat, &feats.pos);
        for i in 0..last {
            let attn = self.track_cross(i, &q, &k_in, &v_in, num_ptr_tokens);
            (out, q) = self.track_between(i, &out, &attn);
        }
        let attn = self.track_cross(last, &q, &k_in, &v_in, num_ptr_tokens);
        self.track_end(feats, &out, &attn)
    }

    /// `track_step` for several objects of one frame at once: memories `[L, B, 64]` of one
    /// length and pointer-token count (see `attend_memory_batched`), outputs `[B, …]`. No
    /// host round trip either, so a GPU captures it as one graph per object count.
    pub fn track_step_batched(
        &self,
        feats: &FrameFeatures,
        memory: &Tensor,
        memory_pos: &Tensor,
        num_ptr_tokens: i64,
    ) -> (Tensor, Tensor, Tensor, Tensor) {
        let pix = self.attend_memory_batched(feats, memory, memory_pos, num_ptr_tokens);
        let sam = self.forward_sam_heads(&pix, None, None, &feats.high_res, true);
        let maskmem = self.encode_new_memory(feats, &sam.high_res_masks, &sam.object_score_logits, false);
        (sam.low_res_masks, sam.obj_ptr, sam.object_score_logits, maskmem)
    }

    // `track_step` in parts: `track_cross` is the only one whose shapes follow the number
    // of memories, so the others can be replayed as CUDA graphs from the first tracked
    // frame on, while the memory bank is still filling (see `MemoryAttention::forward`).

    /// The memory tokens as the cross-attentions' keys and values.
    pub fn track_memory_inputs(&self, memory: &Tensor, memory_pos: &Tensor) -> (Tensor, Tensor) {
        self.memory_attention.memory_inputs(memory, memory_pos)
    }

    /// From the frame's features to the first cross-attention: (residual stream, queries).
    pub fn track_begin(&self, feat: &Tensor, pos: &Tensor) -> (Tensor, Tensor) {
        let curr = feat.flatten(2, -1).permute([2, 0, 1]);
        let curr_pos = pos.flatten(2, -1).permute([2, 0, 1]);
        let ma = &self.memory_attention;
        ma.until_cross(0, &ma.begin(&curr, &curr_pos))
    }

    /// Memory-attention layer `i`'s attention to the memory.
    pub fn track_cross(&self, i: usize, q: &Tensor, k_in: &Tensor, v_in: &Tensor, num_ptr_tokens: i64) -> Tensor {
        self.memory_attention.cross(i, q, k_in, v_in, num_ptr_tokens)
    }

    /// From layer `i`'s cross-attention to layer `i + 1`'s: (residual stream, queries).
    pub fn track_between(&self, i: usize, out: &Tensor, attn: &Tensor) -> (Tensor, Tensor) {
        let ma = &self.memory_attention;
        ma.between(i, out, attn)
    }

    /// From the last cross-attention to the stored output: the rest of memory attention,
    /// the SAM heads and the memory encoder (see `track_step`).
    pub fn track_end(&self, feats: &FrameFeatures, out: &Tensor, attn: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
        let ma = &self.memory_attention;
        let (b, c, h, w) = feats.feat.size4().unwrap();
        let pix = ma.end(&ma.after_cross(ma.num_layers() - 1, out, attn)).permute([1, 2, 0]).reshape([b, c, h, w]);
        let sam = self.forward_sam_heads(&pix, None, None, &feats.high_res, true);
        let maskmem = self.encode_new_memory(feats, &sam.high_res_masks, &sam.object_score_logits, false);
        (sam.low_res_masks, sam.obj_ptr, sam.object_score_logits, maskmem)
    }

    /// `_encode_new_memory`: the memory of one object on one frame (or of a batch of
    /// objects on one frame: masks and scores `[B, …]`), rounded through bf16 as the
    /// reference stores it.
    pub fn encode_new_memory(
        &self,
        feats: &FrameFeatures,
        high_res_masks: &Tensor,
        object_score_logits: &Tensor,
        is_mask_from_pts: bool,
    ) -> Tensor {
        let _g = tch::no_grad_guard();
        let m = high_res_masks.to_kind(self.kind());
        let mask_for_mem = if is_mask_from_pts { m.gt(0.0).to_kind(self.kind()) } else { m.sigmoid() };
        let mask_for_mem = mask_for_mem * 20.0 - 10.0;
        let mut features = self.memory_encoder.forward(&feats.feat, &mask_for_mem);
        if let Some(emb) = &self.no_obj_embed_spatial {
            let appearing = object_score_logits.gt(0.0).to_kind(self.kind());
            let add = (appearing.ones_like() - &appearing).unsqueeze(-1).unsqueeze(-1)
                * emb.unsqueeze(-1).unsqueeze(-1).expand_as(&features);
            features += add;
        }
        features.to_kind(Kind::BFloat16)
    }
}
