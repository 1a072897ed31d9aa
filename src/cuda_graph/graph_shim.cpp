// A C ABI over at::cuda::CUDAGraph, for replaying a frame's kernels as one graph launch.
// Why C++: tch exposes neither CUDA graphs nor streams. Capture must run on a side stream
// (the legacy default stream cannot be captured), so a graph owns one and makes it the
// current stream between `enter` and `exit`; tch's ops then queue there. Every entry point
// turns C++ exceptions into 0 plus a message: an exception must never unwind into Rust.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAFunctions.h>

#include <cstring>
#include <exception>
#include <optional>

namespace {
void put_error(char* buf, size_t len, const char* msg) {
  if (buf == nullptr || len == 0) return;
  std::strncpy(buf, msg, len - 1);
  buf[len - 1] = '\0';
}

template <class F>
int guarded(char* err, size_t err_len, F body) {
  try {
    return body();
  } catch (const std::exception& e) {
    put_error(err, err_len, e.what());
  } catch (...) {
    put_error(err, err_len, "unknown C++ exception");
  }
  return 0;
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

}  // extern "C"
