// The S4 recurrences: the per-step lane-group kernel and the chunked recurrence kernels.
// Part of the native generation step: fast_step.cpp includes it (one translation unit).
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "math.h"

namespace {

// ----------------------------------------------------------------------------------------------------------
// The SSM step of one lane group (nl <= L channels, all L when FULL) for RB rows. Packed group layout:
//   beta (NR L), D (L), then per mode m: G_j re, G_j im (j < NR), then per mode m: DE re, DE im,
//   Q_j re, Q_j im (j < NR), Db re, Db im, c re, c im; every entry L floats (zero-padded lanes).
// re / im point at the state of (row b0, mode 0, first channel of the group); sb / sm are the row and mode
// strides (M H and H). u / z rows are at stride ldu / ldz.
template <int R, int RB, bool FULL>
static inline void ssm_group(const float* __restrict wg, int M, int rank, int nl, float* __restrict re,
                             float* __restrict im, int64_t sb, int64_t sm, const float* __restrict u, int64_t ldu,
                             float* __restrict z, int64_t ldz) {
  const int NR = R >= 0 ? R : rank;
  const int lanes = FULL ? L : nl;
  constexpr int KR = R > 0 ? R : (R == 0 ? 1 : RMAX);
  const float* __restrict beta = wg;
  const float* __restrict dskip = wg + NR * L;
  const float* __restrict s1 = dskip + L;
  const float* __restrict s2 = s1 + static_cast<int64_t>(M) * 2 * NR * L;
  float uu[RB][L], k[RB][KR][L], y[RB][L];
  for (int r = 0; r < RB; ++r) {
    for (int l = 0; l < L; ++l) uu[r][l] = l < lanes ? u[r * ldu + l] : 0.0f;
    for (int j = 0; j < NR; ++j)
      for (int l = 0; l < L; ++l) k[r][j][l] = beta[j * L + l] * uu[r][l];
    for (int l = 0; l < L; ++l) y[r][l] = 0.0f;
  }
  if (NR > 0) {  // k_j = beta_j u + Re(sum_m G_j x)
    for (int m = 0; m < M; ++m) {
      const float* __restrict g = s1 + static_cast<int64_t>(m) * 2 * NR * L;
      for (int r = 0; r < RB; ++r) {
        const float* __restrict xr = re + r * sb + m * sm;
        const float* __restrict xi = im + r * sb + m * sm;
        for (int j = 0; j < NR; ++j)
          for (int l = 0; l < lanes; ++l) k[r][j][l] += g[2 * j * L + l] * xr[l] - g[(2 * j + 1) * L + l] * xi[l];
      }
    }
  }
  const int A = 6 + 2 * NR;
  for (int m = 0; m < M; ++m) {  // x' = DE x - sum_j Q_j k_j + Db u; y += Re(c x')
    const float* __restrict a = s2 + static_cast<int64_t>(m) * A * L;
    const float* __restrict der = a;
    const float* __restrict dei = a + L;
    const float* __restrict q = a + 2 * L;
    const float* __restrict dbr = a + (2 + 2 * NR) * L;
    const float* __restrict dbi = dbr + L;
    const float* __restrict cr = dbi + L;
    const float* __restrict ci = cr + L;
    for (int r = 0; r < RB; ++r) {
      float* __restrict xr = re + r * sb + m * sm;
      float* __restrict xi = im + r * sb + m * sm;
      for (int l = 0; l < lanes; ++l) {
        float nr = der[l] * xr[l] - dei[l] * xi[l] + dbr[l] * uu[r][l];
        float ni = der[l] * xi[l] + dei[l] * xr[l] + dbi[l] * uu[r][l];
        for (int j = 0; j < NR; ++j) {
          nr -= q[2 * j * L + l] * k[r][j][l];
          ni -= q[(2 * j + 1) * L + l] * k[r][j][l];
        }
        xr[l] = nr;
        xi[l] = ni;
        y[r][l] += cr[l] * nr - ci[l] * ni;
      }
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int l = 0; l < lanes; ++l) z[r * ldz + l] = y[r][l] + dskip[l] * uu[r][l];
}

// ----------------------------------------------------------------------------------------------------------
// The chunked recurrence (Net::chunked, the default). Within a chunk of T = kChunk steps of a layer, starting
// from the state x_0 (before the chunk's first input), with x' = Abar x + Bt u (Abar x = DE x - sum_j Q_j
// Re(G_j x), Bt = Db - sum_j Q_j beta_j) and y = Re(c x') + D u:
//     y_i = f_i + sum_{j <= i} h_{i-j} u_j,   f_i = Re(sum_m F_im x_0m),   F_i = c Abar^(i+1) (as a functional),
//     h_0 = Re(c Bt) + D,   h_n = Re(c Abar^n Bt)
// (tables from native.py, in float64). So a step of a layer costs a (i + 1)-tap convolution per channel, and
// the state is touched once per chunk: at the first step of the next chunk, x_0 advances T steps with the
// buffered inputs (the step above, on 16 lanes at a time: with d_state 64 their state and parameters fit in
// L1), then the next chunk's f_0 .. f_{T-1} come from the table F (batch >= kFreeTableBatch: read once per
// chunk for all rows) or from T steps of the free recurrence (smaller batches: no table traffic). Per-step
// parameters and state no longer stream through the caches every step (they were ~40 KB per lane group per
// step; with the recurrence skipped altogether the step ran ~1.8x faster, see benchmarks/RESULTS.md).
// The state tensors hold x_0 between calls: Net::sync() advances them to the current step (native.py calls it
// whenever Python reads the states).

constexpr int kChunk = 16;  // T

// Chunk tables of a lane group (Block::ctab, lane group g at g ctab_stride): h (T L), then per half lane group
// (16 lanes, so that a kernel's data fill whole cache lines and all L1 sets) at T L + half chunk_half_stride:
// beta (R LH); per mode m: G_j re / im (j < R), DE re / im, Q_j re / im, Db re / im, c re / im (4R + 6
// entries of LH); then, at batch >= kFreeTableBatch, F (M T 2 LH).
constexpr int kFreeTableBatch = 4;  // from this batch on f comes from the table F, below it from T free steps
static inline int64_t chunk_param_floats(int M, int R) { return static_cast<int64_t>(LH) * (R + M * (4 * R + 6)); }
static inline int64_t chunk_half_stride(int M, int R, bool table) {
  return chunk_param_floats(M, R) + (table ? static_cast<int64_t>(M) * kChunk * 2 * LH : 0);
}

// n steps of one row's half lane group: x re / im in place, mode m at xr + m xm / xi + m xm (the chunk scratch,
// or the state itself, see chunk_groups). FORCED: with the inputs u_s = ub[s us + l], else u = 0 (the free
// response); OUT: y_s = Re(sum_m c x') into fb[s fs + l]. P: the half's parameters. chunk_run_v does VW
// of the LH lanes (all pointers at the first of them), chunk_run all LH, a vector at a time.
template <int R, bool FORCED, bool OUT>
static inline void chunk_run_v(const float* __restrict P, int M, int rank, float* __restrict xr, float* __restrict xi,
                      int64_t xm, const float* __restrict ub, int64_t us, float* __restrict fb, int64_t fs, int n) {
  const int NR = R >= 0 ? R : rank;
  constexpr int KR = R > 0 ? R : (R == 0 ? 1 : RMAX);
  const float* __restrict pm = P + NR * LH;
  const int64_t E = static_cast<int64_t>(4 * NR + 6) * LH;  // floats per mode
  for (int s = 0; s < n; ++s) {
    const vf u = FORCED ? ldv(ub + s * us) : vf{};
    vf k[KR];
    for (int j = 0; j < NR; ++j) {  // k_j = beta_j u + Re(sum_m G_j x), four partial sums over m
      const float* __restrict g = pm + 2 * j * LH;
      vf a0 = FORCED ? ldv(P + j * LH) * u : vf{}, a1 = {}, a2 = {}, a3 = {};
      int m = 0;
      for (; m + 4 <= M; m += 4) {
        const float* __restrict g0 = g + m * E;
        const float* __restrict x0 = xr + m * xm;
        const float* __restrict y0 = xi + m * xm;
        a0 += ldv(g0) * ldv(x0) - ldv(g0 + LH) * ldv(y0);
        a1 += ldv(g0 + E) * ldv(x0 + xm) - ldv(g0 + E + LH) * ldv(y0 + xm);
        a2 += ldv(g0 + 2 * E) * ldv(x0 + 2 * xm) - ldv(g0 + 2 * E + LH) * ldv(y0 + 2 * xm);
        a3 += ldv(g0 + 3 * E) * ldv(x0 + 3 * xm) - ldv(g0 + 3 * E + LH) * ldv(y0 + 3 * xm);
      }
      for (; m < M; ++m) a0 += ldv(g + m * E) * ldv(xr + m * xm) - ldv(g + m * E + LH) * ldv(xi + m * xm);
      k[j] = (a0 + a1) + (a2 + a3);
    }
    vf y0 = {}, y1 = {};
    for (int m = 0; m < M; ++m) {  // x' = DE x - sum_j Q_j k_j + Db u; y += Re(c x')
      const float* __restrict a = pm + m * E + 2 * NR * LH;
      const float* __restrict q = a + 2 * LH;
      const float* __restrict db = q + 2 * NR * LH;
      const vf pr = ldv(xr + m * xm), pi = ldv(xi + m * xm), er = ldv(a), ei = ldv(a + LH);
      vf nr = er * pr - ei * pi, ni = er * pi + ei * pr;
      if (FORCED) {
        nr += ldv(db) * u;
        ni += ldv(db + LH) * u;
      }
      for (int j = 0; j < NR; ++j) {
        nr -= ldv(q + 2 * j * LH) * k[j];
        ni -= ldv(q + (2 * j + 1) * LH) * k[j];
      }
      stv(xr + m * xm, nr);
      stv(xi + m * xm, ni);
      if (OUT) {
        const vf t = ldv(db + 2 * LH) * nr - ldv(db + 3 * LH) * ni;
        if (m & 1)
          y1 += t;
        else
          y0 += t;
      }
    }
    if (OUT) stv(fb + s * fs, y0 + y1);
  }
}

template <int R, bool FORCED, bool OUT>
static void chunk_run(const float* __restrict P, int M, int rank, float* __restrict xr, float* __restrict xi,
                      int64_t xm, const float* __restrict ub, int64_t us, float* __restrict fb, int64_t fs, int n) {
  for (int o = 0; o < LH; o += VW)
    chunk_run_v<R, FORCED, OUT>(P + o, M, rank, xr + o, xi + o, xm, FORCED ? ub + o : ub, us, OUT ? fb + o : fb, fs,
                                n);
}

// f_i = Re(sum_m F_im x_m) for i in [i0, i0 + QB) and RB rows, VW lanes (all pointers at the first of them):
// F (M T 2 LH), row r's x_m at XR + r xs + m xm (re) and XI + r xs + m xm (im), its f_i at fb + r L + i fi.
// QB outputs at a time: RB QB accumulators, 2 QB table vectors and 2 state vectors stay in registers (QB 4 with
// 32 vector registers, 2 with 16).
constexpr int kTableQ = NREG >= 32 ? 4 : 2;
template <int RB>
static inline void chunk_table_block(const float* __restrict F, int M, const float* __restrict XR,
                                     const float* __restrict XI, int64_t xs, int64_t xm, float* __restrict fb,
                                     int64_t fi, int i0) {
  constexpr int QB = kTableQ;
  vf acc[RB][QB];
#pragma GCC unroll 16
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < QB; ++q) acc[r][q] = vf{};
  for (int m = 0; m < M; ++m) {
    const float* __restrict f = F + (static_cast<int64_t>(m) * kChunk + i0) * 2 * LH;
    vf fr[QB], fm[QB];
#pragma GCC unroll 4
    for (int q = 0; q < QB; ++q) fr[q] = ldv(f + 2 * q * LH), fm[q] = ldv(f + (2 * q + 1) * LH);
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r) {
      const vf xr = ldv(XR + r * xs + m * xm), xi = ldv(XI + r * xs + m * xm);
#pragma GCC unroll 4
      for (int q = 0; q < QB; ++q) {  // two statements: the same two FMAs whatever RB (bit-identical rows)
        acc[r][q] += fr[q] * xr;
        acc[r][q] -= fm[q] * xi;
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < QB; ++q) stv(fb + r * L + (i0 + q) * fi, acc[r][q]);
}

// The next chunk's f from the table F for `rows` rows of a half lane group (x as in chunk_table_block, its
// f_i at fb + r L + i fi), in blocks of 4 rows x QB outputs x VW lanes: each block of F is read from L1 by up
// to four rows.
static void chunk_table(const float* F, int M, const float* XR, const float* XI, int64_t xs, int64_t xm, int rows,
                        float* fb, int64_t fi) {
  for (int o = 0; o < LH; o += VW) {
    const float *Fo = F + o, *xr = XR + o, *xi = XI + o;
    float* fo = fb + o;
    for (int i0 = 0; i0 < kChunk; i0 += kTableQ) {
      int r = 0;
      for (; r + 4 <= rows; r += 4) chunk_table_block<4>(Fo, M, xr + r * xs, xi + r * xs, xs, xm, fo + r * L, fi, i0);
      switch (rows - r) {
        case 3: chunk_table_block<3>(Fo, M, xr + r * xs, xi + r * xs, xs, xm, fo + r * L, fi, i0); break;
        case 2: chunk_table_block<2>(Fo, M, xr + r * xs, xi + r * xs, xs, xm, fo + r * L, fi, i0); break;
        case 1: chunk_table_block<1>(Fo, M, xr + r * xs, xi + r * xs, xs, xm, fo + r * L, fi, i0); break;
        default: break;
      }
    }
  }
}

// The next row's state arrives while this one runs (it is read once per chunk: cold).
static inline void prefetch_state(const float* re, const float* im, int64_t sm, int M) {
  for (int m = 0; m < M; ++m) {
    __builtin_prefetch(re + m * sm, 1);
    __builtin_prefetch(im + m * sm, 1);
  }
}

// Copy nh lanes of a row's state (re / im at lane 0 of the half, mode stride sm) into x (re (M LH), then im;
// zero beyond nh), or back (store).
static inline void chunk_state(float* re, float* im, int64_t sm, int M, int nh, float* x, bool store) {
  float* xi = x + static_cast<int64_t>(M) * LH;
  for (int m = 0; m < M; ++m) {
    if (store) {
      std::memcpy(re + m * sm, x + m * LH, sizeof(float) * nh);
      std::memcpy(im + m * sm, xi + m * LH, sizeof(float) * nh);
    } else {
      for (int l = 0; l < LH; ++l) {
        x[m * LH + l] = l < nh ? re[m * sm + l] : 0.0f;
        xi[m * LH + l] = l < nh ? im[m * sm + l] : 0.0f;
      }
    }
  }
}

// Rows [b0, b1) of a lane group at chunk position p. Buffers (T B L): the inputs ub, f fb. ub[p] = u;
// z = f_p + sum_{j <= p} h_{p-j} ub[j] (lanes < nl); u / z rows at stride ld.
static void chunk_out(const float* __restrict h, int p, int nl, int B, int b0, int b1, float* __restrict ub,
                      const float* __restrict fb, const float* __restrict u, float* __restrict z, int64_t ld) {
  constexpr int NV = L / VW;
  for (int b = b0; b < b1; ++b) {
    float* __restrict up = ub + (static_cast<int64_t>(p) * B + b) * L;
    const float* __restrict ur = u + b * ld;
    for (int l = 0; l < L; ++l) up[l] = l < nl ? ur[l] : 0.0f;
    const float* __restrict fr = fb + (static_cast<int64_t>(p) * B + b) * L;
    vf a[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) a[v] = ldv(fr + v * VW);
    for (int j = 0; j <= p; ++j) {
      const float* __restrict hj = h + (p - j) * L;
      const float* __restrict uj = ub + (static_cast<int64_t>(j) * B + b) * L;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) a[v] += ldv(hj + v * VW) * ldv(uj + v * VW);
    }
    float* __restrict zr = z + b * ld;
    if (nl == L) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) stv(zr + v * VW, a[v]);
    } else {
      float acc[L];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) stv(acc + v * VW, a[v]);
      for (int l = 0; l < nl; ++l) zr[l] = acc[l];
    }
  }
}


