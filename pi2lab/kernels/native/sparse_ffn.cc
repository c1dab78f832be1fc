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

#include "common.h"

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using pi2lab::Activate;
using pi2lab::GlobalPool;
using pi2lab::Pool;

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
  pi2lab::SumShares(parts, shares, d, o);
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

