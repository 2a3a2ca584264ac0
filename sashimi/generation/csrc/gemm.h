// Linear layers: panel-packed weights and the GEMM kernel.
// Part of the native generation step: fast_step.cpp includes it (one translation unit).
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>

#include "math.h"
#include "memory.h"
#include "share.h"

namespace {

// ----------------------------------------------------------------------------------------------------------
// Linear layers: y (rows N) = x (rows K) W^T + bias, W packed into panels of nb output columns (nb = 64, 32 or
// 16, per layer), panel-major, each (K nb) row-major, zero-padded, as float32 or (Net::bf16) as bfloat16 with
// float32 accumulation (half the bytes a step streams): the kernel keeps an (RB rows x nb columns)
// block of accumulators in registers while it walks down a panel, so each weight is read once per RB rows.
// Threads own whole panels; nb is the widest that splits the layer evenly between two threads (64 columns for
// all but the 64-wide outputs of the sc09 preset's outer tier, which get two panels of 32).
// GLU layers (the S4 output Linear(H, 2H), followed by y_h * sigmoid(y_{H+h})): panel p holds the value columns
// of channels [p w, p w + w) in its first w = nb / 2 slots and their gates in the last w, so that the thread
// that owns a panel has both halves of its channels.

struct Linear {
  int K = 0, N = 0, nb = 64, panels = 0;
  bool glu = false;
  bool bf16 = false;  // weights stored as bfloat16 (two per float slot of w), widened to float32 as they load
  Arr w, b;
  int width() const { return glu ? panels * nb : N; }  // floats per output row
};

// The panel width for n outputs (n channel pairs for a GLU layer): the fewest outputs for the busier of two
// threads, then the widest panels.
static int panel_width(int n, bool glu) {
  int best = 64, best_load = 1 << 30;
  for (int nb : {64, 32, 16}) {
    const int cap = glu ? nb / 2 : nb;
    const int panels = (n + cap - 1) / cap;
    const int load = std::min(n, (panels + 1) / 2 * cap);
    if (load < best_load) best = nb, best_load = load;
  }
  return best;
}

// A panel of nb columns is stored as sub-panels of sub_width(nb) columns, each (K sw) row-major: a column block
// of the kernel (below) then reads whole cache lines in order. On AVX-512 a sub-panel is the whole 64-column
// panel (the kernel's block at 4 rows); with 8- or 4-float vectors, whose register files hold 16-column blocks
// at 4 rows, sub-panels of 16 columns (a 64-column panel read as four interleaved 256-byte-stride passes
// stalled on its loads: 49% of the AVX2 GEMM's samples on one load instruction).
constexpr int kSubWidth = VW >= 16 ? 64 : 16;
static constexpr int sub_width(int nb) { return nb < kSubWidth ? nb : kSubWidth; }

// bfloat16 bits of x, rounded to nearest even (NaN stays NaN).
static inline uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static Linear make_linear(const at::Tensor& weight, const c10::optional<at::Tensor>& bias, bool glu = false,
                          bool bf16 = false) {
  TORCH_CHECK(weight.dim() == 2, "linear weight must be 2-d");
  at::Tensor W = f32(weight);
  Linear lin;
  lin.N = static_cast<int>(W.size(0));
  lin.K = static_cast<int>(W.size(1));
  lin.glu = glu;
  TORCH_CHECK(!glu || lin.N % 2 == 0, "a GLU layer needs an even number of outputs");
  const int H = lin.N / 2;
  lin.nb = panel_width(glu ? H : lin.N, glu);
  const int nb = lin.nb, w = nb / 2;
  lin.panels = glu ? (H + w - 1) / w : (lin.N + nb - 1) / nb;
  at::Tensor packed = at::zeros({static_cast<int64_t>(lin.panels) * lin.K * nb}, at::kFloat);
  at::Tensor bb = at::zeros({static_cast<int64_t>(lin.panels) * nb}, at::kFloat);
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    b = f32(*bias);
    TORCH_CHECK(b.numel() == lin.N, "linear bias size mismatch");
  }
  const float* src = W.data_ptr<float>();
  float* dst = packed.data_ptr<float>();
  for (int n = 0; n < lin.N; ++n) {
    int slot = n;  // n's place in the panel-major column order
    if (glu) slot = n < H ? n / w * nb + n % w : (n - H) / w * nb + w + (n - H) % w;
    const int p = slot / nb, c = slot % nb, sw = sub_width(nb);
    const int64_t at = static_cast<int64_t>(p) * lin.K * nb + static_cast<int64_t>(c / sw) * lin.K * sw + c % sw;
    for (int k = 0; k < lin.K; ++k) dst[at + static_cast<int64_t>(k) * sw] = src[static_cast<int64_t>(n) * lin.K + k];
    if (b.defined()) bb.data_ptr<float>()[slot] = b.data_ptr<float>()[n];
  }
  if (bf16) {  // the same panel layout, two bfloat16 weights per float slot
    const int64_t n = packed.numel();
    at::Tensor half = at::zeros({(n + 1) / 2}, at::kFloat);
    uint16_t* h = reinterpret_cast<uint16_t*>(half.data_ptr<float>());
    const float* f = packed.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) h[i] = bf16_bits(f[i]);
    packed = half;
  }
  lin.bf16 = bf16;
  lin.w.staging = packed;
  lin.b.staging = bb;
  return lin;
}