// ----------------------------------------------------------------------------------------------------------
// Packing: the folded recurrence of H channels as native.py hands it over (W (H, (4R+6) M): per channel G_0 ..
// G_{R-1}, DE, Q_0 .. Q_{R-1}, Db, c, each M real then M imaginary parts; BT (H, R) beta; DS (H) the skip D)
// into the layouts the kernels above read. Each layout is described at its kernel; these are its only writers.

// The per-step layout of ssm_group, one run of group_stride floats per lane group of L channels.
static at::Tensor pack_ssm_groups(const float* W, const float* BT, const float* DS, int H, int M, int NR,
                                  int64_t& group_stride) {
  const int A = 6 + 2 * NR, groups = (H + L - 1) / L;
  group_stride = static_cast<int64_t>(L) * (NR + 1 + static_cast<int64_t>(M) * (4 * NR + 6));
  at::Tensor packed = at::zeros({groups * group_stride}, at::kFloat);
  float* P = packed.data_ptr<float>();
  const int64_t per_h = static_cast<int64_t>(4 * NR + 6) * M;
  // source array index a (0 .. 4R+5, in the order G_j re/im, DE re/im, Q_j re/im, Db re/im, c re/im)
  auto src = [&](int h, int array, int m) { return W[h * per_h + static_cast<int64_t>(array) * M + m]; };
  for (int h = 0; h < H; ++h) {
    const int g = h / L, l = h % L;
    float* base = P + g * group_stride;
    for (int j = 0; j < NR; ++j) base[j * L + l] = BT[h * NR + j];
    base[NR * L + l] = DS[h];
    float* s1 = base + (NR + 1) * L;
    float* s2 = s1 + static_cast<int64_t>(M) * 2 * NR * L;
    for (int m = 0; m < M; ++m) {
      for (int a = 0; a < 2 * NR; ++a) s1[(static_cast<int64_t>(m) * 2 * NR + a) * L + l] = src(h, a, m);
      for (int a = 0; a < A; ++a) s2[(static_cast<int64_t>(m) * A + a) * L + l] = src(h, 2 * NR + a, m);
    }
  }
  return packed;
}

