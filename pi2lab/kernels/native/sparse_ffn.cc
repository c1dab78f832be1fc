// Cluster-sparse FFN for one decode token, called from jitted JAX through the XLA FFI.
//
// XLA:CPU runs a loop over active clusters on one thread and copies dynamically sliced
// operands, so a sparse FFN written in JAX streams weights at about half the bandwidth of a
// dense product (measured by `pi2lab bench sparse`). This kernel reads the hot block and the
// active cold clusters in place, splits their rows over a small thread pool, and skips the
// down row of every neuron whose activation is exactly zero.
//
// Layout (hot-first neuron order, see pi2lab/kernels/sparse_ffn.py):
//   hot_{gate,up,down}  [E?, H, D]       the hot block, rows of gate/up and columns of down
//   cold_{gate,up,down} [E?, NC, C, D]   cold neurons, cluster-major
//   active [NC] bool (the cold clusters to compute), expert int32 scalar.
// Output [D] float32.
//
// Runtime dispatch: GCC's target_clones picks an AVX-512, AVX2+FMA or portable build of the
// row loop on first call, from the CPU's features.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <sched.h>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Kind : int32_t { kSilu = 0, kRelu = 1, kDrelu = 2, kFatrelu = 3 };

// A fixed pool: the calling thread runs share 0, workers shares 1..n-1.
class Pool {
 public:
  explicit Pool(int n) : n_(std::max(n, 1)) {
    for (int i = 1; i < n_; ++i) workers_.emplace_back([this, i] { Loop(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return n_; }

  // Runs fn(share) for share in [0, shares), shares <= size(); returns when all are done.
  void Run(int shares, const std::function<void(int)>& fn) {
    if (shares <= 1) {
      fn(0);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &fn;
      shares_ = shares;
      pending_ = shares - 1;
      ++generation_;
    }
    wake_.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  void Loop(int i) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
        if (i >= shares_) continue;
        job = job_;
      }
      (*job)(i);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  int shares_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

// The cores this process may run on, or PI2LAB_NATIVE_THREADS when set.
int CpuCount() {
  if (const char* env = std::getenv("PI2LAB_NATIVE_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(CPU_COUNT(&set), 1);
  return std::max<int>(std::thread::hardware_concurrency(), 1);
}

Pool& GlobalPool() {
  static Pool pool(CpuCount());
  return pool;
}

inline float Activate(float g, float u, int32_t kind, float threshold) {
  switch (kind) {
    case kSilu:
      return g / (1.0f + std::exp(-g)) * u;
    case kRelu:
      return g > 0.0f ? g * u : 0.0f;
    case kDrelu:
      return (g > 0.0f && u > 0.0f) ? g * u : 0.0f;
    default:
      return g > threshold ? g * u : 0.0f;
  }
}

struct Rows {
  const float* hot_gate;
  const float* hot_up;
  const float* hot_down;
  const float* cold_gate;
  const float* cold_up;
  const float* cold_down;
  const int32_t* idx;
  int64_t hot, cluster, dim;
};

// Rows [begin, end) of the virtual list "hot rows, then the rows of each active cluster";
// accumulates their contribution into out [D] (zeroed by the caller).
__attribute__((target_clones("avx512f", "avx2,fma", "default"))) void RowRange(
    const Rows& r, const float* __restrict x, int64_t begin, int64_t end, int32_t kind,
    float threshold, float* __restrict out) {
  const int64_t d = r.dim;
  for (int64_t row = begin; row < end; ++row) {
    const float *g, *u, *w;
    if (row < r.hot) {
      g = r.hot_gate + row * d;
      u = r.hot_up + row * d;
      w = r.hot_down + row * d;
    } else {
      const int64_t k = row - r.hot;
      const int64_t at = (static_cast<int64_t>(r.idx[k / r.cluster]) * r.cluster +
                          k % r.cluster) * d;
      g = r.cold_gate + at;
      u = r.cold_up + at;
      w = r.cold_down + at;
    }
    float sg = 0.0f, su = 0.0f;
    for (int64_t j = 0; j < d; ++j) {
      sg += g[j] * x[j];
      su += u[j] * x[j];
    }
    const float a = Activate(sg, su, kind, threshold);
    if (a == 0.0f) continue;  // a silent neuron's down row is never read
    for (int64_t j = 0; j < d; ++j) out[j] += a * w[j];
  }
}

// Below this many weight floats per call, threads cost more than they save.
constexpr int64_t kMinFloatsPerShare = 1 << 18;

ffi::Error SparseFfnImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> expert,
                         ffi::Buffer<ffi::PRED> active, ffi::AnyBuffer hot_gate,
                         ffi::AnyBuffer hot_up, ffi::AnyBuffer hot_down,
                         ffi::AnyBuffer cold_gate, ffi::AnyBuffer cold_up,
                         ffi::AnyBuffer cold_down, ffi::ResultBuffer<ffi::F32> out,
                         int32_t kind, float threshold) {
  const auto hd = hot_gate.dimensions();
  const auto cd = cold_gate.dimensions();
  if (hd.size() < 2 || cd.size() < 3 || hd.size() + 1 != cd.size()) {
    return ffi::Error::InvalidArgument("sparse_ffn: expected hot [E?, H, D], cold [E?, NC, C, D]");
  }
  const int64_t d = x.element_count();
  const int64_t hot = hd[hd.size() - 2];
  const int64_t nc = cd[cd.size() - 3], c = cd[cd.size() - 2];
  if (hd.back() != d || cd.back() != d || out->element_count() != d) {
    return ffi::Error::InvalidArgument("sparse_ffn: weight rows must have the length of x");
  }
  if (static_cast<int64_t>(active.element_count()) != nc) {
    return ffi::Error::InvalidArgument("sparse_ffn: expected one active flag per cold cluster");
  }
  const int64_t e = hd.size() == 2 ? 0 : expert.typed_data()[0];
  if (e < 0 || (hd.size() > 2 && e >= static_cast<int64_t>(hd[0]))) {
    return ffi::Error::InvalidArgument("sparse_ffn: expert index out of range");
  }
  // The active clusters' indices (a few microseconds here; XLA's nonzero took ~0.6 ms).
  thread_local std::vector<int32_t> ids;
  ids.clear();
  const bool* flags = active.typed_data();
  for (int64_t i = 0; i < nc; ++i) {
    if (flags[i]) ids.push_back(static_cast<int32_t>(i));
  }
  const int64_t hot_off = e * hot * d, cold_off = e * nc * c * d;
  Rows r{static_cast<const float*>(hot_gate.untyped_data()) + hot_off,
         static_cast<const float*>(hot_up.untyped_data()) + hot_off,
         static_cast<const float*>(hot_down.untyped_data()) + hot_off,
         static_cast<const float*>(cold_gate.untyped_data()) + cold_off,
         static_cast<const float*>(cold_up.untyped_data()) + cold_off,
         static_cast<const float*>(cold_down.untyped_data()) + cold_off,
         ids.data(), hot, c, d};
  const int64_t rows = hot + static_cast<int64_t>(ids.size()) * c;
  Pool& pool = GlobalPool();
  const int shares = static_cast<int>(
      std::clamp<int64_t>(rows * d / kMinFloatsPerShare, 1, pool.size()));
  thread_local std::vector<float> partial;
  partial.assign(static_cast<size_t>(shares) * d, 0.0f);
  const float* xs = x.typed_data();
  float* parts = partial.data();
  pool.Run(shares, [&](int s) {
    RowRange(r, xs, rows * s / shares, rows * (s + 1) / shares, kind, threshold, parts + s * d);
  });
  float* o = out->typed_data();
  std::memcpy(o, parts, d * sizeof(float));
  for (int s = 1; s < shares; ++s) {
    for (int64_t j = 0; j < d; ++j) o[j] += parts[s * d + j];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(Pi2labSparseFfnF32, SparseFfnImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("kind")
                                  .Attr<float>("threshold"));

// A Python module whose only job is to hand the handler to jax.ffi.register_ffi_target.
#include <Python.h>

static PyObject* Handlers(PyObject*, PyObject*) {
  PyObject* out = PyDict_New();
  PyObject* cap = PyCapsule_New(reinterpret_cast<void*>(Pi2labSparseFfnF32), nullptr, nullptr);
  PyDict_SetItemString(out, "pi2lab_sparse_ffn_f32", cap);
  Py_DECREF(cap);
  return out;
}

static PyObject* Describe(PyObject*, PyObject*) {
  __builtin_cpu_init();
  const char* isa = __builtin_cpu_supports("avx512f")   ? "avx512f"
                    : __builtin_cpu_supports("avx2") ? "avx2+fma"
                                                     : "portable";
  return Py_BuildValue("{s:s,s:i}", "isa", isa, "threads", GlobalPool().size());
}

static PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "XLA FFI handlers by target name (PyCapsules)."},
    {"describe", Describe, METH_NOARGS, "The instruction set the kernels run and the pool size."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_native",
                              "pi2lab's native CPU kernels (XLA FFI handlers).", -1, kMethods};

PyMODINIT_FUNC PyInit__native() { return PyModule_Create(&kModule); }
