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
#define LAYER_NORM(PER)                                                                      \
extern "C" __global__ void layer_norm_to_bf16_##PER(const void* __restrict__ x, int in_bf16,  \
    const float* __restrict__ w, const float* __restrict__ b, unsigned short* __restrict__ y, \
    long long rows, int cols, float eps, long long s1, long long s2, long long t0,            \
    long long t1, long long t2) {                                                            \
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
  const float re = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  const float im = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
  ((unsigned int*)y)[i] = (unsigned int)to_bf16(re) | ((unsigned int)to_bf16(im) << 16);
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
    const float re = __fsub_rn(__fmul_rn(a, cs[q]), __fmul_rn(b, ss[q]));
    const float im = __fadd_rn(__fmul_rn(a, ss[q]), __fmul_rn(b, cs[q]));
    out[q] = (unsigned int)to_bf16(re) | ((unsigned int)to_bf16(im) << 16);
  }
  y[v] = make_uint4(out[0], out[1], out[2], out[3]);
}
// layer_norm_2d_bf16: `LayerNorm2d` (normalised over the channels of an NCHW bf16 tensor,
// contiguous or channels-last) as libtorch computes it under bf16 autocast, one thread per pixel, instead of
// nine passes (two means, a subtraction, a square, an add, a sqrt, a division, a scale
// and a shift), optionally followed by the exact GELU. The steps and their roundings:
// u = bf16(mean x); d = bf16(x - u); autocast widens d for `pow`, so s = mean(d²) in fp32;
// r = sqrt(s + eps) in fp32; y = w * (d / r) + b in fp32 (fp32 weights). The two sums run
// in another order than libtorch's reduction: u can differ for a value on a bf16 rounding
// boundary, s by an fp32 rounding.
// NCHW or channels-last (the depthwise convolution's output): element (n, c, pixel) at
// n * sn + c * sc + pixel * sp, in the input and in the output alike.
extern "C" __global__ void layer_norm_2d_bf16(const unsigned short* __restrict__ x, const float* __restrict__ w,
    const float* __restrict__ b, float* __restrict__ y, long long pixels, long long hw, int channels, long long sn,
    long long sc, long long sp, float factor, float eps, int gelu) {
  const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= pixels) return;
  const long long n = p / hw, at = n * sn + (p - n * hw) * sp;
  const unsigned short* xp = x + at;
  float* yp = y + at;
  float sum = 0.f;
  for (int c = 0; c < channels; c++) sum = __fadd_rn(sum, from_bf16(xp[c * sc]));
  const float u = from_bf16(to_bf16(__fmul_rn(sum, factor)));
  float sq = 0.f;
  for (int c = 0; c < channels; c++) {
    const float d = from_bf16(to_bf16(__fsub_rn(from_bf16(xp[c * sc]), u)));
    sq = __fadd_rn(sq, __fmul_rn(d, d));
  }
  const float r = __fsqrt_rn(__fadd_rn(__fmul_rn(sq, factor), eps));
  for (int c = 0; c < channels; c++) {
    const float d = from_bf16(to_bf16(__fsub_rn(from_bf16(xp[c * sc]), u)));
    float v = __fadd_rn(__fmul_rn(w[c], __fdiv_rn(d, r)), b[c]);
    // libtorch's GELU: x * 0.5 * (1 + erf(x * M_SQRT1_2)), each step rounded.
    if (gelu) v = __fmul_rn(__fmul_rn(v, 0.5f), __fadd_rn(1.0f, erff(__fmul_rn(v, 0.70710678118654752440f))));
    yp[c * sc] = v;
  }
}
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
void* open_nvrtc() {
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

struct Kernels {
  CUfunction fn[4];
  CUfunction rope;
  CUfunction rope_x4;
  CUfunction layer_norm_2d;
  Driver driver;
};

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
    void* nv = open_nvrtc();
    Nvrtc n{};
    sym(nv, "nvrtcCreateProgram", n.create);
    sym(nv, "nvrtcCompileProgram", n.compile);
    sym(nv, "nvrtcGetProgramLogSize", n.log_size);
    sym(nv, "nvrtcGetProgramLog", n.log);
    sym(nv, "nvrtcGetCUBINSize", n.cubin_size);
    sym(nv, "nvrtcGetCUBIN", n.cubin);
    sym(nv, "nvrtcDestroyProgram", n.destroy);
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
    std::string arch = "--gpu-architecture=sm_" + std::to_string(major) + std::to_string(minor);
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
    if (k->driver.function(&k->layer_norm_2d, module, "layer_norm_2d_bf16") != CUDA_SUCCESS)
      throw std::runtime_error("cuModuleGetFunction failed");
    built[device] = k;
    return k;
  } catch (const std::exception& e) {
    failed[device] = e.what();
    throw;
  }
}
}  // namespace

