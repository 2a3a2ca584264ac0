// Sampling one row from its logits, as sashimi.generation.sampling.sample (temperature, top-k, top-p).
// Part of the native generation step: fast_step.cpp includes it (one translation unit).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "math.h"

namespace {

struct Settings {
  float temperature = 1.0f;
  float top_p = 1.0f;
  int top_k = 0;
  bool filtered() const { return top_p < 1.0f || top_k > 0; }
};

// Order-preserving map of floats to unsigned integers, reversed (ascending keys = descending values);
// -0 counts as +0.
static uint32_t descending_key(float v) {
  v += 0.0f;
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return ~b;
}

// Stable LSD radix sort of n (key, class) pairs by ascending key, 8 bits a pass; key2 / cls2 are scratch.
static void radix_sort(uint32_t* key, uint32_t* cls, uint32_t* key2, uint32_t* cls2, int n) {
  uint32_t* k0 = key;
  uint32_t* c0 = cls;
  for (int shift = 0; shift < 32; shift += 8) {
    uint32_t count[256] = {};
    for (int i = 0; i < n; ++i) ++count[(key[i] >> shift) & 255u];
    if (count[(key[0] >> shift) & 255u] == static_cast<uint32_t>(n)) continue;  // one digit: nothing moves
    uint32_t pos = 0;
    for (int d = 0; d < 256; ++d) {
      const uint32_t c = count[d];
      count[d] = pos;
      pos += c;
    }
    for (int i = 0; i < n; ++i) {
      const uint32_t at = count[(key[i] >> shift) & 255u]++;
      key2[at] = key[i];
      cls2[at] = cls[i];
    }
    std::swap(key, key2);
    std::swap(cls, cls2);
  }
  if (key != k0) {
    std::memcpy(k0, key, sizeof(uint32_t) * n);
    std::memcpy(c0, cls, sizeof(uint32_t) * n);
  }
}

// The first class whose cumulative probability exceeds u times the total, as sampling._inverse_cdf:
// #{c : cdf_c <= u cdf_{C-1}}, at most C - 1 (cdf: the float cumulative sums).
static int64_t inverse_cdf(const float* cdf, int C, float u) {
  const float target = u * cdf[C - 1];
  int64_t count = 0;
#pragma omp simd reduction(+ : count)
  for (int c = 0; c < C; ++c) count += cdf[c] <= target ? 1 : 0;
  return std::min<int64_t>(count, C - 1);
}

// scratch: 3 C floats; order: 2 C uint32 (sort keys) and 2 C uint32 (classes). Writes the token and
// log p(token) under the unfiltered, temperature-1 model.
static void sample_row(const Settings& settings, int C, const float* logits, float u, int64_t* token, float* logp,
                       float* scratch, uint32_t* order) {
  bool has_nan = false;
  float mx = -INFINITY;
  for (int c = 0; c < C; ++c) {
    const float v = logits[c];
    has_nan |= v != v;
    mx = v > mx ? v : mx;
  }
  if (has_nan) {  // the sampler stops on the non-finite log-prob; the token does not matter
    *token = 0;
    *logp = std::nanf("");
    return;
  }
  float* e = scratch;
  float* cdf = scratch + C;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int c = 0; c < C; ++c) {
    e[c] = exp_f(logits[c] - mx);
    sum += e[c];
  }
  const float lse = std::log(sum);
  const float temp = settings.temperature;
  if (!settings.filtered()) {  // probs = softmax(logits / T); token = #{c : cdf_c <= u cdf_C}
    if (temp != 1.0f) {
      float smx = -INFINITY;
      for (int c = 0; c < C; ++c) {
        const float v = logits[c] / temp;
        smx = v > smx ? v : smx;
      }
      sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int c = 0; c < C; ++c) {
        e[c] = exp_f(logits[c] / temp - smx);
        sum += e[c];
      }
    }
    const float scale = 1.0f / sum;
    double acc = 0.0;
    for (int c = 0; c < C; ++c) {
      acc += static_cast<double>(e[c] * scale);
      cdf[c] = static_cast<float>(acc);
    }
    *token = inverse_cdf(cdf, C, u);
  } else {
    // sort the scaled logits (most likely first), softmax, keep the nucleus / top k, inverse CDF
    float* scaled = scratch + 2 * C;
    uint32_t* key = order;
    uint32_t* cls = order + 2 * C;
    for (int c = 0; c < C; ++c) {
      scaled[c] = logits[c] / temp;
      key[c] = descending_key(scaled[c]);
      cls[c] = static_cast<uint32_t>(c);
    }
    radix_sort(key, cls, key + C, cls + C, C);  // stable: ties stay in class order
    const int kcap = settings.top_k > 0 ? std::min(settings.top_k, C) : C;
    const float smx = scaled[cls[0]];
    float* probs = e;
    float s2 = 0.0f;
    for (int c = 0; c < C; ++c) {
      probs[c] = exp_f(scaled[cls[c]] - smx);
      s2 += probs[c];
    }
    const float scale = 1.0f / s2;
    // keep_c = (cumsum_c - p_c < top_p) and c < top_k; cdf = cumsum(p keep), both accumulated in double
    double all = 0.0, kept = 0.0;
    for (int c = 0; c < kcap; ++c) {
      const float pc = probs[c] * scale;
      all += pc;
      const bool keep = static_cast<float>(all) - pc < settings.top_p;
      kept += keep ? static_cast<double>(pc) : 0.0;
      cdf[c] = static_cast<float>(kept);
    }
    for (int c = kcap; c < C; ++c) cdf[c] = cdf[kcap - 1];
    *token = cls[inverse_cdf(cdf, C, u)];
  }
  *logp = (logits[*token] - mx) - lse;
}

}  // namespace
