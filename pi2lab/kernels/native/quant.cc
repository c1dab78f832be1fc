// Quantized decode kernels (int8 and int4 weights in blocks of 32), called from jitted JAX
// through the XLA FFI.
//
// XLA:CPU computes an int8 or bf16 matrix-vector product at a few percent of the f32 speed
// (`../shared/ANCHORS.md`), so quantized weights gain nothing there. These kernels read the
// quantized blocks in place, on all the cores the process may use.
//
// Format (pi2lab/quant/format.py, one for the model in memory and the flash layout):
//   a matrix [N, K] is N rows quantized along K in blocks of 32 weights, one float16 scale
//   per block: scales [N, K/32].
//   int8: q int8 [N, K], weight = q * scale, q in [-127, 127] (llama.cpp's Q8_0).
//   int4: q uint8 [N, K/2]; in each block's 16 bytes, byte j holds weight j in its low nibble
//         and weight j+16 in its high nibble, both offset by 8 (llama.cpp's Q4_0).
//
// Products:
//   dot form,  y[t, n] = sum_k x[t, k] w[n, k]: the activations are quantized to int8 per
//              block of 32 (as llama.cpp does), each block's integer dot product is exact,
//              and the blocks are summed in float with both scales. For int4 weights the
//              quantized activations are stored in pair order (see XPair): two blocks'
//              low-nibble halves, then their high-nibble halves, so that one 32-byte load of
//              weights serves two blocks without moving nibbles between lanes.
//   axpy form, y[t, k] = sum_n x[t, n] w[n, k]: each row is dequantized on the fly and added
//              with weight x[t, n]; rows whose weight is exactly zero are skipped (a silent
//              neuron's down row is never read).
//   sparse FFN: the hot block and the active cold clusters of one layer (gate and up in dot
//              form, down in axpy form), rows split over the pool.
//
// Runtime dispatch: the row functions come in an AVX-512 VNNI build, an AVX2 build and a
// portable one; the best the CPU supports is picked on first use (PI2LAB_NATIVE_ISA or
// set_isa() choose another, for tests and comparisons).

#include "quant.h"

#include <immintrin.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace pi2lab {
namespace {

constexpr int64_t kBlock = 32;

using AxpyFn = void (*)(float, const void*, const uint16_t*, float*, int64_t);
using DotFn = float (*)(const void*, const uint16_t*, const int8_t*, const float*,
                        const int32_t*, int64_t);

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal
    const float f = std::ldexp(static_cast<float>(man), -24);
    return sign ? -f : f;
  }
  const uint32_t bits = exp == 31 ? (sign | 0x7f800000u | (man << 13))
                                  : (sign | ((exp + 112) << 23) | (man << 13));
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// ---- portable ---------------------------------------------------------------------------

float DotQ8Portable(const void* w, const uint16_t* ws, const int8_t* xq, const float* xs,
                    const int32_t*, int64_t nb) {
  const int8_t* q = static_cast<const int8_t*>(w);
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    for (int j = 0; j < kBlock; ++j) s += q[b * kBlock + j] * xq[b * kBlock + j];
    acc += static_cast<float>(s) * (HalfToFloat(ws[b]) * xs[b]);
  }
  return acc;
}

// Where block b's activations lie in pair order: weights j < 16 (low nibbles) pair with
// lo[j], weights j + 16 (high nibbles) with hi[j]. Blocks 2p and 2p+1 share 64 bytes: their
// low halves, then their high halves; an odd last block keeps plain order.
inline const int8_t* XPair(const int8_t* xq, int64_t b, int64_t nb, const int8_t** hi) {
  if (b < nb - nb % 2) {
    const int8_t* lo = xq + (b / 2) * 2 * kBlock + (b % 2) * 16;
    *hi = lo + kBlock;
    return lo;
  }
  *hi = xq + b * kBlock + 16;
  return xq + b * kBlock;
}

float DotQ4Portable(const void* w, const uint16_t* ws, const int8_t* xq, const float* xs,
                    const int32_t* xsum, int64_t nb) {
  const uint8_t* q = static_cast<const uint8_t*>(w);
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* p = q + b * 16;
    const int8_t* hi;
    const int8_t* lo = XPair(xq, b, nb, &hi);
    int32_t s = 0;
    for (int j = 0; j < 16; ++j) s += (p[j] & 0x0f) * lo[j] + (p[j] >> 4) * hi[j];
    s -= 8 * xsum[b];
    acc += static_cast<float>(s) * (HalfToFloat(ws[b]) * xs[b]);
  }
  return acc;
}

void AxpyQ8Portable(float a, const void* w, const uint16_t* ws, float* out, int64_t nb) {
  const int8_t* q = static_cast<const int8_t*>(w);
  for (int64_t b = 0; b < nb; ++b) {
    const float c = a * HalfToFloat(ws[b]);
    for (int j = 0; j < kBlock; ++j) out[b * kBlock + j] += c * q[b * kBlock + j];
  }
}

