// libtorch's Kineto profiler behind a C ABI (tch does not expose it): CPU operators and,
// where CUDA is present, every GPU kernel with its stream and timing, CUDA-graph replays
// included (CUPTI activity records, no hardware counters needed). Saved as a Chrome trace.
#include <torch/csrc/autograd/profiler_kineto.h>

#include <set>
#include <string>

#include "guarded.h"

extern "C" {

int sam2_shim_trace_start(int cuda, char* err, size_t err_len) {
  return sam2_shim::guarded(err, err_len, [&]() -> int {
    using namespace torch::profiler::impl;
    // Input shapes tell the many calls of one operator apart (which attention, which matmul).
    ProfilerConfig config(ProfilerState::KINETO, /*report_input_shapes=*/true);
    std::set<ActivityType> activities{ActivityType::CPU};
    if (cuda != 0) activities.insert(ActivityType::CUDA);
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
    return 1;
  });
}

int sam2_shim_trace_stop(const char* path, char* err, size_t err_len) {
  return sam2_shim::guarded(err, err_len, [&]() -> int {
    auto result = torch::autograd::profiler::disableProfiler();
    if (path != nullptr) result->save(path);
    return 1;
  });
}

}  // extern "C"