// VW weights as float32: as stored, or bfloat16 widened (its bits are the top half of the float's).
static inline vf ldw(const float* p) { return ldv(p); }
static inline vf ldw(const uint16_t* p) {
  typedef uint16_t vh __attribute__((vector_size(VW * sizeof(uint16_t))));
  typedef uint32_t vu __attribute__((vector_size(VW * sizeof(uint32_t))));
  vh h;
  std::memcpy(&h, p, sizeof h);
  return reinterpret_cast<vf>(__builtin_convertvector(h, vu) << 16);
}

// RB rows of x (stride ldx) times CV vectors of one panel's columns c0 .. c0 + CV VW (w at the panel, bias and
// y at the block's first column) -> RB rows of y (stride ldy), ncols <= CV VW valid columns. ACC: y += x W^T + b (a residual branch
// added in place), else y = x W^T + b. One FMA per weight and row in k order: an output's value does not
// depend on RB or CV (so neither on how rows are shared between threads, nor on the ISA's blocking).
template <int NBW, int RB, int CV, bool ACC, typename WT>
static inline void gemm_block(const WT* __restrict w, int c0, const float* __restrict bias, const float* __restrict x,
                              int64_t ldx, int K, float* __restrict y, int64_t ldy, int ncols) {
  constexpr int SW = sub_width(NBW);
  const WT* col[CV];  // vector v's column c0 + v VW: its sub-panel, at row 0
#pragma GCC unroll 16
  for (int v = 0; v < CV; ++v) {
    const int c = c0 + v * VW;
    col[v] = w + static_cast<int64_t>(c / SW) * K * SW + c % SW;
  }
  vf acc[RB][CV];
#pragma GCC unroll 4
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < CV; ++v) acc[r][v] = ldv(bias + v * VW);
  for (int k = 0; k < K; ++k) {
    vf wv[CV];
#pragma GCC unroll 16
    for (int v = 0; v < CV; ++v) wv[v] = ldw(col[v] + static_cast<int64_t>(k) * SW);
#pragma GCC unroll 4
    for (int r = 0; r < RB; ++r) {
      const float xv = x[r * ldx + k];
#pragma GCC unroll 16
      for (int v = 0; v < CV; ++v) acc[r][v] += xv * wv[v];
    }
  }
  for (int r = 0; r < RB; ++r) {
    float* __restrict yr = y + r * ldy;
    if (ncols >= CV * VW) {
#pragma GCC unroll 16
      for (int v = 0; v < CV; ++v) stv(yr + v * VW, ACC ? ldv(yr + v * VW) + acc[r][v] : acc[r][v]);
    } else {
      float out[CV * VW];
#pragma GCC unroll 16
      for (int v = 0; v < CV; ++v) stv(out + v * VW, acc[r][v]);
      for (int c = 0; c < ncols; ++c) yr[c] = ACC ? yr[c] + out[c] : out[c];
    }
  }
}