extern "C" {

// LayerNorm over the last dim of an fp32 or bf16 CUDA tensor (at most 4-d, last dim dense),
// written as a contiguous bf16 tensor: only
// while bf16 autocast is on (the dtype the consuming Linear would cast to). Returns 1 with
// `*out` set, 2 when not applicable (the caller runs the ordinary LayerNorm), 0 on error.
int sam2_layer_norm_to_bf16(const at::Tensor* x, const at::Tensor* w, const at::Tensor* b, double eps, at::Tensor** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    const bool in_bf16 = x->scalar_type() == at::kBFloat16;
    if (!x->is_cuda() || (x->scalar_type() != at::kFloat && !in_bf16) || x->dim() < 1 || x->dim() > 4 || x->stride(-1) != 1) return 2;
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
    void* args[] = {&xp, &bf16_input, &wp, &bp, &yp, &rows, &c, &e, &size[1], &size[2], &stride[0], &stride[1], &stride[2]};
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

// LayerNorm2d of an NCHW (contiguous or channels-last) bf16 CUDA tensor under bf16 autocast, with fp32 weight
// and bias of C values, then GELU if `gelu`: an fp32 NCHW tensor, as the spelled-out ops
// give, in the input's layout. Returns 1 with `*out` set, 2 when not applicable, 0 on error.
int sam2_layer_norm_2d_bf16(const at::Tensor* x, const at::Tensor* w, const at::Tensor* b, double eps, int gelu, at::Tensor** out,
                            char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    if (!x->is_cuda() || x->scalar_type() != at::kBFloat16 || x->dim() != 4) return 2;
    const bool nhwc = !x->is_contiguous() && x->is_contiguous(at::MemoryFormat::ChannelsLast);
    if (!x->is_contiguous() && !nhwc) return 2;
    if (!at::autocast::is_autocast_enabled(at::kCUDA) || at::autocast::get_autocast_dtype(at::kCUDA) != at::kBFloat16) return 2;
    const int64_t channels = x->size(1);
    if (channels == 0 || w->scalar_type() != at::kFloat || b->scalar_type() != at::kFloat || !w->is_contiguous() ||
        !b->is_contiguous() || w->numel() != channels || b->numel() != channels)
      return 2;
    const int device = x->get_device();
    Kernels* k = kernels_for(device);
    at::Tensor y = at::empty(x->sizes(), x->options().dtype(at::kFloat).memory_format(
                                              nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
    long long hw = x->size(2) * x->size(3), pixels = x->size(0) * hw;
    long long sn = x->stride(0), sc = x->stride(1), sp = nhwc ? x->stride(3) : 1;
    int c = static_cast<int>(channels), g = gelu ? 1 : 0;
    // libtorch's mean multiplies the sum by outputs / inputs, taken in float.
    float factor = static_cast<float>(pixels) / static_cast<float>(x->numel()), e = static_cast<float>(eps);
    const void* xp = x->data_ptr();
    const void* wp = w->data_ptr();
    const void* bp = b->data_ptr();
    void* yp = y.data_ptr();
    void* args[] = {&xp, &wp, &bp, &yp, &pixels, &hw, &c, &sn, &sc, &sp, &factor, &e, &g};
    const unsigned threads = 256;
    const unsigned blocks = static_cast<unsigned>((pixels + threads - 1) / threads);
    if (pixels > 0) {
      auto stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
      if (k->driver.launch(k->layer_norm_2d, blocks, 1, 1, threads, 1, 1, 0, reinterpret_cast<CUstream>(stream), args, nullptr) !=
          CUDA_SUCCESS)
        throw std::runtime_error("cuLaunchKernel failed");
    }
    *out = new at::Tensor(std::move(y));
    return 1;
  });
}

}  // extern "C"
