// Shared by the C++ shims (src/worker/shim, src/cuda): an exception must never unwind
// into Rust, so every entry point runs its body through `guarded`, which turns any C++
// exception into 0 plus its message in the caller's buffer.
#pragma once

#include <cstring>
#include <exception>

namespace sam2_shim {

inline void put_error(char* buf, size_t len, const char* msg) {
  if (buf == nullptr || len == 0) return;
  std::strncpy(buf, msg, len - 1);
  buf[len - 1] = '\0';
}

// Runs `body` (returning 1 or 0), turning any C++ exception into 0 plus its message.
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

}  // namespace sam2_shim