void AxpyQ4Portable(float a, const void* w, const uint16_t* ws, float* out, int64_t nb) {
  const uint8_t* q = static_cast<const uint8_t*>(w);
  for (int64_t b = 0; b < nb; ++b) {
    const float c = a * HalfToFloat(ws[b]);
    const uint8_t* p = q + b * 16;
    float* o = out + b * kBlock;
    for (int j = 0; j < 16; ++j) {
      o[j] += c * ((p[j] & 0x0f) - 8);
      o[j + 16] += c * ((p[j] >> 4) - 8);
    }
  }
}

// ---- AVX2 (+FMA, F16C) ------------------------------------------------------------------

#define PI2LAB_AVX2 __attribute__((target("avx2,fma,f16c")))

PI2LAB_AVX2 inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The 32 weights of an int4 block as unsigned bytes 0..15, in weight order.
PI2LAB_AVX2 inline __m256i Nibbles(const uint8_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// u8 x s8 -> 8 int32 partial sums (AVX2 has no VNNI: two steps, no saturation at these ranges:
// |q8| <= 127, |x| <= 127 so a pair sums to at most 32258).
PI2LAB_AVX2 inline __m256i DotU8S8Avx2(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// Block i of a row times block i of x, times both scales: 8 partial sums. int8 weights are
// made unsigned by moving their signs onto x; int4 nibbles are unsigned already (their +8 is
// taken out once per block by the caller: 8 * d * sum(x)).
PI2LAB_AVX2 inline __m256 BlockQ8Avx2(const int8_t* q, const uint16_t* ws, const int8_t* xq,
                                      const float* xs, int64_t i) {
  const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i * kBlock));
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * kBlock));
  const __m256i p = DotU8S8Avx2(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(_cvtsh_ss(ws[i]) * xs[i]));
}

// An int4 row's odd last block (activations in plain order), without the nibbles' +8.
PI2LAB_AVX2 inline __m256 BlockQ4Avx2(const uint8_t* q, const uint16_t* ws, const int8_t* xq,
                                      const float* xs, int64_t i) {
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * kBlock));
  const __m256i p = DotU8S8Avx2(Nibbles(q + i * 16), xv);
  return _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(_cvtsh_ss(ws[i]) * xs[i]));
}

PI2LAB_AVX2 float DotQ8Avx2(const void* w, const uint16_t* ws, const int8_t* xq,
                            const float* xs, const int32_t*, int64_t nb) {
  const int8_t* q = static_cast<const int8_t*>(w);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 1 < nb; b += 2) {
    acc0 = _mm256_add_ps(acc0, BlockQ8Avx2(q, ws, xq, xs, b));
    acc1 = _mm256_add_ps(acc1, BlockQ8Avx2(q, ws, xq, xs, b + 1));
  }
  if (b < nb) acc0 = _mm256_add_ps(acc0, BlockQ8Avx2(q, ws, xq, xs, b));
  return Hsum(_mm256_add_ps(acc0, acc1));
}

// Blocks b and b+1 of an int4 row against activations in pair order: 8 int32 partial sums,
// lanes 0-3 for block b and 4-7 for block b+1.
PI2LAB_AVX2 inline __m256i PairQ4Avx2(const uint8_t* q, const int8_t* xq, int64_t b) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * 16));
  const __m256i mask = _mm256_set1_epi8(0x0f);
  const int8_t* x = xq + b * kBlock;
  const __m256i lo = DotU8S8Avx2(_mm256_and_si256(raw, mask),
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  const __m256i hi = DotU8S8Avx2(_mm256_and_si256(_mm256_srli_epi16(raw, 4), mask),
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32)));
  return _mm256_add_epi32(lo, hi);
}

// Both blocks' scales d[b], d[b+1] spread over the pair's lanes.
PI2LAB_AVX2 inline __m256 PairScales(const uint16_t* ws, const float* xs, int64_t b) {
  return _mm256_set_m128(_mm_set1_ps(_cvtsh_ss(ws[b + 1]) * xs[b + 1]),
                         _mm_set1_ps(_cvtsh_ss(ws[b]) * xs[b]));
}

