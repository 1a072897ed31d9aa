// cuDNN's fused attention, called directly: SDPA's dispatcher picks one backend for the
// whole process (see device.rs), but for SAM 2's memory attention the best kernel depends
// on the batch — FlashAttention for one object, cuDNN's for many (attention.rs).
#include <ATen/ATen.h>

#include "guarded.h"

using sam2_shim::guarded;

extern "C" {

// softmax(q·kᵀ/√d)·v for bf16/fp16 CUDA tensors [B, H, L, D], no mask, no dropout; q and k
// of one width, v of that width or a narrower multiple of 8 (the memory attention with its
// value projection folded out: 64-wide values, 256-wide keys). Returns 1 with `*out` set,
// 2 when it does not apply, 0 on error.
int sam2_sdpa_cudnn(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v, at::Tensor** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    const auto kind = q->scalar_type();
    if (!q->is_cuda() || (kind != at::kBFloat16 && kind != at::kHalf) || k->scalar_type() != kind || v->scalar_type() != kind ||
        q->dim() != 4 || k->dim() != 4 || v->dim() != 4 || q->size(-1) != k->size(-1) || v->size(-1) > q->size(-1) || v->size(-1) % 8 != 0)
      return 2;
    auto result = at::_scaled_dot_product_cudnn_attention(q->contiguous(), k->contiguous(), v->contiguous(), std::nullopt,
                                                          /*compute_log_sumexp=*/false, /*dropout_p=*/0.0,
                                                          /*is_causal=*/false, /*return_debug_mask=*/false);
    *out = new at::Tensor(std::get<0>(result));
    return 1;
  });
}

}  // extern "C"