// The chunk tables of the chunked recurrence (layout above kFreeTableBatch), ctab_stride floats per lane group:
// CH (H, T) the impulse response with D in h_0; CF (H, M, T, 2) the free-response functionals (packed only when
// table: batch >= kFreeTableBatch).
static at::Tensor pack_chunk_tables(const float* W, const float* BT, const float* CF, const float* CH, int H, int M,
                                    int NR, bool table, int64_t& ctab_stride) {
  const int groups = (H + L - 1) / L;
  const int64_t half = chunk_half_stride(M, NR, table), E = 4 * NR + 6, per_h = E * M;
  ctab_stride = static_cast<int64_t>(kChunk) * L + 2 * half;
  at::Tensor ctab = at::zeros({groups * ctab_stride}, at::kFloat);
  float* CT = ctab.data_ptr<float>();
  auto src = [&](int h, int array, int m) { return W[h * per_h + static_cast<int64_t>(array) * M + m]; };
  for (int h = 0; h < H; ++h) {
    const int g = h / L, l = h % LH;
    float* base = CT + g * ctab_stride;
    for (int i = 0; i < kChunk; ++i) base[i * L + h % L] = CH[h * kChunk + i];
    float* P = base + kChunk * L + (h % L) / LH * half;  // this channel's half lane group
    for (int j = 0; j < NR; ++j) P[j * LH + l] = BT[h * NR + j];
    float* pm = P + NR * LH;
    for (int m = 0; m < M; ++m) {
      float* e = pm + m * E * LH;
      for (int a = 0; a < 2 * NR; ++a) e[a * LH + l] = src(h, a, m);  // G_j re / im
      for (int a = 0; a < 2 + 2 * NR; ++a) e[(2 * NR + a) * LH + l] = src(h, 2 * NR + a, m);  // DE, Q_j
      for (int a = 0; a < 4; ++a) e[(4 * NR + 2 + a) * LH + l] = src(h, 4 * NR + 2 + a, m);  // Db, c
    }
    float* F = P + chunk_param_floats(M, NR);
    for (int m = 0; table && m < M; ++m)
      for (int i = 0; i < kChunk; ++i)
        for (int a = 0; a < 2; ++a)
          F[((static_cast<int64_t>(m) * kChunk + i) * 2 + a) * LH + l] =
              CF[((static_cast<int64_t>(h) * M + m) * kChunk + i) * 2 + a];
  }
  return ctab;
}


}  // namespace