PI2LAB_AVX2 float DotQ4Avx2(const void* w, const uint16_t* ws, const int8_t* xq,
                            const float* xs, const int32_t* xsum, int64_t nb) {
  const uint8_t* q = static_cast<const uint8_t*>(w);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), off = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    const __m256 d = _mm256_mul_ps(
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ws + b))),
        _mm256_loadu_ps(xs + b));
    // the nibbles' +8: 8 * d * sum(x) per block
    off = _mm256_fmadd_ps(
        d, _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xsum + b))),
        off);
    for (int i = 0; i < 8; i += 4) {
      const __m256 d0 = _mm256_permutevar8x32_ps(d, _mm256_setr_epi32(i, i, i, i, i + 1, i + 1,
                                                                         i + 1, i + 1));
      const __m256 d1 = _mm256_permutevar8x32_ps(
          d, _mm256_setr_epi32(i + 2, i + 2, i + 2, i + 2, i + 3, i + 3, i + 3, i + 3));
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PairQ4Avx2(q, xq, b + i)), d0, acc0);
      acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PairQ4Avx2(q, xq, b + i + 2)), d1, acc1);
    }
  }
  for (; b + 2 <= nb; b += 2) {
    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PairQ4Avx2(q, xq, b)), PairScales(ws, xs, b), acc0);
  }
  if (b < nb) acc0 = _mm256_add_ps(acc0, BlockQ4Avx2(q, ws, xq, xs, b));
  float tail = 0.0f;
  for (int64_t i = nb - nb % 8; i < nb; ++i) tail += _cvtsh_ss(ws[i]) * xs[i] * static_cast<float>(8 * xsum[i]);
  return Hsum(_mm256_add_ps(acc0, acc1)) - 8.0f * Hsum(off) - tail;
}

PI2LAB_AVX2 void AxpyQ8Avx2(float a, const void* w, const uint16_t* ws, float* out,
                            int64_t nb) {
  const int8_t* q = static_cast<const int8_t*>(w);
  for (int64_t b = 0; b < nb; ++b) {
    const __m256 c = _mm256_set1_ps(a * _cvtsh_ss(ws[b]));
    for (int j = 0; j < kBlock; j += 8) {
      const __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + b * kBlock + j));
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw));
      float* o = out + b * kBlock + j;
      _mm256_storeu_ps(o, _mm256_fmadd_ps(c, v, _mm256_loadu_ps(o)));
    }
  }
}

PI2LAB_AVX2 void AxpyQ4Avx2(float a, const void* w, const uint16_t* ws, float* out,
                            int64_t nb) {
  const uint8_t* q = static_cast<const uint8_t*>(w);
  const __m256i eight = _mm256_set1_epi32(8);
  for (int64_t b = 0; b < nb; ++b) {
    const __m256 c = _mm256_set1_ps(a * _cvtsh_ss(ws[b]));
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + b * 16));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(raw, mask), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int j = 0; j < 4; ++j) {
      const __m256i n = _mm256_sub_epi32(_mm256_cvtepu8_epi32(parts[j]), eight);
      float* o = out + b * kBlock + 8 * j;
      _mm256_storeu_ps(o, _mm256_fmadd_ps(c, _mm256_cvtepi32_ps(n), _mm256_loadu_ps(o)));
    }
  }
}

// ---- AVX-512 VNNI (256-bit dot products, 512-bit dequantization) ------------------------

#define PI2LAB_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

PI2LAB_VNNI inline __m256 BlockQ8Vnni(const int8_t* q, const uint16_t* ws, const int8_t* xq,
                                      const float* xs, int64_t i) {
  const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i * kBlock));
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * kBlock));
  const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(wv),
                                        _mm256_sign_epi8(xv, wv));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(_cvtsh_ss(ws[i]) * xs[i]));
}

// Eight blocks at a time, the scales are converted and multiplied as one vector and each
// block's is moved into place with a lane permute (the per-block scalar path costs about as
// much as the block's dot product itself).
PI2LAB_VNNI inline __m256 Lane(__m256 v, int i) {
  return _mm256_permutexvar_ps(_mm256_set1_epi32(i), v);
}

PI2LAB_VNNI float DotQ8Vnni(const void* w, const uint16_t* ws, const int8_t* xq,
                            const float* xs, const int32_t*, int64_t nb) {
  const int8_t* q = static_cast<const int8_t*>(w);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    const __m256 d = _mm256_mul_ps(
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ws + b))),
        _mm256_loadu_ps(xs + b));
    for (int i = 0; i < 8; ++i) {
      const int8_t* qb = q + (b + i) * kBlock;
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb));
      const __m256i xv =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + (b + i) * kBlock));
      const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(wv),
                                            _mm256_sign_epi8(xv, wv));
      if (i % 2 == 0) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), Lane(d, i), acc0);
      } else {
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), Lane(d, i), acc1);
      }
    }
  }
  for (; b < nb; ++b) acc0 = _mm256_add_ps(acc0, BlockQ8Avx2(q, ws, xq, xs, b));
  return Hsum(_mm256_add_ps(acc0, acc1));
}

PI2LAB_VNNI inline __m256i PairQ4Vnni(const uint8_t* q, const int8_t* xq, int64_t b) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * 16));
  const __m256i mask = _mm256_set1_epi8(0x0f);
  const int8_t* x = xq + b * kBlock;
  const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_and_si256(raw, mask),
                                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  return _mm256_dpbusd_epi32(p, _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask),
                             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32)));
}

