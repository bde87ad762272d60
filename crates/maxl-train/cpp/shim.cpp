// What maxl-train needs of libtorch that tch does not wrap: entering and leaving a forward-mode
// AD level, and the CUDA caching allocator's peak of allocated bytes. The C functions never let
// a C++ exception cross into Rust: they return 1 and copy the message.
#include <cstdint>

#include <c10/core/CachingDeviceAllocator.h>
#include <torch/csrc/autograd/forward_grad.h>

#include "guard.h"

using maxl::guarded;

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
