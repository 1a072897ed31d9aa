// Attention of the memory attention's cross-attention on the CPU, with the value
// projection folded out: softmax(q kᵀ·scale) · x, where x are the 64-wide memory tokens
// *before* `v_proj`. The caller applies `v_proj` to the 64-wide result afterwards; since
// every row of the softmax sums to one, (P·x)·Wᵀ + b = P·(x·Wᵀ + b) up to fp32 rounding.
// That takes the P·V half of the attention from 256 to 64 columns — on two cores, a
// quarter of the FLOPs of a full memory bank's attention.
//
// FlashAttention-style: per block of queries, blocks of keys with a running max and sum
// (online softmax), the products through the sgemm libtorch exports (MKL on x86-64
// Linux), blocks spread over as many threads as libtorch's intra-op pool has. (Plain
// threads: `at::parallel_for` is inline OpenMP, which would need this file built with
// -fopenmp and so a second OpenMP runtime beside libtorch's.) Elsewhere (or without AVX2 and
// FMA) the entry point reports "not applicable" and the caller uses SDPA.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <thread>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "guarded.h"

using sam2_shim::guarded;

#if defined(__x86_64__) && defined(__linux__)
#include <immintrin.h>

// MKL's C entry point (the lower-case names are the Fortran ones, taking pointers).
extern "C" int MKL_Set_Num_Threads_Local(int n);
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
                       const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

namespace {

constexpr int64_t kQueryBlock = 256;
constexpr int64_t kKeyBlock = 512;

// e^x for x <= 0 (Cephes' single-precision polynomial after the split x = n·ln2 + r;
// about one ulp). Inputs below -87 give ~1e-38 instead of 0, far below anything a
// softmax row keeps.
__attribute__((target("avx2,fma"))) inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, z, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

// Row `s[0..n)` → e^(s - m_new) in place; returns the row's sum.
__attribute__((target("avx2,fma"))) float exp_row(float* s, int64_t n, float m_new) {
  const __m256 m = _mm256_set1_ps(m_new);
  __m256 acc = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    __m256 p = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + c), m));
    _mm256_storeu_ps(s + c, p);
    acc = _mm256_add_ps(acc, p);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float sum = 0.f;
  for (float l : lanes) sum += l;
  for (; c < n; ++c) {
    s[c] = std::exp(s[c] - m_new);
    sum += s[c];
  }
  return sum;
}

__attribute__((target("avx2,fma"))) float max_row(const float* s, int64_t n) {
  __m256 acc = _mm256_set1_ps(-INFINITY);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) acc = _mm256_max_ps(acc, _mm256_loadu_ps(s + c));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float mx = -INFINITY;
  for (float l : lanes) mx = std::max(mx, l);
  for (; c < n; ++c) mx = std::max(mx, s[c]);
  return mx;
}