// Two blocks per step (activations in pair order): one 32-byte load of weights, two dpbusd,
// one conversion and one fma for both blocks.
PI2LAB_VNNI float DotQ4Vnni(const void* w, const uint16_t* ws, const int8_t* xq,
                            const float* xs, const int32_t* xsum, int64_t nb) {
  const uint8_t* q = static_cast<const uint8_t*>(w);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), off = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    const __m256 d = _mm256_mul_ps(
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ws + b))),
        _mm256_loadu_ps(xs + b));
    // the nibbles' +8: 8 * d * sum(x) per block
    off = _mm256_fmadd_ps(
        d, _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xsum + b))),
        off);
    for (int i = 0; i < 8; i += 4) {
      const __m256 d0 = _mm256_permutexvar_ps(
          _mm256_setr_epi32(i, i, i, i, i + 1, i + 1, i + 1, i + 1), d);
      const __m256 d1 = _mm256_permutexvar_ps(
          _mm256_setr_epi32(i + 2, i + 2, i + 2, i + 2, i + 3, i + 3, i + 3, i + 3), d);
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PairQ4Vnni(q, xq, b + i)), d0, acc0);
      acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PairQ4Vnni(q, xq, b + i + 2)), d1, acc1);
    }
  }
  float tail = 0.0f;
  for (; b + 2 <= nb; b += 2) {
    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PairQ4Vnni(q, xq, b)), PairScales(ws, xs, b), acc0);
  }
  if (b < nb) acc0 = _mm256_add_ps(acc0, BlockQ4Avx2(q, ws, xq, xs, b));
  for (int64_t i = b - b % 8; i < nb; ++i) tail += _cvtsh_ss(ws[i]) * xs[i] * static_cast<float>(8 * xsum[i]);
  return Hsum(_mm256_add_ps(acc0, acc1)) - 8.0f * Hsum(off) - tail;
}

// Up to kGroup rows to add into one output, each with its weight (a neuron's activation).
// Row and scale pointers start at the first block the caller wants.
constexpr int kGroup = 8;
struct RowGroup {
  int n = 0;
  float a[kGroup];
  const uint8_t* q[kGroup];
  const uint16_t* s[kGroup];
};

// The group's coefficients a[r] * scale[r][b] as a table [n, nb], and their sums over rows.
PI2LAB_VNNI void Coefficients(const RowGroup& g, int64_t nb, float* coef, float* sums) {
  std::fill(sums, sums + nb, 0.0f);
  for (int r = 0; r < g.n; ++r) {
    float* c = coef + r * nb;
    const __m512 a = _mm512_set1_ps(g.a[r]);
    int64_t b = 0;
    for (; b + 16 <= nb; b += 16) {
      const __m512 v = _mm512_mul_ps(
          a, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.s[r] + b))));
      _mm512_storeu_ps(c + b, v);
      _mm512_storeu_ps(sums + b, _mm512_add_ps(v, _mm512_loadu_ps(sums + b)));
    }
    for (; b < nb; ++b) {
      c[b] = g.a[r] * _cvtsh_ss(g.s[r][b]);
      sums[b] += c[b];
    }
  }
}

// out [nb * 32] += the group's rows: the output block stays in registers across the rows.
PI2LAB_VNNI void AxpyRowsQ8Avx512(const RowGroup& g, float* out, int64_t nb) {
  thread_local std::vector<float> table;
  table.resize((kGroup + 1) * nb);
  float *coef = table.data(), *sums = coef + kGroup * nb;
  Coefficients(g, nb, coef, sums);
  for (int64_t b = 0; b < nb; ++b) {
    float* o = out + b * kBlock;
    __m512 acc0 = _mm512_loadu_ps(o), acc1 = _mm512_loadu_ps(o + 16);
    for (int r = 0; r < g.n; ++r) {
      const int8_t* q = reinterpret_cast<const int8_t*>(g.q[r]) + b * kBlock;
      const __m512 c = _mm512_set1_ps(coef[r * nb + b]);
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
      acc0 = _mm512_fmadd_ps(c, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), acc0);
      acc1 = _mm512_fmadd_ps(c, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), acc1);
    }
    _mm512_storeu_ps(o, acc0);
    _mm512_storeu_ps(o + 16, acc1);
  }
}

PI2LAB_VNNI void AxpyRowsQ4Avx512(const RowGroup& g, float* out, int64_t nb) {
  thread_local std::vector<float> table;
  table.resize((kGroup + 1) * nb);
  float *coef = table.data(), *sums = coef + kGroup * nb;
  Coefficients(g, nb, coef, sums);
  const __m128i mask = _mm_set1_epi8(0x0f);
  for (int64_t b = 0; b < nb; ++b) {
    float* o = out + b * kBlock;
    // the nibbles' +8, for all rows at once: -8 * sum of the coefficients
    const __m512 offset = _mm512_set1_ps(-8.0f * sums[b]);
    __m512 acc0 = _mm512_add_ps(_mm512_loadu_ps(o), offset);
    __m512 acc1 = _mm512_add_ps(_mm512_loadu_ps(o + 16), offset);
    for (int r = 0; r < g.n; ++r) {
      const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(g.q[r] + b * 16));
      const __m512 c = _mm512_set1_ps(coef[r * nb + b]);
      const __m128i lo = _mm_and_si128(raw, mask);
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
      acc0 = _mm512_fmadd_ps(c, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), acc0);
      acc1 = _mm512_fmadd_ps(c, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), acc1);
    }
    _mm512_storeu_ps(o, acc0);
    _mm512_storeu_ps(o + 16, acc1);
  }
}

