// Entering and leaving a forward-mode AD level of libtorch, which tch does not wrap. The C
// functions never let a C++ exception cross into Rust: they return 1 and copy the message.
#include <cstdint>
#include <cstring>
#include <exception>

#include <torch/csrc/autograd/forward_grad.h>

namespace {
void copy_message(const char* what, char* err, size_t len) {
  if (len == 0) return;
  std::strncpy(err, what, len - 1);
  err[len - 1] = '\0';
}

// Runs `body`; 0 on success, 1 with the exception's message in `err` otherwise.
template <typename Body>
int guarded(char* err, size_t len, Body body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
  } catch (...) {
    copy_message("unknown C++ exception", err, len);
  }
  return 1;
}
}  // namespace

extern "C" int maxl_forward_ad_enter(uint64_t* level, char* err, size_t len) {
  return guarded(err, len, [&] { *level = torch::autograd::ForwardADLevel::get_next_idx(); });
}

extern "C" int maxl_forward_ad_exit(uint64_t level, char* err, size_t len) {
  return guarded(err, len, [&] { torch::autograd::ForwardADLevel::release_idx(level); });
}
