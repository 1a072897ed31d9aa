// Fused kernels libtorch lacks, compiled at run time with NVRTC (the torch wheels ship
// libnvrtc, not nvcc) and launched through the driver API, both looked up with dlopen so
// the binary links neither.
//
// layer_norm_to_bf16: LayerNorm in fp32 with its output rounded to bf16 in the same pass.
// Under bf16 autocast every LayerNorm in front of a Linear runs in fp32 and writes fp32
// (4 bytes an element), which the Linear then reads back only to cast it to bf16 (another
// 4 + 2 bytes): on the H100 those two passes are a tenth of a tracked frame. Rounding the
// fp32 result to bf16 in the kernel gives the values the cast would, up to the order in
// which the row's mean and variance are summed (two-pass here, Welford in libtorch).
//
// rope_bf16: the rotary encoding of the memory attention's queries and keys in one pass.
// Spelled out in libtorch ops it is a cast to fp32, four multiplications, an add, a
// subtraction, a stack and a cast back, plus the tiling of the tables for each memory
// frame: over the 28k memory keys of four layers, about half a millisecond of an H100
// frame. Bit-identical to those ops (each product and sum rounded on its own).
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda.h>
#include <dlfcn.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "guarded.h"

namespace {
using sam2_shim::guarded;

// One warp per row; each lane holds PER values of the row in registers (cols <= 32 * PER).
const char* kSource = R"(
__device__ __forceinline__ unsigned short to_bf16(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN, as c10::BFloat16
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float from_bf16(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
// The input is fp32 or bf16 (`in_bf16`; autocast widens a bf16 input to fp32 exactly
// before its fp32 LayerNorm: Hiera's residual stream turns bf16 at its first projected
// shortcut). Rows are addressed through up to three leading dims (sizes s0..s2, strides
// t0..t2, in elements): a strided view needs no copy. The output is contiguous.
// With `delta` (contiguous, fp32 or bf16 per `delta_bf16`; the input then fp32) the row is
// first the residual sum x + delta, one fp32 addition an element as libtorch's add of an
// fp32 and a bf16 tensor makes it, written to `sum` (contiguous fp32) and normalised from
// registers: the memory attention's residual adds and the LayerNorms after them, one
// pass instead of two (12 bytes an element moved instead of 16).
#define LAYER_NORM(PER)                                                                      \
extern "C" __global__ void layer_norm_to_bf16_##PER(const void* __restrict__ x, int in_bf16,  \
    const float* __restrict__ w, const float* __restrict__ b, unsigned short* __restrict__ y, \
    long long rows, int cols, float eps, long long s1, long long s2, long long t0,            \
    long long t1, long long t2, const void* __restrict__ delta, int delta_bf16,               \
    float* __restrict__ sum_out) {                                                           \
  const int lane = threadIdx.x & 31;                                                         \
  const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);      \
  if (row >= rows) return;                                                                   \
  const long long i2 = row % s2, r1 = row / s2, i1 = r1 % s1, i0 = r1 / s1;                   \
  const long long off = i0 * t0 + i1 * t1 + i2 * t2;                                        \
  const float* xf = (const float*)x + off;                                                   \
  const unsigned short* xh = (const unsigned short*)x + off;                                 \
  float v[PER];                                                                              \
  float sum = 0.f;                                                                           \
  _Pragma("unroll") for (int i = 0; i < PER; i++) {                                          \
    const int c = lane + 32 * i;                                                             \
    v[i] = c < cols ? (in_bf16 ? from_bf16(xh[c]) : xf[c]) : 0.f;                           \
    if (delta && c < cols) {                                                                 \
      const long long at = row * cols + c;                                                   \
      v[i] = __fadd_rn(v[i], delta_bf16 ? from_bf16(((const unsigned short*)delta)[at])      \
                                        : ((const float*)delta)[at]);                        \
      sum_out[at] = v[i];                                                                    \
    }                                                                                        \
    sum += v[i];                                                                             \
  }                                                                                          \
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);             \
  const float mean = sum / cols;                                                             \
  float sq = 0.f;                                                                            \
  _Pragma("unroll") for (int i = 0; i < PER; i++) {                                          \
    const int c = lane + 32 * i;                                                             \
    const float d = c < cols ? v[i] - mean : 0.f;                                            \
    sq += d * d;                                                                             \
  }                                                                                          \
  for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);               \
  const float rstd = rsqrtf(sq / cols + eps);                                                \
  unsigned short* yr = y + row * cols;                                                       \
  _Pragma("unroll") for (int i = 0; i < PER; i++) {                                          \
    const int c = lane + 32 * i;                                                             \
    if (c < cols) yr[c] = to_bf16(w[c] * (rstd * (v[i] - mean)) + b[c]);                     \
  }                                                                                          \
}
LAYER_NORM(4)
LAYER_NORM(8)
LAYER_NORM(16)
LAYER_NORM(40)