// Row by row, for the instruction sets without a blocked version.
template <AxpyFn kRow>
void AxpyRowsEach(const RowGroup& g, float* out, int64_t nb) {
  for (int r = 0; r < g.n; ++r) kRow(g.a[r], g.q[r], g.s[r], out, nb);
}

// ---- dispatch ---------------------------------------------------------------------------

using AxpyRowsFn = void (*)(const RowGroup&, float*, int64_t);

struct Isa {
  const char* name;
  DotFn dot8, dot4;
  AxpyRowsFn axpy8, axpy4;
  bool supported() const {
    __builtin_cpu_init();
    if (std::strcmp(name, "avx512vnni") == 0) {
      return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("f16c");
    }
    if (std::strcmp(name, "avx2") == 0) {
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    }
    return true;
  }
};

const Isa kIsas[] = {
    {"avx512vnni", DotQ8Vnni, DotQ4Vnni, AxpyRowsQ8Avx512, AxpyRowsQ4Avx512},
    {"avx2", DotQ8Avx2, DotQ4Avx2, AxpyRowsEach<AxpyQ8Avx2>, AxpyRowsEach<AxpyQ4Avx2>},
    {"portable", DotQ8Portable, DotQ4Portable, AxpyRowsEach<AxpyQ8Portable>,
     AxpyRowsEach<AxpyQ4Portable>},
};

const Isa* Best() {
  if (const char* env = std::getenv("PI2LAB_NATIVE_ISA")) {
    for (const Isa& isa : kIsas) {
      if (std::strcmp(env, isa.name) == 0 && isa.supported()) return &isa;
    }
  }
  for (const Isa& isa : kIsas) {
    if (isa.supported()) return &isa;
  }
  return &kIsas[2];
}

std::atomic<const Isa*> g_isa{nullptr};

const Isa& Current() {
  const Isa* isa = g_isa.load(std::memory_order_acquire);
  if (isa == nullptr) {
    isa = Best();
    g_isa.store(isa, std::memory_order_release);
  }
  return *isa;
}

// A quantized matrix's rows: `bits` 8 or 4, `k` weights per row.
struct QRows {
  const uint8_t* q;
  const uint16_t* s;
  int64_t k;
  int bits;
  int64_t row_bytes() const { return k * bits / 8; }
  int64_t blocks() const { return k / kBlock; }
  const void* row(int64_t n) const { return q + n * row_bytes(); }
  const uint16_t* scales(int64_t n) const { return s + n * blocks(); }
};

// Activations quantized per block of 32 to int8 (scale = max |x| / 127), with each block's sum;
// for int4 weights stored in pair order (XPair).
struct QuantizedX {
  std::vector<int8_t> q;
  std::vector<float> s;
  std::vector<int32_t> sum;
  void Set(const float* x, int64_t t, int64_t k, int bits) {
    const int64_t nb = k / kBlock;
    q.resize(t * k);
    s.resize(t * nb);
    sum.resize(t * nb);
    for (int64_t b = 0; b < t * nb; ++b) {
      const float* xb = x + b * kBlock;
      float amax = 0.0f;
      for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
      const float d = amax / 127.0f;
      const float id = d > 0.0f ? 1.0f / d : 0.0f;
      int8_t* row = q.data() + (b / nb) * k;
      const int8_t* hi;
      int8_t* lo = bits == 4 ? const_cast<int8_t*>(XPair(row, b % nb, nb, &hi))
                             : row + (b % nb) * kBlock;
      if (bits != 4) hi = lo + 16;
      int32_t total = 0;
      for (int j = 0; j < kBlock; ++j) {
        const int8_t v = static_cast<int8_t>(std::nearbyint(xb[j] * id));
        (j < 16 ? lo[j] : const_cast<int8_t*>(hi)[j - 16]) = v;
        total += v;
      }
      s[b] = d;
      sum[b] = total;
    }
  }
  const int8_t* qt(int64_t t, int64_t k) const { return q.data() + t * k; }
  const float* st(int64_t t, int64_t nb) const { return s.data() + t * nb; }
  const int32_t* sumt(int64_t t, int64_t nb) const { return sum.data() + t * nb; }
};

float Dot(const Isa& isa, const QRows& w, int64_t n, const QuantizedX& x, int64_t t) {
  const int64_t nb = w.blocks();
  return (w.bits == 8 ? isa.dot8 : isa.dot4)(w.row(n), w.scales(n), x.qt(t, w.k), x.st(t, nb),
                                             x.sumt(t, nb), nb);
}

