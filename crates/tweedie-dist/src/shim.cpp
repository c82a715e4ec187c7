// C ABI over PyTorch's c10d (TCPStore, ProcessGroupGloo/NCCL, Reducer) for tweedie-dist.
//
// Every entry point catches C++ exceptions and returns them as a malloc'd message (NULL on
// success): an exception crossing `extern "C"` would abort the process. Tensors come from
// tch, whose `C_tensor` is a `torch::Tensor*`.

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef TWEEDIE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef TWEEDIE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

struct Ddp {
  std::shared_ptr<c10d::Reducer> reducer;
};

char* dup(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

template <typename F>
char* guard(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return dup(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup(e.what());
  } catch (...) {
    return dup("unknown C++ exception");
  }
}

void wait(const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds timeout) {
  if (!work->wait(timeout)) {
    throw std::runtime_error("timed out after " + std::to_string(timeout.count()) + " ms");
  }
}

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1";
}

}  // namespace

extern "C" {

typedef torch::Tensor* tensor;

void tw_free_str(char* s) { std::free(s); }

// Which backends this shim was compiled with: bit 0 Gloo, bit 1 NCCL.
int tw_backends() {
  int b = 0;
#ifdef TWEEDIE_GLOO
  b |= 1;
#endif
#ifdef TWEEDIE_NCCL
  b |= 2;
#endif
  return b;
}

// backend: 0 Gloo, 1 NCCL. serve: whether this process runs the TCPStore server
// (rank 0 outside torchrun; nobody under torchrun, whose agent runs it).
char* tw_pg_new(const char* host, int port, int rank, int world, int serve, int backend,
                int64_t timeout_ms, void** out) {
  return guard([&] {
    *out = nullptr;
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = serve != 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = false;
    opts.timeout = timeout;
    std::string h(host);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(h, opts);
    // A prefix keeps our keys apart from torchrun's agent keys in the same store.
    auto store = c10::make_intrusive<c10d::PrefixStore>("tweedie/default_pg", tcp);
    auto g = std::make_unique<Group>();
    g->store = store;
    g->timeout = timeout;
    g->pg = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
    if (backend == 0) {
#ifdef TWEEDIE_GLOO
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname != nullptr && *ifname != '\0') {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (is_loopback(h)) {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      auto b = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
      g->backend = b;
      g->pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, g->backend);
      g->pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
#else
      throw std::runtime_error(
          "tweedie-dist was built without Gloo (gloo headers missing: install libgloo-dev, "
          "e.g. via `cargo xtask setup`, and rebuild)");
#endif
    } else {
#ifdef TWEEDIE_NCCL
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      auto b = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
      g->backend = b;
      g->pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, g->backend);
      g->pg->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
#else
      throw std::runtime_error(
          "tweedie-dist was built without NCCL (libtorch has no CUDA, or the CUDA/NCCL headers "
          "of the PyTorch wheel were not found)");
#endif
    }
    *out = g.release();
  });
}

void tw_pg_free(void* pg) {
  try {
    delete static_cast<Group*>(pg);
  } catch (...) {
  }
}

// op: 0 sum, 1 max, 2 min.
char* tw_allreduce(void* pg, tensor t, int op) {
  return guard([&] {
    auto* g = static_cast<Group*>(pg);
    std::vector<at::Tensor> ts{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = op == 1 ? c10d::ReduceOp::MAX : op == 2 ? c10d::ReduceOp::MIN : c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    wait(g->backend->allreduce(ts, o), g->timeout);
  });
}

char* tw_broadcast(void* pg, tensor t, int root) {
  return guard([&] {
    auto* g = static_cast<Group*>(pg);
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = g->timeout;
    wait(g->backend->broadcast(ts, o), g->timeout);
  });
}

char* tw_barrier(void* pg) {
  return guard([&] {
    auto* g = static_cast<Group*>(pg);
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    wait(g->backend->barrier(o), g->timeout);
  });
}

// out: `world` contiguous tensors, each shaped like `in`.
char* tw_allgather(void* pg, tensor* outs, int n, tensor in) {
  return guard([&] {
    auto* g = static_cast<Group*>(pg);
    std::vector<at::Tensor> o;
    for (int i = 0; i < n; ++i) {
      o.push_back(*outs[i]);
    }
    std::vector<std::vector<at::Tensor>> outputs{o};
    std::vector<at::Tensor> inputs{*in};
    c10d::AllgatherOptions opt;
    opt.timeout = g->timeout;
    wait(g->backend->allgather(outputs, inputs, opt), g->timeout);
  });
}

// DDP's gradient reduction: checks parameter shapes across ranks, buckets the parameters
// in reverse order (gradients of the last layers are ready first), and registers autograd
// hooks that all-reduce each bucket as soon as its gradients exist, overlapping backward.
char* tw_reducer_new(void* pg, tensor* params, int n, int64_t bucket_bytes,
                     int64_t first_bucket_bytes, void** out) {
  return guard([&] {
    *out = nullptr;
    auto* g = static_cast<Group*>(pg);
    std::vector<at::Tensor> ps;
    for (int i = 0; i < n; ++i) {
      ps.push_back(*params[i]);
    }
    c10d::verify_params_across_processes(g->pg, ps, std::nullopt);
    std::vector<size_t> limits{static_cast<size_t>(first_bucket_bytes),
                               static_cast<size_t>(bucket_bytes)};
    std::vector<bool> sparse(ps.size(), false);
    auto [buckets, per_bucket] = c10d::compute_bucket_assignment_by_size(ps, limits, sparse);
    std::reverse(buckets.begin(), buckets.end());
    std::vector<int64_t> caps(per_bucket.rbegin(), per_bucket.rend());
    std::unordered_map<size_t, std::string> names;
    auto d = std::make_unique<Ddp>();
    d->reducer = std::make_shared<c10d::Reducer>(
        ps, buckets, g->pg, sparse, bucket_bytes, /*find_unused_parameters=*/false,
        /*gradient_as_bucket_view=*/false, names, first_bucket_bytes,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false, caps);
    *out = d.release();
  });
}

// Before each forward pass: rebuilds the buckets in gradient-ready order after the
// first step, as DDP does.
char* tw_reducer_prepare_forward(void* r) {
  return guard([&] {
    auto* d = static_cast<Ddp*>(r);
    d->reducer->prepare_for_forward();
    d->reducer->rebuild_buckets();
  });
}

char* tw_reducer_prepare_backward(void* r) {
  return guard([&] {
    auto* d = static_cast<Ddp*>(r);
    d->reducer->prepare_for_backward({});
  });
}

void tw_reducer_free(void* r) {
  try {
    delete static_cast<Ddp*>(r);
  } catch (...) {
  }
}

}  // extern "C"