// One RoPE pair (a, b) -> (a cos - b sin, a sin + b cos) in bf16, each product and sum
// rounded on its own (no FMA), as libtorch's separate kernels do: every RoPE kernel below
// rotates through this, so they agree bit for bit.
__device__ __forceinline__ unsigned int rotate_pair_bf16(float a, float b, float c, float s) {
  const float re = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  const float im = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
  return (unsigned int)to_bf16(re) | ((unsigned int)to_bf16(im) << 16);
}
// Rotary encoding of bf16 [rows, dim] rows whose position is row % tokens % positions:
// adjacent channel pairs (a, b) -> (a cos - b sin, a sin + b cos) with the cos/sin of the
// pair, each product and sum rounded on its own (no FMA), as libtorch's separate kernels
// do; rows at or past `rotated` within each sequence of `tokens` pass through.
extern "C" __global__ void rope_bf16(const unsigned short* __restrict__ x, const float* __restrict__ cos_t,
    const float* __restrict__ sin_t, unsigned short* __restrict__ y, long long pairs, int half, long long tokens,
    long long rotated, long long positions) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= pairs) return;
  const long long row = i / half;
  const int j = (int)(i - row * half);
  const long long t = row % tokens;
  const unsigned int packed = ((const unsigned int*)x)[i];
  if (t >= rotated) {
    ((unsigned int*)y)[i] = packed;
    return;
  }
  const long long k = (t % positions) * half + j;
  const float c = cos_t[k], s = sin_t[k];
  const float a = from_bf16((unsigned short)(packed & 0xffffu)), b = from_bf16((unsigned short)(packed >> 16));
  ((unsigned int*)y)[i] = rotate_pair_bf16(a, b, c, s);
}
// rope_bf16_x4: the same rotation, four pairs (16 bytes) a thread with 32-bit indices, for
// the usual case (an even number of pairs per row divisible by 4, aligned rows, fewer than
// 2^31 pairs): the 64-bit divisions and 4-byte accesses held the one-pair kernel to under
// half the memory bandwidth over the 28k memory keys. Each pair is computed exactly as above.
extern "C" __global__ void rope_bf16_x4(const uint4* __restrict__ x, const float4* __restrict__ cos_t,
    const float4* __restrict__ sin_t, uint4* __restrict__ y, int quads, int half, int tokens, int rotated, int positions) {
  const int v = blockIdx.x * blockDim.x + threadIdx.x;
  if (v >= quads) return;
  const int i = v * 4, row = i / half, j = i - row * half, t = row % tokens;
  const uint4 packed = x[v];
  if (t >= rotated) {
    y[v] = packed;
    return;
  }
  const int k = ((t % positions) * half + j) / 4;
  const float4 c = cos_t[k], s = sin_t[k];
  const unsigned int in[4] = {packed.x, packed.y, packed.z, packed.w};
  const float cs[4] = {c.x, c.y, c.z, c.w}, ss[4] = {s.x, s.y, s.z, s.w};
  unsigned int out[4];
#pragma unroll
  for (int q = 0; q < 4; q++) {
    const float a = from_bf16((unsigned short)(in[q] & 0xffffu)), b = from_bf16((unsigned short)(in[q] >> 16));
    out[q] = rotate_pair_bf16(a, b, cs[q], ss[q]);
  }
  y[v] = make_uint4(out[0], out[1], out[2], out[3]);
}
// linear64_rope_bf16: the memory attention's key projection (64 -> 256, bias) and the
// rotary encoding of its output in one pass. Spelled out, the projection writes the
// 28k-key tensor and the rotation reads and writes it again: over the 16-object batch
// that is 700 MB a layer of which 235 MB is needed. A warp computes 16 rows x 128 columns
// with tensor-core mma (bf16 in, fp32 sums), adds the bias in fp32, rounds to bf16 (where
// cuBLAS would write), and rotates each adjacent column pair exactly as rope_bf16 does:
// the accumulator fragment of m16n8k16 holds column pairs (2t, 2t + 1), the pairs RoPE
// rotates. Only the order of the 64 products' sums may differ from cuBLAS's kernel.
__device__ __forceinline__ void mma_bf16_16816(float* d, const unsigned int* a, unsigned int b0, unsigned int b1) {
#if __CUDA_ARCH__ < 800
  __trap();  // bf16 mma needs sm_80; the host never launches this kernel below that
#else
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
__device__ __forceinline__ unsigned int bias_round_rope(float v0, float v1, float b0, float b1, long long row, int pair,
    const float* __restrict__ cos_t, const float* __restrict__ sin_t, int tokens, int rotated, int positions) {
  const unsigned short h0 = to_bf16(__fadd_rn(v0, b0)), h1 = to_bf16(__fadd_rn(v1, b1));
  const int t = (int)(row % tokens);
  if (t >= rotated) return (unsigned int)h0 | ((unsigned int)h1 << 16);
  const int k = (t % positions) * 128 + pair;
  return rotate_pair_bf16(from_bf16(h0), from_bf16(h1), cos_t[k], sin_t[k]);
}
extern "C" __global__ void __launch_bounds__(256) linear64_rope_bf16(const unsigned int* __restrict__ x,
    const unsigned int* __restrict__ w, const unsigned short* __restrict__ bias, const float* __restrict__ cos_t,
    const float* __restrict__ sin_t, unsigned int* __restrict__ y, long long rows, int tokens, int rotated, int positions) {
  // The weight [256, 64] in shared memory, rows padded to 36 words: the B fragments' reads
  // (8 rows x 4 words a warp) then fall in 32 distinct banks.
  __shared__ unsigned int ws[256 * 36];
  for (int i = threadIdx.x; i < 256 * 32; i += blockDim.x) ws[(i >> 5) * 36 + (i & 31)] = w[i];
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int col0 = (warp >> 2) * 128;
  const long long tiles = (rows + 15) / 16;
  for (long long tile = (long long)blockIdx.x * 4 + (warp & 3); tile < tiles; tile += (long long)gridDim.x * 4) {
    const long long r0 = tile * 16 + g, r1 = r0 + 8;
    const bool in0 = r0 < rows, in1 = r1 < rows;
    unsigned int a[4][4];
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
      a[ks][0] = in0 ? x[r0 * 32 + ks * 8 + t] : 0u;
      a[ks][1] = in1 ? x[r1 * 32 + ks * 8 + t] : 0u;
      a[ks][2] = in0 ? x[r0 * 32 + ks * 8 + 4 + t] : 0u;
      a[ks][3] = in1 ? x[r1 * 32 + ks * 8 + 4 + t] : 0u;
    }
#pragma unroll 2
    for (int nt = 0; nt < 16; nt++) {
      const int n = col0 + nt * 8;
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      const unsigned int* wn = ws + (n + g) * 36;
#pragma unroll
      for (int ks = 0; ks < 4; ks++) mma_bf16_16816(d, a[ks], wn[ks * 8 + t], wn[ks * 8 + 4 + t]);
      const int col = n + 2 * t;
      const float b0 = from_bf16(bias[col]), b1 = from_bf16(bias[col + 1]);
      if (in0) y[r0 * 128 + (col >> 1)] = bias_round_rope(d[0], d[1], b0, b1, r0, col >> 1, cos_t, sin_t, tokens, rotated, positions);
      if (in1) y[r1 * 128 + (col >> 1)] = bias_round_rope(d[2], d[3], b0, b1, r1, col >> 1, cos_t, sin_t, tokens, rotated, positions);
    }
  }
}
// layer_norm_2d_*: `LayerNorm2d` (normalised over the channels of an NCHW tensor, bf16 or
// fp32, contiguous or channels-last) as libtorch computes it under bf16 autocast, instead
// of nine passes (two means, a subtraction, a square, an add, a sqrt, a division, a scale
// and a shift), optionally followed by the exact GELU. The steps and their roundings for a
// bf16 input: u = bf16(mean x); d = bf16(x - u); autocast widens d for `pow`, so
// s = mean(d²) in fp32; r = sqrt(s + eps) in fp32; y = w * (d / r) + b in fp32 (fp32
// weights). For an fp32 input (the mask decoder's, whose high-resolution features stay
// fp32) every step is fp32. The sums run in another order than libtorch's reductions: u
// can differ for a value on a bf16 rounding boundary, s by an fp32 rounding. The output is
// fp32, as the spelled-out ops give, or (`out_bf16`) that value rounded to bf16, as the
// convolution or Linear that consumes it under autocast would round it: half the bytes
// written and no separate cast.
__device__ __forceinline__ float load_any(const void* x, int in_bf16, long long i) {
  return in_bf16 ? from_bf16(((const unsigned short*)x)[i]) : ((const float*)x)[i];
}
__device__ __forceinline__ void store_any(void* y, int out_bf16, long long i, float v) {
  if (out_bf16) ((unsigned short*)y)[i] = to_bf16(v);
  else ((float*)y)[i] = v;
}
__device__ __forceinline__ float ln2d_mean(float sum, float factor, int in_bf16) {
  const float u = __fmul_rn(sum, factor);  // libtorch's mean: the sum times outputs / inputs
  return in_bf16 ? from_bf16(to_bf16(u)) : u;
}
__device__ __forceinline__ float ln2d_dev(float x, float u, int in_bf16) {
  const float d = __fsub_rn(x, u);
  return in_bf16 ? from_bf16(to_bf16(d)) : d;
}
__device__ __forceinline__ float ln2d_out(float d, float r, float w, float b, int gelu) {
  float v = __fadd_rn(__fmul_rn(w, __fdiv_rn(d, r)), b);
  // libtorch's GELU: x * 0.5 * (1 + erf(x * M_SQRT1_2)), each step rounded.
  if (gelu) v = __fmul_rn(__fmul_rn(v, 0.5f), __fadd_rn(1.0f, erff(__fmul_rn(v, 0.70710678118654752440f))));
  return v;
}
// Contiguous NCHW: a block is 32 neighbouring pixels (the contiguous dim, so each warp's
// loads are coalesced) by 8 groups of channels, reduced through shared memory. One thread
// per pixel walking all its channels left the GPU mostly idle at 64x64 x 256 channels.
extern "C" __global__ void layer_norm_2d_nchw(const void* __restrict__ x, int in_bf16, const float* __restrict__ w,
    const float* __restrict__ b, void* __restrict__ y, int out_bf16, long long pixels, long long hw, int channels,
    float factor, float eps, int gelu) {
  __shared__ float part[8][32];
  __shared__ float stat[32];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const long long p = (long long)blockIdx.x * 32 + tx;
  const bool live = p < pixels;
  const long long n = live ? p / hw : 0;
  const long long at = live ? n * channels * hw + (p - n * hw) : 0;
  float sum = 0.f;
  if (live)
    for (int c = ty; c < channels; c += 8) sum = __fadd_rn(sum, load_any(x, in_bf16, at + c * hw));
  part[ty][tx] = sum;
  __syncthreads();
  if (ty == 0) {
    float s = 0.f;
    for (int i = 0; i < 8; i++) s = __fadd_rn(s, part[i][tx]);
    stat[tx] = ln2d_mean(s, factor, in_bf16);
  }
  __syncthreads();
  const float u = stat[tx];
  float sq = 0.f;
  if (live)
    for (int c = ty; c < channels; c += 8) {
      const float d = ln2d_dev(load_any(x, in_bf16, at + c * hw), u, in_bf16);
      sq = __fadd_rn(sq, __fmul_rn(d, d));
    }
  __syncthreads();
  part[ty][tx] = sq;
  __syncthreads();
  if (ty == 0) {
    float s = 0.f;
    for (int i = 0; i < 8; i++) s = __fadd_rn(s, part[i][tx]);
    stat[tx] = __fsqrt_rn(__fadd_rn(__fmul_rn(s, factor), eps));
  }
  __syncthreads();
  const float r = stat[tx];
  if (live)
    for (int c = ty; c < channels; c += 8)
      store_any(y, out_bf16, at + c * hw, ln2d_out(ln2d_dev(load_any(x, in_bf16, at + c * hw), u, in_bf16), r, w[c], b[c], gelu));
}
// Channels-last (the depthwise convolution's output): one warp per pixel, the lanes along
// its contiguous channels, reduced with shuffles (every lane ends with the same sums).
extern "C" __global__ void layer_norm_2d_nhwc(const void* __restrict__ x, int in_bf16, const float* __restrict__ w,
    const float* __restrict__ b, void* __restrict__ y, int out_bf16, long long pixels, int channels, float factor,
    float eps, int gelu) {
  const int lane = threadIdx.x & 31;
  const long long p = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (p >= pixels) return;
  const long long at = p * channels;
  float sum = 0.f;
  for (int c = lane; c < channels; c += 32) sum = __fadd_rn(sum, load_any(x, in_bf16, at + c));
  for (int o = 16; o > 0; o >>= 1) sum = __fadd_rn(sum, __shfl_xor_sync(0xffffffffu, sum, o));
  const float u = ln2d_mean(sum, factor, in_bf16);
  float sq = 0.f;
  for (int c = lane; c < channels; c += 32) {
    const float d = ln2d_dev(load_any(x, in_bf16, at + c), u, in_bf16);
    sq = __fadd_rn(sq, __fmul_rn(d, d));
  }
  for (int o = 16; o > 0; o >>= 1) sq = __fadd_rn(sq, __shfl_xor_sync(0xffffffffu, sq, o));
  const float r = __fsqrt_rn(__fadd_rn(__fmul_rn(sq, factor), eps));
  for (int c = lane; c < channels; c += 32)
    store_any(y, out_bf16, at + c, ln2d_out(ln2d_dev(load_any(x, in_bf16, at + c), u, in_bf16), r, w[c], b[c], gelu));
}
// conv3x3s2_ln_gelu_CIN_COUT: a stage of the mask downsampler (a 3x3 convolution with
// stride 2 and padding 1, then LayerNorm2d and GELU) for its first two, narrow stages
// (1 -> 4 and 4 -> 16 channels over 1024² and 512² masks), one output pixel a thread with
// all its channels in registers. cuDNN runs these as a grouped direct kernel (0.8 ms of an
// H100 frame at 16 objects for 0.6 GFLOP) and libtorch adds the bias, normalises and
// applies GELU in further passes. The steps follow libtorch under bf16 autocast: the input
// rounded to bf16, an fp32 accumulation rounded to bf16 (in another order than cuDNN's),
// the bias added to that in fp32 and rounded again (libtorch's separate `add_`), then
// layer_norm_2d's steps on bf16, and the result rounded to bf16 for the next convolution.
#define CONV_LN_GELU(CIN, COUT)                                                                           \
extern "C" __global__ void conv3x3s2_ln_gelu_##CIN##_##COUT(const void* __restrict__ x, int in_bf16,      \
    const unsigned short* __restrict__ wt, const unsigned short* __restrict__ bias,                       \
    const float* __restrict__ lw, const float* __restrict__ lb, unsigned short* __restrict__ y,           \
    long long outputs, int h, int w, int oh, int ow, float factor, float eps) {                           \
  __shared__ float sw[COUT * CIN * 9];                                                                    \
  __shared__ float sb[COUT], slw[COUT], slb[COUT];                                                        \
  for (int i = threadIdx.x; i < COUT * CIN * 9; i += blockDim.x) sw[i] = from_bf16(wt[i]);                \
  for (int i = threadIdx.x; i < COUT; i += blockDim.x) {                                                  \
    sb[i] = from_bf16(bias[i]);                                                                           \
    slw[i] = lw[i];                                                                                       \
    slb[i] = lb[i];                                                                                       \
  }                                                                                                       \
  __syncthreads();                                                                                        \
  const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;                                   \
  if (p >= outputs) return;                                                                               \
  const long long plane = (long long)oh * ow, img = p / plane;                                            \
  const int rem = (int)(p - img * plane), oy = rem / ow, ox = rem - oy * ow;                               \
  float acc[COUT];                                                                                        \
  _Pragma("unroll") for (int co = 0; co < COUT; co++) acc[co] = 0.f;                                      \
  _Pragma("unroll") for (int ci = 0; ci < CIN; ci++) {                                                    \
    const long long base = (img * CIN + ci) * (long long)h * w;                                           \
    _Pragma("unroll") for (int ky = 0; ky < 3; ky++) {                                                    \
      const int iy = 2 * oy - 1 + ky;                                                                     \
      if (iy < 0 || iy >= h) continue;                                                                    \
      _Pragma("unroll") for (int kx = 0; kx < 3; kx++) {                                                  \
        const int ix = 2 * ox - 1 + kx;                                                                   \
        if (ix < 0 || ix >= w) continue;                                                                  \
        const long long i = base + (long long)iy * w + ix;                                                \
        const float v = in_bf16 ? from_bf16(((const unsigned short*)x)[i]) : from_bf16(to_bf16(((const float*)x)[i])); \
        _Pragma("unroll") for (int co = 0; co < COUT; co++)                                               \
          acc[co] = fmaf(v, sw[(co * CIN + ci) * 9 + ky * 3 + kx], acc[co]);                               \
      }                                                                                                   \
    }                                                                                                     \
  }                                                                                                       \
  float sum = 0.f;                                                                                        \
  _Pragma("unroll") for (int co = 0; co < COUT; co++) {                                                   \
    acc[co] = from_bf16(to_bf16(__fadd_rn(from_bf16(to_bf16(acc[co])), sb[co])));                         \
    sum = __fadd_rn(sum, acc[co]);                                                                        \
  }                                                                                                       \
  const float u = ln2d_mean(sum, factor, 1);                                                              \
  float sq = 0.f;                                                                                         \
  _Pragma("unroll") for (int co = 0; co < COUT; co++) {                                                   \
    const float d = ln2d_dev(acc[co], u, 1);                                                              \
    sq = __fadd_rn(sq, __fmul_rn(d, d));                                                                  \
  }                                                                                                       \
  const float r = __fsqrt_rn(__fadd_rn(__fmul_rn(sq, factor), eps));                                      \
  unsigned short* out = y + img * COUT * plane + rem;                                                     \
  _Pragma("unroll") for (int co = 0; co < COUT; co++)                                                     \
    out[co * plane] = to_bf16(ln2d_out(ln2d_dev(acc[co], u, 1), r, slw[co], slb[co], 1));                 \
}
CONV_LN_GELU(1, 4)
CONV_LN_GELU(4, 16)
)";
const int kPer[] = {4, 8, 16, 40};