// Collects rows (skipping those whose weight is zero) and adds them to out in groups, so an
// output block is loaded and stored once per group rather than once per row. Columns
// [b0*32, b1*32) of each row go to out[0, (b1-b0)*32).
class Accumulator {
 public:
  Accumulator(const Isa& isa, int bits, float* out, int64_t b0, int64_t b1)
      : fn_(bits == 8 ? isa.axpy8 : isa.axpy4), bits_(bits), out_(out), b0_(b0), nb_(b1 - b0) {}
  ~Accumulator() { Flush(); }
  void Add(float a, const QRows& w, int64_t n) {
    Add(a, static_cast<const uint8_t*>(w.row(n)), w.scales(n));
  }
  void Add(float a, const uint8_t* row, const uint16_t* scales) {
    if (a == 0.0f) return;  // a silent neuron's row is never read
    group_.a[group_.n] = a;
    group_.q[group_.n] = row + b0_ * kBlock * bits_ / 8;
    group_.s[group_.n] = scales + b0_;
    if (++group_.n == kGroup) Flush();
  }
  void Flush() {
    if (group_.n) fn_(group_, out_, nb_);
    group_.n = 0;
  }

 private:
  AxpyRowsFn fn_;
  int bits_;
  float* out_;
  int64_t b0_, nb_;
  RowGroup group_;
};

// Below this many weight bytes per call, threads cost more than they save.
constexpr int64_t kMinBytesPerShare = 1 << 18;

// How many shares to split `bytes` of weights into: at most the pool's size and `most` (the
// units there are to split), at least one.
int Shares(int64_t bytes, int64_t most) {
  const int64_t cap = std::max<int64_t>(std::min<int64_t>(GlobalPool().size(), most), 1);
  return static_cast<int>(std::clamp<int64_t>(bytes / kMinBytesPerShare, 1, cap));
}

// Checks a quantized operand: q holds n rows of k weights at `bits`, scales [.., n, k/32] f16.
ffi::Error CheckQ(const char* op, const ffi::AnyBuffer& q, const ffi::AnyBuffer& s, int bits,
                  int64_t* n, int64_t* k) {
  if (bits != 8 && bits != 4) return ffi::Error::InvalidArgument(std::string(op) + ": bits must be 8 or 4");
  if (s.element_type() != ffi::DataType::F16) {
    return ffi::Error::InvalidArgument(std::string(op) + ": scales must be float16");
  }
  const auto sd = s.dimensions();
  if (sd.size() == 0) return ffi::Error::InvalidArgument(std::string(op) + ": scales need a block axis");
  *k = sd.back() * kBlock;
  *n = sd.back() == 0 ? 0 : static_cast<int64_t>(s.element_count()) / sd.back();
  if (static_cast<int64_t>(q.size_bytes()) != *n * *k * bits / 8) {
    return ffi::Error::InvalidArgument(std::string(op) + ": weights do not match their scales");
  }
  return ffi::Error::Success();
}

QRows Rows(const ffi::AnyBuffer& q, const ffi::AnyBuffer& s, int64_t k, int bits) {
  return {static_cast<const uint8_t*>(q.untyped_data()),
          static_cast<const uint16_t*>(s.untyped_data()), k, bits};
}

// Up to this many matrices share one qdot call (attention's q, k, v; an FFN's gate and up).
constexpr size_t kMaxMatrices = 8;

// y_i [T, N_i] = x [T, K] . w_i [N_i, K]^T for each matrix i: the activations are quantized
// once and the rows of all the matrices are split over the pool as one list (one call where
// there would be several, which XLA may otherwise run at once on the same cores).
ffi::Error QDotImpl(ffi::Buffer<ffi::F32> x, ffi::RemainingArgs weights, ffi::RemainingRets ys,
                    int32_t bits) {
  const size_t m = ys.size();
  if (m == 0 || m > kMaxMatrices || weights.size() != 2 * m) {
    return ffi::Error::InvalidArgument("qdot: expected 1 to 8 (weights, scales) pairs, one per result");
  }
  QRows mats[kMaxMatrices];
  float* outs[kMaxMatrices];
  int64_t first[kMaxMatrices + 1] = {0};
  int64_t k = -1, t = 0;
  for (size_t i = 0; i < m; ++i) {
    auto q = weights.get<ffi::AnyBuffer>(2 * i);
    auto s = weights.get<ffi::AnyBuffer>(2 * i + 1);
    auto y = ys.get<ffi::AnyBuffer>(i);
    if (!q.has_value() || !s.has_value() || !y.has_value()) {
      return ffi::Error::InvalidArgument("qdot: unreadable operand");
    }
    int64_t n, ki;
    if (auto e = CheckQ("qdot", q.value(), s.value(), bits, &n, &ki); e.failure()) return e;
    if (ki == 0 || (k >= 0 && ki != k) || x.element_count() % ki) {
      return ffi::Error::InvalidArgument("qdot: every matrix's rows must have the length of x");
    }
    k = ki;
    t = x.element_count() / k;
    if (static_cast<int64_t>(y.value()->element_count()) != t * n) {
      return ffi::Error::InvalidArgument("qdot: expected x [T, K] and each y [T, N]");
    }
    mats[i] = Rows(q.value(), s.value(), k, bits);
    outs[i] = static_cast<float*>(y.value()->untyped_data());
    first[i + 1] = first[i] + n;
  }
  const int64_t total = first[m];
  // thread_local names are not captured by the workers' lambda: they use these references
  thread_local QuantizedX quantized;
  quantized.Set(x.typed_data(), t, k, bits);
  const QuantizedX& xq = quantized;
  const Isa& isa = Current();
  const int shares = Shares(total * mats[0].row_bytes(), total);
  // one row at a time: measured here, four rows at once (x loaded once per block) streamed
  // from memory at half the rate
  GlobalPool().Run(shares, [&](int i) {
    size_t mi = 0;
    for (int64_t r = total * i / shares; r < total * (i + 1) / shares; ++r) {
      while (r >= first[mi + 1]) ++mi;
      const int64_t n = first[mi + 1] - first[mi], row = r - first[mi];
      for (int64_t j = 0; j < t; ++j) outs[mi][j * n + row] = Dot(isa, mats[mi], row, xq, j);
    }
  });
  return ffi::Error::Success();
}

