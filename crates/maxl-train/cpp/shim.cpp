// What maxl-train needs of libtorch that tch does not wrap: entering and leaving a forward-mode
// AD level, and the CUDA caching allocator's peak of allocated bytes. The C functions never let
// a C++ exception cross into Rust: they return 1 and copy the message.
#include <cstdint>
#include <cstring>
#include <exception>

#include <c10/core/CachingDeviceAllocator.h>
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

// The most bytes of tensors allocated on CUDA device `device` at once since the process started
// (torch.cuda.max_memory_allocated), through the device-generic allocator interface (no CUDA
// headers needed).
extern "C" int maxl_cuda_peak_allocated(int device, int64_t* bytes, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)
                     ->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *bytes = stats.allocated_bytes[all].peak;
  });
}