struct Nvrtc {
  int (*create)(void**, const char*, const char*, int, const char* const*, const char* const*);
  int (*compile)(void*, int, const char* const*);
  int (*log_size)(void*, size_t*);
  int (*log)(void*, char*);
  int (*cubin_size)(void*, size_t*);
  int (*cubin)(void*, char*);
  int (*destroy)(void**);
};

struct Driver {
  CUresult (*load)(CUmodule*, const void*);
  CUresult (*function)(CUfunction*, CUmodule, const char*);
  CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void**, void**);
  CUresult (*device)(CUdevice*, int);
  CUresult (*attribute)(int*, CUdevice_attribute, CUdevice);
};

template <class T>
void sym(void* lib, const char* name, T& out) {
  out = reinterpret_cast<T>(dlsym(lib, name));
  if (!out) throw std::runtime_error(std::string("missing symbol ") + name);
}

// libnvrtc sits next to the CUDA runtime the torch wheel ships (nvidia/cu13/lib); it is
// not loaded until something compiles, so it is looked for there as well.
void* find_nvrtc() {
  for (const char* name : {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}) {
    if (void* h = dlopen(name, RTLD_NOW | RTLD_GLOBAL)) return h;
  }
  Dl_info info{};
  void* runtime_symbol = dlsym(RTLD_DEFAULT, "cudaGetDevice");
  if (runtime_symbol && dladdr(runtime_symbol, &info) && info.dli_fname) {
    std::string dir(info.dli_fname);
    dir = dir.substr(0, dir.rfind('/'));
    for (const char* name : {"/libnvrtc.so.13", "/libnvrtc.so.12"}) {
      if (void* h = dlopen((dir + name).c_str(), RTLD_NOW | RTLD_GLOBAL)) return h;
    }
  }
  throw std::runtime_error("libnvrtc not found");
}