// y [T, K] = x [T, N] . w [N, K]
ffi::Error QAxpyImpl(ffi::Buffer<ffi::F32> x, ffi::AnyBuffer q, ffi::AnyBuffer s,
                     ffi::ResultBuffer<ffi::F32> y, int32_t bits) {
  int64_t n, k;
  if (auto e = CheckQ("qaxpy", q, s, bits, &n, &k); e.failure()) return e;
  if (n == 0 ? x.element_count() != 0 : (x.element_count() % n ||
                                         y->element_count() != x.element_count() / n * k)) {
    return ffi::Error::InvalidArgument("qaxpy: expected x [T, N] and y [T, K]");
  }
  const int64_t t = n == 0 ? y->element_count() / std::max<int64_t>(k, 1) : x.element_count() / n;
  float* out = y->typed_data();
  std::fill(out, out + t * k, 0.0f);
  const QRows w = Rows(q, s, k, bits);
  const Isa& isa = Current();
  const float* xs = x.typed_data();
  const int64_t nb = w.blocks();
  const int shares = Shares(n * w.row_bytes(), nb);
  // each share owns a range of columns, so no two write the same output
  GlobalPool().Run(shares, [&](int i) {
    const int64_t b0 = nb * i / shares, b1 = nb * (i + 1) / shares;
    for (int64_t j = 0; j < t; ++j) {
      Accumulator acc(isa, bits, out + j * k + b0 * kBlock, b0, b1);
      for (int64_t r = 0; r < n; ++r) acc.Add(xs[j * n + r], w, r);
    }
  });
  return ffi::Error::Success();
}

