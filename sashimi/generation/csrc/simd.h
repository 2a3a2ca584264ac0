// The vector unit the kernels are built for, chosen at compile time from the -march of the build:
//   avx512  AVX-512F            VW = 16 floats per vector, NREG = 32 vector registers
//   avx2    AVX2 + FMA          VW =  8,                   NREG = 16
//   neon    ARM NEON (AArch64)  VW =  4,                   NREG = 32
//   sse2    x86-64 baseline     VW =  4,                   NREG = 16
//   plain   anything else       VW =  4 (GCC / Clang vector extension, lowered to scalar code), NREG = 16
// vf is one vector of VW floats. The memory layouts (lane groups of L = 32 channels, halves of LH = 16, GEMM
// panels of 16 / 32 / 64 columns) do not depend on the ISA; the kernels walk them in vectors of VW and size
// their register blocks from NREG (kAccRegs: vectors of accumulators a kernel may keep live besides its
// operands). Part of the native generation step: fast_step.cpp includes it (one translation unit).
#pragma once

#include <cstring>

namespace {

#if defined(__AVX512F__)
constexpr int VW = 16, NREG = 32;
constexpr const char* kIsa = "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int VW = 8, NREG = 16;
constexpr const char* kIsa = "avx2";
#elif defined(__ARM_NEON) || defined(__aarch64__)
constexpr int VW = 4, NREG = 32;
constexpr const char* kIsa = "neon";
#elif defined(__SSE2__)
constexpr int VW = 4, NREG = 16;
constexpr const char* kIsa = "sse2";
#else
constexpr int VW = 4, NREG = 16;
constexpr const char* kIsa = "plain";
#endif
constexpr int kAccRegs = NREG - 4;  // a kernel's accumulators; the rest hold operands

typedef float vf __attribute__((vector_size(VW * sizeof(float))));
static inline vf ldv(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void stv(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// The largest power of two <= n (n >= 1).
constexpr int pow2_floor(int n) { return n >= 2 ? 2 * pow2_floor(n / 2) : 1; }

}  // namespace