// libnvrtc opens its builtins (libnvrtc-builtins.so.MAJOR.MINOR) by name when it first
// compiles, and the wheel's libnvrtc has no RUNPATH: outside a CUDA toolkit on the
// loader's path, every compile failed with "failed to open libnvrtc-builtins", which
// turned the fused kernels off. Loading the builtins beside libnvrtc first makes that
// name resolve to them.
void* open_nvrtc() {
  void* h = find_nvrtc();
  int (*version)(int*, int*) = reinterpret_cast<int (*)(int*, int*)>(dlsym(h, "nvrtcVersion"));
  Dl_info info{};
  int major = 0, minor = 0;
  if (version && version(&major, &minor) == 0 && dladdr(reinterpret_cast<void*>(version), &info) && info.dli_fname) {
    std::string dir(info.dli_fname);
    dir = dir.substr(0, dir.rfind('/') + 1);
    dlopen((dir + "libnvrtc-builtins.so." + std::to_string(major) + "." + std::to_string(minor)).c_str(), RTLD_NOW | RTLD_GLOBAL);
  }
  return h;
}

struct Kernels {
  CUfunction fn[4];
  CUfunction rope;
  CUfunction rope_x4;
  CUfunction linear64_rope;
  int major;  // compute capability: linear64_rope needs 8 (bf16 mma) or more
  CUfunction layer_norm_2d_nchw;
  CUfunction layer_norm_2d_nhwc;
  CUfunction conv_ln_gelu[2];  // (1 -> 4), (4 -> 16) channels
  Driver driver;
};