// One layer's cluster-sparse FFN for one token (see sparse_ffn.cc for the f32 version).
ffi::Error QSparseFfnImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> expert,
                          ffi::Buffer<ffi::PRED> active, ffi::AnyBuffer hgq, ffi::AnyBuffer hgs,
                          ffi::AnyBuffer huq, ffi::AnyBuffer hus, ffi::AnyBuffer hdq,
                          ffi::AnyBuffer hds, ffi::AnyBuffer cgq, ffi::AnyBuffer cgs,
                          ffi::AnyBuffer cuq, ffi::AnyBuffer cus, ffi::AnyBuffer cdq,
                          ffi::AnyBuffer cds, ffi::ResultBuffer<ffi::F32> out, int32_t kind,
                          float threshold, int32_t bits) {
  const auto hd = hgs.dimensions();
  const auto cd = cgs.dimensions();
  if (hd.size() < 2 || cd.size() < 3 || hd.size() + 1 != cd.size()) {
    return ffi::Error::InvalidArgument(
        "qsparse_ffn: expected hot scales [E?, H, D/32], cold scales [E?, NC, C, D/32]");
  }
  const int64_t d = x.element_count();
  const int64_t hot = hd[hd.size() - 2];
  const int64_t nc = cd[cd.size() - 3], c = cd[cd.size() - 2];
  if (hd.back() * kBlock != d || cd.back() * kBlock != d || static_cast<int64_t>(out->element_count()) != d) {
    return ffi::Error::InvalidArgument("qsparse_ffn: weight rows must have the length of x");
  }
  const std::pair<const ffi::AnyBuffer*, const ffi::AnyBuffer*> pairs[] = {
      {&hgq, &hgs}, {&huq, &hus}, {&hdq, &hds}, {&cgq, &cgs}, {&cuq, &cus}, {&cdq, &cds}};
  for (const auto& [wq, ws] : pairs) {
    int64_t n, k;
    if (auto err = CheckQ("qsparse_ffn", *wq, *ws, bits, &n, &k); err.failure()) return err;
  }
  if (static_cast<int64_t>(active.element_count()) != nc) {
    return ffi::Error::InvalidArgument("qsparse_ffn: expected one active flag per cold cluster");
  }
  const int64_t e = hd.size() == 2 ? 0 : expert.typed_data()[0];
  if (e < 0 || (hd.size() > 2 && e >= static_cast<int64_t>(hd[0]))) {
    return ffi::Error::InvalidArgument("qsparse_ffn: expert index out of range");
  }
  // thread_local names are not captured by the workers' lambda: they use the references below
  thread_local std::vector<int32_t> active_ids;
  active_ids.clear();
  const bool* flags = active.typed_data();
  for (int64_t i = 0; i < nc; ++i) {
    if (flags[i]) active_ids.push_back(static_cast<int32_t>(i));
  }
  const int32_t* ids = active_ids.data();
  // expert e's rows: hot rows e*H.., cold rows e*NC*C..
  const QRows hg = Rows(hgq, hgs, d, bits), hu = Rows(huq, hus, d, bits),
              hdn = Rows(hdq, hds, d, bits), cg = Rows(cgq, cgs, d, bits),
              cu = Rows(cuq, cus, d, bits), cdn = Rows(cdq, cds, d, bits);
  const int64_t hot0 = e * hot, cold0 = e * nc * c;
  thread_local QuantizedX quantized;
  quantized.Set(x.typed_data(), 1, d, bits);
  const QuantizedX& xq = quantized;
  const Isa& isa = Current();
  const int64_t rows = hot + static_cast<int64_t>(active_ids.size()) * c;
  const int shares = Shares(rows * hg.row_bytes() * 3, rows);
  thread_local std::vector<float> partial;
  partial.assign(static_cast<size_t>(shares) * d, 0.0f);
  float* parts = partial.data();
  const int64_t nb = d / kBlock;
  GlobalPool().Run(shares, [&](int i) {
    Accumulator acc(isa, bits, parts + i * d, 0, nb);
    for (int64_t row = rows * i / shares; row < rows * (i + 1) / shares; ++row) {
      const QRows *g, *u, *w;
      int64_t at;
      if (row < hot) {
        g = &hg, u = &hu, w = &hdn, at = hot0 + row;
      } else {
        const int64_t k = row - hot;
        g = &cg, u = &cu, w = &cdn, at = cold0 + ids[k / c] * c + k % c;
      }
      const float a = Activate(Dot(isa, *g, at, xq, 0), Dot(isa, *u, at, xq, 0), kind, threshold);
      acc.Add(a, *w, at);
    }
  });
  float* o = out->typed_data();
  pi2lab::SumShares(parts, shares, d, o);
  return ffi::Error::Success();
}

}  // namespace

void BundleFfn(const float* x, int64_t d, const uint8_t* src, int64_t stride,
               const int64_t* rows, const int64_t* units, int64_t n, int64_t cluster,
               const uint16_t* scales, int bits, int32_t kind, float threshold, float* out) {
  const int64_t rb = d * bits / 8, nb = d / kBlock;
  QuantizedX quantized;
  quantized.Set(x, 1, d, bits);
  const QuantizedX& xq = quantized;
  const Isa& isa = Current();
  const int64_t neurons = n * cluster;
  const int shares = Shares(neurons * rb * 2, neurons);
  std::vector<float> partial(static_cast<size_t>(shares) * d, 0.0f);
  float* parts = partial.data();
  auto dot = bits == 8 ? isa.dot8 : isa.dot4;
  GlobalPool().Run(shares, [&](int i) {
    Accumulator acc(isa, bits, parts + i * d, 0, nb);
    for (int64_t k = neurons * i / shares; k < neurons * (i + 1) / shares; ++k) {
      const int64_t u = k / cluster, c = k % cluster;
      const uint8_t* gate = src + rows[u] * stride + c * 3 * rb;  // gate, up, down rows
      const uint16_t* s = scales + (units[u] * cluster + c) * 3 * nb;
      const float g = dot(gate, s, xq.qt(0, d), xq.st(0, nb), xq.sumt(0, nb), nb);
      const float up = dot(gate + rb, s + nb, xq.qt(0, d), xq.st(0, nb), xq.sumt(0, nb), nb);
      acc.Add(Activate(g, up, kind, threshold), gate + 2 * rb, s + 2 * nb);
    }
  });
  pi2lab::SumShares(parts, shares, d, out);
}

const char* IsaName() { return Current().name; }

bool SetIsa(const char* name) {
  for (const Isa& isa : kIsas) {
    if (std::strcmp(name, isa.name) == 0 && isa.supported()) {
      g_isa.store(&isa, std::memory_order_release);
      return true;
    }
  }
  return false;
}

}  // namespace pi2lab

XLA_FFI_DEFINE_HANDLER_SYMBOL(Pi2labQDot, pi2lab::QDotImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int32_t>("bits"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(Pi2labQAxpy, pi2lab::QAxpyImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("bits"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(Pi2labQSparseFfn, pi2lab::QSparseFfnImpl,
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
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("kind")
                                  .Attr<float>("threshold")
                                  .Attr<int32_t>("bits"));
