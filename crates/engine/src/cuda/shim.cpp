// A C ABI over at::cuda::CUDAGraph, for replaying a frame's kernels as one graph launch,
// and over CUDA events, for waiting on one point of the stream. (at::cuda::CUDAEvent would
// need CUDA headers the torch wheels lack; the three runtime calls are looked up in the
// libcudart that libtorch_cuda already loaded, so the binary does not link it itself.)
// Why C++: tch exposes neither CUDA graphs nor streams. Capture must run on a side stream
// (the legacy default stream cannot be captured), so a graph owns one and makes it the
// current stream between `enter` and `exit`; tch's ops then queue there. Every entry point
// turns C++ exceptions into 0 plus a message: an exception must never unwind into Rust.
#include <ATen/cuda/CUDAGraph.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAFunctions.h>

#include <optional>
#include <stdexcept>

#include "guarded.h"

namespace {
using sam2_shim::guarded;

struct Runtime {
  cudaError_t (*create)(cudaEvent_t*, unsigned int);
  cudaError_t (*record)(cudaEvent_t, cudaStream_t);
  cudaError_t (*sync)(cudaEvent_t);
  cudaError_t (*destroy)(cudaEvent_t);
  bool ok;
};

const Runtime& runtime() {
  static const Runtime rt = [] {
    Runtime r{};
    r.create = reinterpret_cast<decltype(r.create)>(dlsym(RTLD_DEFAULT, "cudaEventCreateWithFlags"));
    r.record = reinterpret_cast<decltype(r.record)>(dlsym(RTLD_DEFAULT, "cudaEventRecord"));
    r.sync = reinterpret_cast<decltype(r.sync)>(dlsym(RTLD_DEFAULT, "cudaEventSynchronize"));
    r.destroy = reinterpret_cast<decltype(r.destroy)>(dlsym(RTLD_DEFAULT, "cudaEventDestroy"));
    r.ok = r.create && r.record && r.sync && r.destroy;
    return r;
  }();
  return rt;
}

struct Graph {
  c10::DeviceIndex device;
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream stream;
  std::optional<c10::cuda::CUDAStream> previous;
  Graph(c10::DeviceIndex d) : device(d), graph(), stream(c10::cuda::getStreamFromPool(false, d)) {}
};
}  // namespace

extern "C" {

int sam2_graph_new(int device, void** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    *out = new Graph(static_cast<c10::DeviceIndex>(device));
    return 1;
  });
}

// Waits for all queued work, then makes the graph's side stream current (warm-up runs
// and the capture both queue there).
int sam2_graph_enter(void* g, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    auto* graph = static_cast<Graph*>(g);
    c10::cuda::device_synchronize();
    graph->previous = c10::cuda::getCurrentCUDAStream(graph->device);
    c10::cuda::setCurrentCUDAStream(graph->stream);
    return 1;
  });
}

// Thread-local capture mode: the frame-prefetch threads may pin host memory meanwhile.
int sam2_graph_capture_begin(void* g, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    static_cast<Graph*>(g)->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    return 1;
  });
}

int sam2_graph_capture_end(void* g, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    static_cast<Graph*>(g)->graph.capture_end();
    return 1;
  });
}

// Restores the stream that was current before `enter`, after the side stream's work.
int sam2_graph_exit(void* g, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    auto* graph = static_cast<Graph*>(g);
    graph->stream.synchronize();
    if (graph->previous) c10::cuda::setCurrentCUDAStream(*graph->previous);
    graph->previous.reset();
    return 1;
  });
}

// Launches the captured kernels on the current stream, ordered after the work queued there.
int sam2_graph_replay(void* g, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    static_cast<Graph*>(g)->graph.replay();
    return 1;
  });
}

void sam2_graph_free(void* g) {
  try {
    delete static_cast<Graph*>(g);
  } catch (...) {
  }
}

// Records an event at the current point of the current stream.
int sam2_event_record(int device, void** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    const auto& rt = runtime();
    if (!rt.ok) throw std::runtime_error("CUDA runtime event functions not found");
    cudaEvent_t ev = nullptr;
    if (rt.create(&ev, cudaEventDisableTiming) != cudaSuccess) throw std::runtime_error("cudaEventCreateWithFlags failed");
    auto stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
    if (rt.record(ev, stream) != cudaSuccess) {
      rt.destroy(ev);
      throw std::runtime_error("cudaEventRecord failed");
    }
    *out = ev;
    return 1;
  });
}

// Blocks the calling thread until the work queued before the event has run.
int sam2_event_synchronize(void* ev, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    if (runtime().sync(static_cast<cudaEvent_t>(ev)) != cudaSuccess) throw std::runtime_error("cudaEventSynchronize failed");
    return 1;
  });
}

void sam2_event_free(void* ev) {
  const auto& rt = runtime();
  if (rt.ok) rt.destroy(static_cast<cudaEvent_t>(ev));
}

}  // extern "C"