// The kernels of kSource compiled by NVRTC for compute capability `sm` (e.g. 90) into a
// cubin; needs no GPU, so a test can check every architecture on any machine.
std::vector<char> compile_for(int sm) {
  void* nv = open_nvrtc();
  Nvrtc n{};
  sym(nv, "nvrtcCreateProgram", n.create);
  sym(nv, "nvrtcCompileProgram", n.compile);
  sym(nv, "nvrtcGetProgramLogSize", n.log_size);
  sym(nv, "nvrtcGetProgramLog", n.log);
  sym(nv, "nvrtcGetCUBINSize", n.cubin_size);
  sym(nv, "nvrtcGetCUBIN", n.cubin);
  sym(nv, "nvrtcDestroyProgram", n.destroy);
  std::string arch = "--gpu-architecture=sm_" + std::to_string(sm);
  const char* opts[] = {arch.c_str(), "--std=c++17"};
  void* prog = nullptr;
  if (n.create(&prog, kSource, "sam2_fused.cu", 0, nullptr, nullptr) != 0) throw std::runtime_error("nvrtcCreateProgram failed");
  int rc = n.compile(prog, 2, opts);
  if (rc != 0) {
    size_t len = 0;
    n.log_size(prog, &len);
    std::string log(len, '\0');
    n.log(prog, log.data());
    n.destroy(&prog);
    throw std::runtime_error("NVRTC (" + arch + "): " + log.substr(0, 300));
  }
  size_t size = 0;
  n.cubin_size(prog, &size);
  std::vector<char> cubin(size);
  n.cubin(prog, cubin.data());
  n.destroy(&prog);
  return cubin;
}