// RB rows times one panel (NBW columns, ncols valid), in column blocks of CV vectors: RB x CV accumulators and
// CV weight vectors stay in registers (CV from the register count of simd.h: the whole 64-column panel at
// 4 rows on AVX-512, 16 columns at 4 rows on AVX2, where 64 would spill).
template <int NBW, int RB, bool ACC, typename WT>
static inline void gemm_panel(const WT* __restrict w, const float* __restrict bias, const float* __restrict x,
                              int64_t ldx, int K, float* __restrict y, int64_t ldy, int ncols) {
  constexpr int V = NBW / VW;
  constexpr int CV = std::min(V, pow2_floor((NREG - 2) / (RB + 1)));
  static_assert(NBW % VW == 0 && V % CV == 0, "a panel is whole column blocks");
  for (int c0 = 0; c0 < NBW && c0 < ncols; c0 += CV * VW)
    gemm_block<NBW, RB, CV, ACC, WT>(w, c0, bias + c0, x, ldx, K, y + c0, ldy, ncols - c0);
}

// Panels [p0, p1) for all rows.
template <int NBW, bool ACC, typename WT = float>
static void gemm_panels(const Linear& lin, int p0, int p1, const float* x, int64_t ldx, float* y, int64_t ldy,
                        int rows) {
  for (int p = p0; p < p1; ++p) {
    const WT* w = reinterpret_cast<const WT*>(lin.w.p) + static_cast<int64_t>(p) * lin.K * NBW;
    const float* bias = lin.b.p + p * NBW;
    const int ncols = lin.glu ? NBW : std::min(NBW, lin.N - p * NBW);
    float* yp = y + p * NBW;
    int r = 0;
    for (; r + 4 <= rows; r += 4)
      gemm_panel<NBW, 4, ACC, WT>(w, bias, x + r * ldx, ldx, lin.K, yp + r * ldy, ldy, ncols);
    switch (rows - r) {
      case 3: gemm_panel<NBW, 3, ACC, WT>(w, bias, x + r * ldx, ldx, lin.K, yp + r * ldy, ldy, ncols); break;
      case 2: gemm_panel<NBW, 2, ACC, WT>(w, bias, x + r * ldx, ldx, lin.K, yp + r * ldy, ldy, ncols); break;
      case 1: gemm_panel<NBW, 1, ACC, WT>(w, bias, x + r * ldx, ldx, lin.K, yp + r * ldy, ldy, ncols); break;
      default: break;
    }
  }
}

template <typename WT>
static void gemm_typed(const Linear& lin, int p0, int p1, const float* x, int64_t ldx, float* y, int64_t ldy,
                       int rows, bool accumulate) {
  switch (lin.nb * 2 + (accumulate ? 1 : 0)) {
    case 128: gemm_panels<64, false, WT>(lin, p0, p1, x, ldx, y, ldy, rows); break;
    case 129: gemm_panels<64, true, WT>(lin, p0, p1, x, ldx, y, ldy, rows); break;
    case 64: gemm_panels<32, false, WT>(lin, p0, p1, x, ldx, y, ldy, rows); break;
    case 65: gemm_panels<32, true, WT>(lin, p0, p1, x, ldx, y, ldy, rows); break;
    case 32: gemm_panels<16, false, WT>(lin, p0, p1, x, ldx, y, ldy, rows); break;
    default: gemm_panels<16, true, WT>(lin, p0, p1, x, ldx, y, ldy, rows); break;
  }
}

// This thread's panels of y = x W^T + b (or y += ..., accumulate) for the rows [c.b0, c.b1) of its share (x and
// y point at row 0).
static void gemm(const Linear& lin, const float* x, int64_t ldx, float* y, int64_t ldy, bool accumulate, const Ctx& c) {
  int p0, p1;
  part(lin.panels, c, p0, p1);
  const int rows = c.b1 - c.b0;
  x += c.b0 * ldx;
  y += c.b0 * ldy;
  if (lin.bf16)
    gemm_typed<uint16_t>(lin, p0, p1, x, ldx, y, ldy, rows, accumulate);
  else
    gemm_typed<float>(lin, p0, p1, x, ldx, y, ldy, rows, accumulate);
}


}  // namespace