// out[Lq, Dv] = softmax(q kᵀ·scale) x for contiguous fp32 q [Lq, D], k [Lk, D], x [Lk, Dv].
void attend(const float* q, const float* k, const float* x, float* out, int64_t lq, int64_t lk, int64_t d, int64_t dv,
            float scale) {
  const int64_t blocks = (lq + kQueryBlock - 1) / kQueryBlock;
  auto run = [&](int64_t b0, int64_t b1) {
    // Each thread's block products run single-threaded: the threads are the parallelism.
    const int previous = MKL_Set_Num_Threads_Local(1);
    std::vector<float> s(kQueryBlock * kKeyBlock), acc(kQueryBlock * dv), row_max(kQueryBlock), row_sum(kQueryBlock);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * kQueryBlock, rows = std::min(kQueryBlock, lq - r0);
      std::fill(acc.begin(), acc.end(), 0.f);
      std::fill(row_max.begin(), row_max.end(), -INFINITY);
      std::fill(row_sum.begin(), row_sum.end(), 0.f);
      for (int64_t c0 = 0; c0 < lk; c0 += kKeyBlock) {
        const int64_t cols = std::min(kKeyBlock, lk - c0);
        // s[rows, cols] = q[r0.., :] · k[c0.., :]ᵀ · scale (row-major; sgemm is column-major,
        // so this is sᵀ = k · qᵀ).
        {
          const int m = static_cast<int>(cols), n = static_cast<int>(rows), kk = static_cast<int>(d);
          const int lda = static_cast<int>(d), ldb = static_cast<int>(d), ldc = static_cast<int>(cols);
          const float alpha = scale, beta = 0.f;
          sgemm_("T", "N", &m, &n, &kk, &alpha, k + c0 * d, &lda, q + r0 * d, &ldb, &beta, s.data(), &ldc);
        }
        for (int64_t r = 0; r < rows; ++r) {
          float* sr = s.data() + r * cols;
          const float m_new = std::max(row_max[r], max_row(sr, cols));
          const float sum = exp_row(sr, cols, m_new);
          const float alpha = std::exp(row_max[r] - m_new);  // 0 on the first block
          row_sum[r] = row_sum[r] * alpha + sum;
          row_max[r] = m_new;
          if (alpha != 1.f) {
            float* ar = acc.data() + r * dv;
            for (int64_t j = 0; j < dv; ++j) ar[j] *= alpha;
          }
        }
        // acc[rows, dv] += s[rows, cols] · x[c0.., :].
        {
          const int m = static_cast<int>(dv), n = static_cast<int>(rows), kk = static_cast<int>(cols);
          const int lda = static_cast<int>(dv), ldb = static_cast<int>(cols), ldc = static_cast<int>(dv);
          const float alpha = 1.f, beta = 1.f;
          sgemm_("N", "N", &m, &n, &kk, &alpha, x + c0 * dv, &lda, s.data(), &ldb, &beta, acc.data(), &ldc);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const float inv = 1.f / row_sum[r];
        for (int64_t j = 0; j < dv; ++j) out[(r0 + r) * dv + j] = acc[r * dv + j] * inv;
      }
    }
    MKL_Set_Num_Threads_Local(previous);
  };
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), blocks));
  std::vector<std::thread> helpers;
  for (int64_t t = 1; t < threads; ++t) helpers.emplace_back(run, blocks * t / threads, blocks * (t + 1) / threads);
  run(0, blocks / threads);
  for (auto& h : helpers) h.join();
}

bool supported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

}  // namespace

// q [Lq, D], k [Lk, D], x [Lk, Dv]: fp32 CPU tensors. Returns 1 with `*out` [Lq, Dv] set,
// 2 when not applicable (the caller runs SDPA), 0 on error.
extern "C" int sam2_cpu_attention_folded(const at::Tensor* q, const at::Tensor* k, const at::Tensor* x, double scale,
                                         at::Tensor** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    if (!supported()) return 2;
    for (const at::Tensor* t : {q, k, x})
      if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || t->dim() != 2) return 2;
    if (k->size(1) != q->size(1) || x->size(0) != k->size(0) || k->size(0) == 0) return 2;
    const int64_t limit = std::numeric_limits<int>::max() / 4;
    if (q->size(0) > limit || k->size(0) > limit || q->size(1) > limit || x->size(1) > limit) return 2;
    at::Tensor qc = q->contiguous(), kc = k->contiguous(), xc = x->contiguous();
    at::Tensor y = at::empty({q->size(0), x->size(1)}, q->options());
    attend(qc.data_ptr<float>(), kc.data_ptr<float>(), xc.data_ptr<float>(), y.data_ptr<float>(), q->size(0), k->size(0),
           q->size(1), x->size(1), static_cast<float>(scale));
    *out = new at::Tensor(std::move(y));
    return 1;
  });
}

#else

extern "C" int sam2_cpu_attention_folded(const at::Tensor*, const at::Tensor*, const at::Tensor*, double, at::Tensor**,
                                         char*, size_t) {
  return 2;
}

#endif