// Compiled once per device on first use; a failure is remembered and reported each time.
Kernels* kernels_for(int device) {
  static std::mutex lock;
  static std::vector<Kernels*> built(64, nullptr);
  static std::vector<std::string> failed(64);
  std::lock_guard<std::mutex> guard(lock);
  if (device < 0 || device >= 64) throw std::runtime_error("device index out of range");
  if (built[device]) return built[device];
  if (!failed[device].empty()) throw std::runtime_error(failed[device]);
  try {
    void* cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!cu) throw std::runtime_error("libcuda.so.1 not found");
    auto* k = new Kernels{};
    sym(cu, "cuModuleLoadData", k->driver.load);
    sym(cu, "cuModuleGetFunction", k->driver.function);
    sym(cu, "cuLaunchKernel", k->driver.launch);
    sym(cu, "cuDeviceGet", k->driver.device);
    sym(cu, "cuDeviceGetAttribute", k->driver.attribute);

    CUdevice dev;
    int major = 0, minor = 0;
    if (k->driver.device(&dev, device) != CUDA_SUCCESS ||
        k->driver.attribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev) != CUDA_SUCCESS ||
        k->driver.attribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev) != CUDA_SUCCESS)
      throw std::runtime_error("cannot read the device's compute capability");
    k->major = major;
    std::vector<char> cubin = compile_for(major * 10 + minor);
    // The module loads into the current device's (primary) context.
    const auto previous = c10::cuda::current_device();
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    CUmodule module;
    const CUresult loaded = k->driver.load(&module, cubin.data());
    c10::cuda::set_device(previous);
    if (loaded != CUDA_SUCCESS) throw std::runtime_error("cuModuleLoadData failed");
    for (int i = 0; i < 4; i++) {
      std::string name = "layer_norm_to_bf16_" + std::to_string(kPer[i]);
      if (k->driver.function(&k->fn[i], module, name.c_str()) != CUDA_SUCCESS) throw std::runtime_error("cuModuleGetFunction failed");
    }
    if (k->driver.function(&k->rope, module, "rope_bf16") != CUDA_SUCCESS) throw std::runtime_error("cuModuleGetFunction failed");
    if (k->driver.function(&k->rope_x4, module, "rope_bf16_x4") != CUDA_SUCCESS) throw std::runtime_error("cuModuleGetFunction failed");
    if (k->driver.function(&k->linear64_rope, module, "linear64_rope_bf16") != CUDA_SUCCESS) throw std::runtime_error("cuModuleGetFunction failed");
    for (auto [fn, name] : {std::pair{&k->layer_norm_2d_nchw, "layer_norm_2d_nchw"}, std::pair{&k->layer_norm_2d_nhwc, "layer_norm_2d_nhwc"},
                            std::pair{&k->conv_ln_gelu[0], "conv3x3s2_ln_gelu_1_4"}, std::pair{&k->conv_ln_gelu[1], "conv3x3s2_ln_gelu_4_16"}})
      if (k->driver.function(fn, module, name) != CUDA_SUCCESS) throw std::runtime_error(std::string("cuModuleGetFunction failed: ") + name);
    built[device] = k;
    return k;
  } catch (const std::exception& e) {
    failed[device] = e.what();
    throw;
  }
}
bool autocast_bf16() {
  return at::autocast::is_autocast_enabled(at::kCUDA) && at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16;
}

bool channel_params(const at::Tensor* w, const at::Tensor* b, int64_t channels) {
  return w->scalar_type() == at::kFloat && b->scalar_type() == at::kFloat && w->is_contiguous() && b->is_contiguous() &&
         w->numel() == channels && b->numel() == channels;
}

void launch(Kernels* k, CUfunction fn, int device, long long blocks, unsigned threads, void** args) {
  if (blocks <= 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
  if (k->driver.launch(fn, static_cast<unsigned>(blocks), 1, 1, threads, 1, 1, 0, reinterpret_cast<CUstream>(stream), args, nullptr) !=
      CUDA_SUCCESS)
    throw std::runtime_error("cuLaunchKernel failed");
}

}  // namespace

extern "C" {

// Compiles the kernels for compute capability `sm` without loading them (no GPU needed).
// Returns 1 when they compile, 0 with the compiler's log in `err`.
int sam2_fused_compile(int sm, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    compile_for(sm);
    return 1;
  });
}

// LayerNorm over the last dim of an fp32 or bf16 CUDA tensor (at most 4-d, last dim dense),
// written as a contiguous bf16 tensor: only while bf16 autocast is on (the dtype the
// consuming Linear would cast to). Returns 1 with `*out` set, 2 when not applicable (the
// caller runs the ordinary LayerNorm), 0 on error.
// With `delta`, the LayerNorm follows a residual add: `*out` = LayerNorm(x + delta) in
// bf16, and `sum` (an fp32 tensor of x's shape, contiguous, made by the caller) = x + delta;
// x contiguous fp32, delta of its shape, contiguous, fp32 or bf16. Without (null `delta`
// and `sum`) it is the LayerNorm of x alone.
int sam2_add_layer_norm_to_bf16(const at::Tensor* x, const at::Tensor* delta, const at::Tensor* sum, const at::Tensor* w, const at::Tensor* b,
                                double eps, at::Tensor** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    const bool in_bf16 = x->scalar_type() == at::kBFloat16;
    if (!x->is_cuda() || (x->scalar_type() != at::kFloat && !in_bf16) || x->dim() < 1 || x->dim() > 4 || x->stride(-1) != 1) return 2;
    if (delta) {
      if (in_bf16 || !x->is_contiguous() || !delta->is_cuda() || delta->get_device() != x->get_device() || delta->sizes() != x->sizes() ||
          !delta->is_contiguous() || (delta->scalar_type() != at::kFloat && delta->scalar_type() != at::kBFloat16) || !sum ||
          !sum->is_cuda() || sum->get_device() != x->get_device() || sum->scalar_type() != at::kFloat || sum->sizes() != x->sizes() ||
          !sum->is_contiguous())
        return 2;
    }
    if (!at::autocast::is_autocast_enabled(at::kCUDA) || at::autocast::get_autocast_dtype(at::kCUDA) != at::kBFloat16) return 2;
    const int64_t cols = x->size(-1);
    if (cols > 32 * 40 || w->scalar_type() != at::kFloat || b->scalar_type() != at::kFloat || !w->is_contiguous() || !b->is_contiguous() ||
        w->numel() != cols || b->numel() != cols)
      return 2;
    const int device = x->get_device();
    Kernels* k = kernels_for(device);
    int which = 0;
    while (32 * kPer[which] < cols) which++;
    at::Tensor y = at::empty(x->sizes(), x->options().dtype(at::kBFloat16));
    long long rows = cols == 0 ? 0 : x->numel() / cols;
    int c = static_cast<int>(cols);
    float e = static_cast<float>(eps);
    // The leading dims, right-aligned into three (missing ones: size 1).
    long long size[3] = {1, 1, 1}, stride[3] = {0, 0, 0};
    for (int64_t d = x->dim() - 2, k = 2; d >= 0; d--, k--) {
      size[k] = x->size(d);
      stride[k] = x->stride(d);
    }
    const void* xp = x->data_ptr();
    const void* wp = w->data_ptr();
    const void* bp = b->data_ptr();
    void* yp = y.data_ptr();
    int bf16_input = in_bf16 ? 1 : 0;
    const void* dp = delta ? delta->data_ptr() : nullptr;
    int bf16_delta = delta && delta->scalar_type() == at::kBFloat16 ? 1 : 0;
    void* sp = delta ? sum->data_ptr() : nullptr;
    void* args[] = {&xp, &bf16_input, &wp, &bp, &yp, &rows, &c, &e, &size[1], &size[2], &stride[0], &stride[1], &stride[2], &dp, &bf16_delta, &sp};
    const unsigned threads = 256, rows_per_block = threads / 32;
    const unsigned blocks = static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block);
    if (rows > 0) {
      auto stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
      if (k->driver.launch(k->fn[which], blocks, 1, 1, threads, 1, 1, 0, reinterpret_cast<CUstream>(stream), args, nullptr) != CUDA_SUCCESS)
        throw std::runtime_error("cuLaunchKernel failed");
    }
    *out = new at::Tensor(std::move(y));
    return 1;
  });
}

