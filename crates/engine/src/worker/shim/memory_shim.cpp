// A tiny C ABI over libtorch's device-memory introspection, for the worker's heartbeat.
// Why C++: the MPS hooks and the caching allocators' statistics are only reachable from
// C++ (tch exposes neither). Every call goes through `guarded` (src/shim/guarded.h):
// failures come back as 0 ("unavailable") plus a message, never as an exception.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/detail/MPSHooksInterface.h>
#include <c10/core/Allocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <torch/headeronly/version.h>

#include <cstdint>
#include <string>

#ifdef __APPLE__
#include <mach/mach.h>
#endif

#include "guarded.h"

namespace {
using sam2_shim::guarded;
using sam2_shim::put_error;
}  // namespace

extern "C" {

const char* sam2_shim_torch_version() { return TORCH_VERSION; }

// 1 when the MPS backend exists and answered, 0 otherwise (err says why).
int sam2_shim_mps_memory(uint64_t* current, uint64_t* driver, uint64_t* recommended, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    const auto& hooks = at::detail::getMPSHooks();
    if (!hooks.hasMPS()) {
      put_error(err, err_len, "MPS backend not available");
      return 0;
    }
    *current = hooks.getCurrentAllocatedMemory();
    *driver = hooks.getDriverAllocatedMemory();
    *recommended = hooks.getRecommendedMaxMemory();
    return 1;
  });
}

// The CUDA caching allocator's aggregate statistics, through the device-neutral
// c10::DeviceAllocator interface (no CUDA headers needed, so this builds everywhere).
int sam2_shim_cuda_stats(int device, uint64_t* allocated, uint64_t* reserved, uint64_t* peak, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    auto* alloc = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (alloc == nullptr || !alloc->initialized()) {
      put_error(err, err_len, "CUDA caching allocator not initialized");
      return 0;
    }
    auto stats = alloc->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = static_cast<uint64_t>(stats.allocated_bytes[agg].current);
    *reserved = static_cast<uint64_t>(stats.reserved_bytes[agg].current);
    *peak = static_cast<uint64_t>(stats.allocated_bytes[agg].peak);
    return 1;
  });
}

// Free and total device memory as the driver sees them (cudaMemGetInfo underneath).
int sam2_shim_cuda_mem_info(int device, uint64_t* free_bytes, uint64_t* total_bytes, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    auto* alloc = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (alloc == nullptr) {
      put_error(err, err_len, "no CUDA allocator");
      return 0;
    }
    auto info = alloc->getMemoryInfo(static_cast<c10::DeviceIndex>(device));
    *free_bytes = static_cast<uint64_t>(info.first);
    *total_bytes = static_cast<uint64_t>(info.second);
    return 1;
  });
}

// Resident set size on macOS (mach task_info); Linux reads /proc/self/statm in Rust.
int sam2_shim_rss(uint64_t* bytes) {
#ifdef __APPLE__
  mach_task_basic_info_data_t info;
  mach_msg_type_number_t count = MACH_TASK_BASIC_INFO_COUNT;
  if (task_info(mach_task_self(), MACH_TASK_BASIC_INFO, (task_info_t)&info, &count) != KERN_SUCCESS) return 0;
  *bytes = static_cast<uint64_t>(info.resident_size);
  return 1;
#else
  (void)bytes;
  return 0;
#endif
}

// TF32 for fp32 matmuls and convolutions on CUDA (what the reference demo turns on for
// compute capability >= 8). 1 on success.
int sam2_shim_set_tf32(int allow) {
  try {
    at::globalContext().setFloat32MatmulPrecision(allow ? "high" : "highest");
    at::globalContext().setAllowTF32CuDNN(allow != 0);
    return 1;
  } catch (...) {
    return 0;
  }
}

// Whether scaled_dot_product_attention may pick cuDNN's kernels (libtorch prefers them on
// Hopper). Off, it picks FlashAttention where the shapes allow. 1 on success.
int sam2_shim_set_sdp_cudnn(int enabled) {
  try {
    at::globalContext().setSDPUseCuDNN(enabled != 0);
    return 1;
  } catch (...) {
    return 0;
  }
}

// CUDA autocast on this thread (the reference's fast mode, `torch.autocast("cuda", dtype)`):
// dtype 0 = bfloat16, 1 = float16. Reports whether it was on before. 1 on success.
int sam2_shim_set_autocast_cuda(int enabled, int dtype, int* was_enabled) {
  try {
    *was_enabled = at::autocast::is_autocast_enabled(c10::DeviceType::CUDA) ? 1 : 0;
    at::autocast::set_autocast_dtype(c10::DeviceType::CUDA, dtype == 1 ? at::kHalf : at::kBFloat16);
    at::autocast::set_autocast_enabled(c10::DeviceType::CUDA, enabled != 0);
    if (!enabled) at::autocast::clear_cache();
    return 1;
  } catch (...) {
    return 0;
  }
}

}  // extern "C"
