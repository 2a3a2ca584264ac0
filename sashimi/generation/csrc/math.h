// The lane-group sizes and the elementwise math (exp, GELU, sigmoid) and LayerNorm kernels.
// Part of the native generation step: fast_step.cpp includes it (one translation unit).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "simd.h"

namespace {

constexpr int L = 32;   // SSM channels per lane group
constexpr int RMAX = 8; // largest DPLR rank supported
constexpr int LH = 16;  // lanes of a chunk kernel (half a lane group: its state and parameters fit in L1); the
                        // kernels walk it in LH / VW vectors (simd.h)
static_assert(LH % VW == 0 && L % VW == 0, "a half lane group is whole vectors");

// ----------------------------------------------------------------------------------------------------------
// Elementwise math: branch-free so that loops over it vectorize; NaN in gives NaN out (the sampler's check
// for non-finite log-probs relies on it).

// exp(x), about 1 ulp: x = n ln2 + r, |r| <= ln2/2, degree-7 Taylor polynomial, times 2^n built from bits.
static inline float exp_f(float x) {
  x = x < -86.0f ? -86.0f : x;  // comparisons are false for NaN: it passes through
  x = x > 88.0f ? 88.0f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: (v + shifter) - shifter rounds v to an integer
  float n = (x * 1.44269504088896341f + shifter) - shifter;
  const float r0 = x - n * 0.693145751953125f;  // ln 2 split in two: n * hi is exact
  const float r = r0 - n * 1.42860682030941723e-6f;
  float p = 1.98412698412698413e-4f;  // 1/7!
  p = p * r + 1.38888888888888889e-3f;
  p = p * r + 8.33333333333333333e-3f;
  p = p * r + 4.16666666666666667e-2f;
  p = p * r + 1.66666666666666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  n = n == n ? n : 0.0f;  // NaN: any exponent will do, p is NaN
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// GELU, exact (erf) form: x Phi(x). One formula over the whole line, no branches: with a = |x|,
//     Phi(-a) = erfc(a / sqrt 2) / 2 = t exp(P(t) - a^2 / 2) / 2,   t = 1 / (1 + a / (2 sqrt 2)),
// P of degree 9 fitted for this file (least squares on log(erfcx), reweighted towards minimax; 4e-8 relative
// error in float64 on a in [0, 13]); Phi(x) = 1 - Phi(-a) for x >= 0 (no cancellation either way). exp as in
// exp_f (Taylor degree 6 here), its argument clamped to >= -86 (Phi(-a) is then ~1e-38; a NaN x gives NaN
// through the final product). In float32: 4e-7 absolute, 7e-7 relative error against torch's GELU on
// [-12, 12] (tests/generation/test_native.py).
// U vectors at a time, statement by statement: the chain of one vector is ~100 cycles long, and U = 4
// independent chains keep the vector units busy (AVX-512: 2.3 TSC cycles per element against 3.3 for one);
// kGeluU is 4 where 32 vector registers hold the chains' temporaries, else 2.
constexpr int kGeluU = NREG >= 32 ? 4 : 2;
template <int U>
static inline void gelu_vectors(float* __restrict px) {
  typedef int32_t vi __attribute__((vector_size(VW * sizeof(int32_t))));
  vf x[U], a[U], t[U], p[U], n[U], r[U], q[U];
#define SASHIMI_EACH _Pragma("GCC unroll 8") for (int i = 0; i < U; ++i)
  SASHIMI_EACH {
    x[i] = ldv(px + i * VW);
    a[i] = reinterpret_cast<vf>(reinterpret_cast<vi>(x[i]) & 0x7fffffff);
  }
  SASHIMI_EACH t[i] = 1.0f / (1.0f + 0.353553390593273762f * a[i]);
  SASHIMI_EACH p[i] = 0.134195447f * t[i] + -0.622271717f;
  for (const float c : {1.01868606f, -0.512134194f, -0.232923642f, 0.0825867504f, 0.00685568992f, 0.392468959f,
                        0.997950792f, -1.26541424f})
    SASHIMI_EACH p[i] = p[i] * t[i] + c;
  SASHIMI_EACH {
    const vf e = p[i] - 0.5f * a[i] * a[i];
    p[i] = e > -86.0f ? e : -86.0f;  // the exponent from here on
  }
  const float shifter = 12582912.0f;  // 1.5 * 2^23: (v + shifter) - shifter rounds v to an integer
  SASHIMI_EACH n[i] = (p[i] * 1.44269504088896341f + shifter) - shifter;
  SASHIMI_EACH r[i] = (p[i] - n[i] * 0.693145751953125f) - n[i] * 1.42860682030941723e-6f;
  SASHIMI_EACH q[i] = 1.38888888888888889e-3f * r[i] + 8.33333333333333333e-3f;
  for (const float c : {4.16666666666666667e-2f, 1.66666666666666667e-1f, 0.5f, 1.0f, 1.0f})
    SASHIMI_EACH q[i] = q[i] * r[i] + c;
  SASHIMI_EACH {
    // q 2^(n - 1): n >= -125 here, so the exponent field stays normal
    const vi bits = reinterpret_cast<vi>(q[i]) + ((__builtin_convertvector(n[i], vi) - 1) << 23);
    const vf h = t[i] * reinterpret_cast<vf>(bits);  // Phi(-a)
    stv(px + i * VW, x[i] * (x[i] >= 0.0f ? 1.0f - h : h));
  }
#undef SASHIMI_EACH
}

// GELU of n floats in place. A tail of fewer than kGeluU vectors goes through the same vector code (padded),
// so that an element's value does not depend on where a thread's slice of the row starts or ends.
static void gelu_inplace(float* __restrict x, int64_t n) {
  constexpr int kBlock = kGeluU * VW;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) gelu_vectors<kGeluU>(x + i);
  if (i < n) {
    float tail[kBlock] = {};
    std::memcpy(tail, x + i, sizeof(float) * (n - i));
    gelu_vectors<kGeluU>(tail);
    std::memcpy(x + i, tail, sizeof(float) * (n - i));
  }
}

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

// ----------------------------------------------------------------------------------------------------------
// LayerNorm over the last dim (biased variance, eps inside the square root), rows of width H.

static void layer_norm(const float* __restrict x, int64_t ldx, float* __restrict y, int64_t ldy, int rows, int H,
                       const float* __restrict w, const float* __restrict b, float eps) {
  for (int r = 0; r < rows; ++r) {
    const float* __restrict xr = x + r * ldx;
    float* __restrict yr = y + r * ldy;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int h = 0; h < H; ++h) sum += xr[h];
    const float mean = sum / static_cast<float>(H);
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int h = 0; h < H; ++h) sq += (xr[h] - mean) * (xr[h] - mean);
    const float rstd = 1.0f / std::sqrt(sq / static_cast<float>(H) + eps);
#pragma omp simd
    for (int h = 0; h < H; ++h) yr[h] = (xr[h] - mean) * rstd * w[h] + b[h];
  }
}


}  // namespace