// Rotary encoding of a contiguous bf16 CUDA tensor [..., tokens, dim] with fp32 tables
// [positions, dim/2] (positions dividing the rotated rows: memory frames tile them); the
// last tokens - rotated rows of each sequence pass through (object-pointer tokens).
// Returns 1 with `*out` set, 2 when not applicable, 0 on error.
int sam2_rope_bf16(const at::Tensor* x, const at::Tensor* cos_t, const at::Tensor* sin_t, int64_t rotated, at::Tensor** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    if (!x->is_cuda() || x->scalar_type() != at::kBFloat16 || !x->is_contiguous() || x->dim() < 2 ||
        reinterpret_cast<uintptr_t>(x->data_ptr()) % 4 != 0)
      return 2;
    const int64_t dim = x->size(-1), tokens = x->size(-2);
    if (dim % 2 != 0 || !cos_t->is_cuda() || cos_t->scalar_type() != at::kFloat || !cos_t->is_contiguous() || !sin_t->is_contiguous() ||
        sin_t->scalar_type() != at::kFloat || cos_t->dim() != 2 || cos_t->size(1) != dim / 2 || sin_t->sizes() != cos_t->sizes())
      return 2;
    const int64_t positions = cos_t->size(0);
    if (rotated < 0 || rotated > tokens || positions == 0 || rotated % positions != 0) return 2;
    const int device = x->get_device();
    Kernels* k = kernels_for(device);
    at::Tensor y = at::empty(x->sizes(), x->options());
    long long pairs = x->numel() / 2, tok = tokens, rot = rotated, pos = positions;
    int half = static_cast<int>(dim / 2);
    const void* xp = x->data_ptr();
    const void* cp = cos_t->data_ptr();
    const void* sp = sin_t->data_ptr();
    void* yp = y.data_ptr();
    void* args[] = {&xp, &cp, &sp, &yp, &pairs, &half, &tok, &rot, &pos};
    const unsigned threads = 256;
    auto stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
    const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    if (half % 4 == 0 && pairs < (1LL << 31) && aligned(xp) && aligned(cp) && aligned(sp) && aligned(yp)) {
      int quads = static_cast<int>(pairs / 4), h = half, t32 = static_cast<int>(tok), r32 = static_cast<int>(rot),
          p32 = static_cast<int>(pos);
      void* args4[] = {&xp, &cp, &sp, &yp, &quads, &h, &t32, &r32, &p32};
      const unsigned blocks = static_cast<unsigned>((quads + threads - 1) / threads);
      if (quads > 0 && k->driver.launch(k->rope_x4, blocks, 1, 1, threads, 1, 1, 0, reinterpret_cast<CUstream>(stream), args4, nullptr) !=
                           CUDA_SUCCESS)
        throw std::runtime_error("cuLaunchKernel failed");
    } else if (pairs > 0) {
      const unsigned blocks = static_cast<unsigned>((pairs + threads - 1) / threads);
      if (k->driver.launch(k->rope, blocks, 1, 1, threads, 1, 1, 0, reinterpret_cast<CUstream>(stream), args, nullptr) != CUDA_SUCCESS)
        throw std::runtime_error("cuLaunchKernel failed");
    }
    *out = new at::Tensor(std::move(y));
    return 1;
  });
}

// The key projection of the memory attention, Linear(64 -> 256) with a bias, then the
// rotary encoding of its output as sam2_rope_bf16 does it, in one kernel: x a contiguous
// bf16 CUDA tensor [..., tokens, 64], weight [256, 64] and bias [256] contiguous bf16,
// fp32 tables [positions, 128]. Returns 1 with `*out` ([..., tokens, 256] bf16) set, 2 when
// not applicable, 0 on error.
int sam2_linear64_rope_bf16(const at::Tensor* x, const at::Tensor* w, const at::Tensor* b, const at::Tensor* cos_t, const at::Tensor* sin_t,
                            int64_t rotated, at::Tensor** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    const auto bf16_dense = [](const at::Tensor* t) {
      return t->is_cuda() && t->scalar_type() == at::kBFloat16 && t->is_contiguous() && reinterpret_cast<uintptr_t>(t->data_ptr()) % 4 == 0;
    };
    if (!bf16_dense(x) || !bf16_dense(w) || !bf16_dense(b) || x->dim() < 2 || x->size(-1) != 64 || w->dim() != 2 || w->size(0) != 256 ||
        w->size(1) != 64 || b->numel() != 256 || w->get_device() != x->get_device() || b->get_device() != x->get_device())
      return 2;
    if (!cos_t->is_cuda() || cos_t->scalar_type() != at::kFloat || !cos_t->is_contiguous() || !sin_t->is_contiguous() ||
        sin_t->scalar_type() != at::kFloat || cos_t->dim() != 2 || cos_t->size(1) != 128 || sin_t->sizes() != cos_t->sizes())
      return 2;
    const int64_t tokens = x->size(-2), positions = cos_t->size(0);
    if (rotated < 0 || rotated > tokens || positions == 0 || rotated % positions != 0 || tokens >= (1LL << 31)) return 2;
    const int device = x->get_device();
    Kernels* k = kernels_for(device);
    if (k->major < 8) return 2;
    auto sizes = x->sizes().vec();
    sizes.back() = 256;
    at::Tensor y = at::empty(sizes, x->options());
    long long rows = x->numel() / 64;
    int tok = static_cast<int>(tokens), rot = static_cast<int>(rotated), pos = static_cast<int>(positions);
    const void *xp = x->data_ptr(), *wp = w->data_ptr(), *bp = b->data_ptr(), *cp = cos_t->data_ptr(), *sp = sin_t->data_ptr();
    void* yp = y.data_ptr();
    void* args[] = {&xp, &wp, &bp, &cp, &sp, &yp, &rows, &tok, &rot, &pos};
    // Four 16-row tiles a block; the blocks loop over the rest, so each loads the weight once.
    const long long tiles = (rows + 15) / 16;
    launch(k, k->linear64_rope, device, std::min<long long>((tiles + 3) / 4, 132LL * 6), 256, args);
    *out = new at::Tensor(std::move(y));
    return 1;
  });
}

