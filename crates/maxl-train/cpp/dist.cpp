// libtorch's c10d process groups for data-parallel training, as C functions: a TCPStore (this
// rank hosts it, or connects to it), a PrefixStore over it, and a ProcessGroupGloo (CPU tensors)
// or ProcessGroupNCCL (CUDA tensors; compiled only with MAXL_WITH_NCCL). Like shim.cpp, no C++
// exception crosses into Rust: each function returns 1 and copies the message.
//
// Gloo runs collectives on its own threads: an exception there (ranks issuing different
// collectives) ends in std::terminate. The handler installed by maxl_dist_init says so in one
// line before the process aborts.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef MAXL_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "guard.h"

using maxl::guarded;

namespace {
[[noreturn]] void on_terminate() {
  std::fputs(
      "maxl-train: error: a collective failed on a communication thread (ranks issued "
      "different collectives, or a peer sent corrupt data); stopping\n",
      stderr);
  std::fflush(stderr);
  std::abort();
}
}  // namespace

struct MaxlGroup {
  c10::intrusive_ptr<c10d::Store> base;   // the TCPStore
  c10::intrusive_ptr<c10d::Store> store;  // the run's prefix of it
  c10::intrusive_ptr<c10d::Backend> backend;
};

extern "C" int maxl_dist_has_nccl() {
#ifdef MAXL_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// Joins the group `rank` of `size` through the TCPStore at host:port (hosted by this process
// when `host_store` is 1), with keys under `prefix`. `backend`: "gloo" or "nccl".
extern "C" int maxl_dist_init(const char* host, int port, int rank, int size, int host_store,
                              int64_t timeout_ms, const char* prefix, const char* backend,
                              MaxlGroup** out, char* err, size_t len) {
  return guarded(err, len, [&] {
    std::set_terminate(on_terminate);
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = host_store != 0;
    opts.numWorkers = size;
    // Every client (the host's own included) registers; the host waits for all of them.
    opts.waitWorkers = true;
    opts.timeout = timeout;
    auto group = std::make_unique<MaxlGroup>();
    group->base = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    group->store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), group->base);
    std::string which(backend);
    if (which == "gloo") {
      auto o = c10d::ProcessGroupGloo::Options::create_default(timeout);
      group->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(group->store, rank, size, o);
    } else if (which == "nccl") {
#ifdef MAXL_WITH_NCCL
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      group->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(group->store, rank, size, o);
#else
      throw std::runtime_error(
          "maxl-train was built without NCCL (no CUDA headers at build time); use "
          "--dist-backend gloo");
#endif
    } else {
      throw std::runtime_error("unknown process-group backend " + which);
    }
    *out = group.release();
  });
}

// op: 0 sum, 1 average, 2 min, 3 max. `tensor` is one contiguous tensor (tch's handle).
extern "C" int maxl_dist_allreduce(MaxlGroup* g, at::Tensor* tensor, int op, char* err,
                                   size_t len) {
  return guarded(err, len, [&] {
    static const c10d::ReduceOp::RedOpType ops[] = {
        c10d::ReduceOp::SUM, c10d::ReduceOp::AVG, c10d::ReduceOp::MIN, c10d::ReduceOp::MAX};
    if (op < 0 || op > 3) throw std::runtime_error("unknown reduce op");
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp(ops[op]);
    std::vector<at::Tensor> v{*tensor};
    g->backend->allreduce(v, o)->wait();
  });
}

extern "C" int maxl_dist_broadcast(MaxlGroup* g, at::Tensor* tensor, int root, char* err,
                                   size_t len) {
  return guarded(err, len, [&] {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    std::vector<at::Tensor> v{*tensor};
    g->backend->broadcast(v, o)->wait();
  });
}

extern "C" int maxl_dist_barrier(MaxlGroup* g, char* err, size_t len) {
  return guarded(err, len, [&] { g->backend->barrier()->wait(); });
}

// Sets `key` (under the group's prefix) to `value`.
extern "C" int maxl_dist_store_set(MaxlGroup* g, const char* key, const char* value, char* err,
                                   size_t len) {
  return guarded(err, len, [&] { g->store->set(std::string(key), std::string(value)); });
}

// Whether `key` is set, without waiting.
extern "C" int maxl_dist_store_check(MaxlGroup* g, const char* key, int* present, char* err,
                                     size_t len) {
  return guarded(err, len, [&] {
    *present = g->store->check({std::string(key)}) ? 1 : 0;
  });
}

// Leaves the group (after every rank has finished its collectives).
extern "C" int maxl_dist_destroy(MaxlGroup* g, char* err, size_t len) {
  return guarded(err, len, [&] {
    std::unique_ptr<MaxlGroup> owned(g);
    owned->backend->shutdown();
  });
}