// LayerNorm2d of an NCHW (contiguous or channels-last) bf16 or fp32 CUDA tensor under bf16
// autocast, with fp32 weight and bias of C values, then GELU if `gelu`: the fp32 tensor the
// spelled-out ops give, or that rounded to bf16 if `out_bf16`, in the input's layout.
// Returns 1 with `*out` set, 2 when not applicable, 0 on error.
int sam2_layer_norm_2d(const at::Tensor* x, const at::Tensor* w, const at::Tensor* b, double eps, int gelu, int out_bf16,
                       at::Tensor** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    const bool in_bf16 = x->scalar_type() == at::kBFloat16;
    if (!x->is_cuda() || (!in_bf16 && x->scalar_type() != at::kFloat) || x->dim() != 4) return 2;
    const bool nhwc = !x->is_contiguous() && x->is_contiguous(at::MemoryFormat::ChannelsLast);
    if (!x->is_contiguous() && !nhwc) return 2;
    const int64_t channels = x->size(1);
    if (!autocast_bf16() || channels == 0 || !channel_params(w, b, channels)) return 2;
    const int device = x->get_device();
    Kernels* k = kernels_for(device);
    at::Tensor y = at::empty(x->sizes(), x->options()
                                             .dtype(out_bf16 ? at::kBFloat16 : at::kFloat)
                                             .memory_format(nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
    long long hw = x->size(2) * x->size(3), pixels = x->size(0) * hw;
    int c = static_cast<int>(channels), g = gelu ? 1 : 0, ib = in_bf16 ? 1 : 0, ob = out_bf16 ? 1 : 0;
    // libtorch's mean multiplies the sum by outputs / inputs, taken in float.
    float factor = static_cast<float>(pixels) / static_cast<float>(x->numel()), e = static_cast<float>(eps);
    const void* xp = x->data_ptr();
    const void* wp = w->data_ptr();
    const void* bp = b->data_ptr();
    void* yp = y.data_ptr();
    if (nhwc) {
      void* args[] = {&xp, &ib, &wp, &bp, &yp, &ob, &pixels, &c, &factor, &e, &g};
      launch(k, k->layer_norm_2d_nhwc, device, (pixels + 7) / 8, 256, args);
    } else {
      void* args[] = {&xp, &ib, &wp, &bp, &yp, &ob, &pixels, &hw, &c, &factor, &e, &g};
      launch(k, k->layer_norm_2d_nchw, device, (pixels + 31) / 32, 256, args);
    }
    *out = new at::Tensor(std::move(y));
    return 1;
  });
}

// A mask-downsampler stage in one pass: the 3x3, stride-2, padding-1 convolution of a
// contiguous NCHW bf16 or fp32 CUDA tensor (weight [COUT, CIN, 3, 3] and bias [COUT], any
// float dtype, taken as bf16 as autocast would), then LayerNorm2d (fp32 weight and bias)
// and GELU, under bf16 autocast, for (CIN, COUT) = (1, 4) or (4, 16): the bf16 tensor the
// next convolution would cast the spelled-out ops' result to. Returns 1 with `*out` set, 2
// when not applicable, 0 on error.
int sam2_conv3x3s2_ln_gelu(const at::Tensor* x, const at::Tensor* cw, const at::Tensor* cb, const at::Tensor* lw, const at::Tensor* lb,
                           double eps, at::Tensor** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    const bool in_bf16 = x->scalar_type() == at::kBFloat16;
    if (!x->is_cuda() || (!in_bf16 && x->scalar_type() != at::kFloat) || x->dim() != 4 || !x->is_contiguous()) return 2;
    if (!autocast_bf16() || cw->dim() != 4 || cw->size(2) != 3 || cw->size(3) != 3 || cw->size(1) != x->size(1)) return 2;
    const int64_t cin = cw->size(1), cout = cw->size(0);
    const int which = cin == 1 && cout == 4 ? 0 : cin == 4 && cout == 16 ? 1 : -1;
    if (which < 0 || cb->numel() != cout || !channel_params(lw, lb, cout)) return 2;
    const int device = x->get_device();
    Kernels* k = kernels_for(device);
    const at::Tensor wt = cw->to(at::kBFloat16).contiguous(), bt = cb->to(at::kBFloat16).contiguous();
    int h = static_cast<int>(x->size(2)), w = static_cast<int>(x->size(3)), oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
    at::Tensor y = at::empty({x->size(0), cout, oh, ow}, x->options().dtype(at::kBFloat16));
    long long outputs = x->size(0) * static_cast<long long>(oh) * ow;
    float factor = static_cast<float>(outputs) / static_cast<float>(y.numel()), e = static_cast<float>(eps);
    int ib = in_bf16 ? 1 : 0;
    const void* xp = x->data_ptr();
    const void* wp = wt.data_ptr();
    const void* bp = bt.data_ptr();
    const void* lwp = lw->data_ptr();
    const void* lbp = lb->data_ptr();
    void* yp = y.data_ptr();
    void* args[] = {&xp, &ib, &wp, &bp, &lwp, &lbp, &yp, &outputs, &h, &w, &oh, &ow, &factor, &e};
    launch(k, k->conv_ln_gelu[which], device, (outputs + 255) / 256, 256, args);
    *out = new at::Tensor(std::move(y));
    return 1;
  });
}

}  // extern "C"
