// The fused native generation step of sashimi.generation.fast.FastLM: one call runs a whole model step for the
// batch (embedding, every due tier, head, sampling) on raw float32 pointers, with no allocation besides the
// output tensors. Built and loaded by sashimi/generation/native.py (torch.utils.cpp_extension, JIT).
//
// Dimension letters as in fast.py: B = batch, H = width of a tier, M = modes of a recurrence, C = classes,
// R = DPLR rank, p = pool, L = channels per SIMD lane group.
//
// Layout. All weights live in one 64-byte aligned arena (on huge pages where possible), in the order a step
// reads them, so that a step is one long sequential stream (at batch 1 the step is bound by how fast weights
// stream from L3 and memory). Linear weights are packed in panels of NB output columns (each (K NB) row-major). The SSM state is (B M H) in memory
// (FastLM allocates its (B H M) state tensors with that stride for this backend), so every recurrence runs
// across channels in SIMD lanes with no horizontal sums. Activations are row-major with the batch first, so
// rows [b0, b1) are an independent slice of every buffer and of the state: threads split the batch by rows.
//
// The S4 recurrences (real and imaginary parts apart, as in FastS4Block) use one form for both layers:
//     k_j = beta_j u + Re(sum_m G_j x)             (j < R; R = 0 for S4D)
//     x'  = DE x - sum_j Q_j k_j + Db u,   y = Re(sum_m c x') + D u
// which for DPLR is the Woodbury step of FastS4Block._dplr with its products folded once at setup (in float64,
// see native.py): DE = D E, Q_j = D P_j, Db = D 2B, G_j = sum_k (I - S)_jk 2 conj(P_k) + R_j E,
// S_jk = Re(sum R_j P_k), beta_j = Re(sum R_j 2B); for S4D it is x' = mu x + b u.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

constexpr int NB = 64;  // GEMM panel width: output columns per packed weight panel
constexpr int L = 32;   // SSM channels per lane group
constexpr int RMAX = 8; // largest DPLR rank supported

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

// GELU, exact (erf) form: x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2. erf on |z| < 1 as z P(z^2); beyond,
// erfc(a) = exp(-a^2) Q(1 / (1 + a/2)) on [1, 6] (Phi of a negative x straight from erfc, no cancellation).
// Polynomials fitted for this file (least squares on relative error); about 2e-7 relative error.
static inline float gelu_f(float x) {
  const float z = x * 0.70710678118654752f;
  const float a = z < 0.0f ? -z : z;
  const float s = a * a;
  float ps = 7.898209878476337e-05f;
  ps = ps * s + -0.0008024353883229196f;
  ps = ps * s + 0.00519005348905921f;
  ps = ps * s + -0.026854809373617172f;
  ps = ps * s + 0.11283612251281738f;
  ps = ps * s + -0.3761262893676758f;
  ps = ps * s + 1.128379225730896f;
  const float erf_small = a * ps;
  float al = a < 1.0f ? 1.0f : a;
  al = al > 6.0f ? 6.0f : al;
  const float t = 1.0f / (1.0f + 0.5f * al);
  float q = 0.054169777780771255f;
  q = q * t + -0.09077243506908417f;
  q = q * t + -0.11789847165346146f;
  q = q * t + 0.22697670757770538f;
  q = q * t + 0.09457536041736603f;
  q = q * t + 0.27375298738479614f;
  q = q * t + 0.2768191397190094f;
  q = q * t + 0.28266847133636475f;
  q = q * t + -2.6734569473774172e-05f;
  const float erfc_large = exp_f(-(al * al)) * q;
  const bool pos = z >= 0.0f;
  const float small = pos ? 1.0f + erf_small : 1.0f - erf_small;
  const float large = pos ? 2.0f - erfc_large : erfc_large;
  return 0.5f * x * (a < 1.0f ? small : large);
}

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

static void gelu_inplace(float* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = gelu_f(x[i]);
}

// n zeroed floats, 64-byte aligned; from 1 MB up on 2 MB transparent huge pages where the OS has them. A step
// streams megabytes of weights and state: 4 KB pages cost a TLB miss every 4 KB (measured: the weight arena on
// huge pages is 5-7% faster at batch 1, the state 4% at batch 16).
static at::Tensor zeros_huge(int64_t n) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t huge = size_t{2} << 20;
  if (static_cast<size_t>(n) * 4 >= huge / 2) {
    const size_t bytes = (static_cast<size_t>(n) * 4 + huge - 1) / huge * huge;
    void* mem = nullptr;
    if (posix_memalign(&mem, huge, bytes) == 0) {
      madvise(mem, bytes, MADV_HUGEPAGE);  // advice only: failure leaves ordinary pages
      std::memset(mem, 0, bytes);
      return at::from_blob(mem, {n}, [](void* q) { std::free(q); }, at::kFloat);
    }
  }
#endif
  return at::zeros({n}, at::kFloat);  // torch's CPU allocator aligns to 64 bytes
}

// ----------------------------------------------------------------------------------------------------------
// The weight arena: arrays are staged while the model is described, then copied into one buffer in the order
// the step reads them (finalize()).

struct Arr {
  at::Tensor staging;  // released once placed
  const float* p = nullptr;
};

class Arena {
 public:
  void place(Arr& a) { order_.push_back(&a); }
  void build() {
    int64_t total = 0;
    for (Arr* a : order_) total += round_up(a->staging.numel());
    buf_ = zeros_huge(std::max<int64_t>(total, 1));
    float* dst = buf_.data_ptr<float>();
    for (Arr* a : order_) {
      const int64_t n = a->staging.numel();
      if (n) std::memcpy(dst, a->staging.data_ptr<float>(), sizeof(float) * n);
      a->p = dst;
      a->staging = at::Tensor();
      dst += round_up(n);
    }
    order_.clear();
  }
  int64_t bytes() const { return buf_.defined() ? buf_.numel() * 4 : 0; }

 private:

  static int64_t round_up(int64_t n) { return (n + 15) / 16 * 16; }
  std::vector<Arr*> order_;
  at::Tensor buf_;
};

static at::Tensor f32(const at::Tensor& t) { return t.detach().to(at::kFloat).contiguous(); }

// ----------------------------------------------------------------------------------------------------------
// Linear layers: y (rows N) = x (rows K) W^T + bias, W packed into panels of NB output columns, panel-major,
// each (K NB) row-major, zero-padded: the kernel keeps an (RB rows x NB columns) block of accumulators in
// registers while it walks down a panel, so each weight is read once per RB rows.

struct Linear {
  int K = 0, N = 0, panels = 0;
  Arr w, b;
};

static Linear make_linear(const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(weight.dim() == 2, "linear weight must be 2-d");
  at::Tensor W = f32(weight);
  Linear lin;
  lin.N = static_cast<int>(W.size(0));
  lin.K = static_cast<int>(W.size(1));
  lin.panels = (lin.N + NB - 1) / NB;
  at::Tensor packed = at::zeros({static_cast<int64_t>(lin.panels) * lin.K * NB}, at::kFloat);
  at::Tensor bb = at::zeros({static_cast<int64_t>(lin.panels) * NB}, at::kFloat);
  const float* src = W.data_ptr<float>();
  float* dst = packed.data_ptr<float>();
  for (int n = 0; n < lin.N; ++n) {
    const int p = n / NB, c = n % NB;
    for (int k = 0; k < lin.K; ++k)
      dst[(static_cast<int64_t>(p) * lin.K + k) * NB + c] = src[static_cast<int64_t>(n) * lin.K + k];
  }
  if (bias.has_value() && bias->defined()) {
    at::Tensor b = f32(*bias);
    TORCH_CHECK(b.numel() == lin.N, "linear bias size mismatch");
    std::memcpy(bb.data_ptr<float>(), b.data_ptr<float>(), sizeof(float) * lin.N);
  }
  lin.w.staging = packed;
  lin.b.staging = bb;
  return lin;
}

// RB rows of x (stride ldx) times one panel -> RB rows of y (stride ldy), ncols <= NB valid columns.
// ACC: y += x W^T + b (a residual branch added in place), else y = x W^T + b.
template <int RB, bool ACC>
static inline void gemm_panel(const float* __restrict w, const float* __restrict bias, const float* __restrict x,
                              int64_t ldx, int K, float* __restrict y, int64_t ldy, int ncols) {
  float acc[RB][NB];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < NB; ++c) acc[r][c] = bias[c];
  for (int k = 0; k < K; ++k) {
    const float* __restrict wk = w + static_cast<int64_t>(k) * NB;
    for (int r = 0; r < RB; ++r) {
      const float xv = x[r * ldx + k];
      for (int c = 0; c < NB; ++c) acc[r][c] += xv * wk[c];
    }
  }
  for (int r = 0; r < RB; ++r) {
    float* __restrict yr = y + r * ldy;
    if (ncols == NB) {
      for (int c = 0; c < NB; ++c) yr[c] = ACC ? yr[c] + acc[r][c] : acc[r][c];
    } else {
      for (int c = 0; c < ncols; ++c) yr[c] = ACC ? yr[c] + acc[r][c] : acc[r][c];
    }
  }
}

template <bool ACC>
static void gemm_rows(const Linear& lin, const float* x, int64_t ldx, float* y, int64_t ldy, int rows) {
  for (int p = 0; p < lin.panels; ++p) {
    const float* w = lin.w.p + static_cast<int64_t>(p) * lin.K * NB;
    const float* bias = lin.b.p + p * NB;
    const int ncols = std::min(NB, lin.N - p * NB);
    float* yp = y + p * NB;
    int r = 0;
    for (; r + 4 <= rows; r += 4) gemm_panel<4, ACC>(w, bias, x + r * ldx, ldx, lin.K, yp + r * ldy, ldy, ncols);
    switch (rows - r) {
      case 3: gemm_panel<3, ACC>(w, bias, x + r * ldx, ldx, lin.K, yp + r * ldy, ldy, ncols); break;
      case 2: gemm_panel<2, ACC>(w, bias, x + r * ldx, ldx, lin.K, yp + r * ldy, ldy, ncols); break;
      case 1: gemm_panel<1, ACC>(w, bias, x + r * ldx, ldx, lin.K, yp + r * ldy, ldy, ncols); break;
      default: break;
    }
  }
}

static void gemm(const Linear& lin, const float* x, int64_t ldx, float* y, int64_t ldy, int rows, bool accumulate) {
  if (accumulate)
    gemm_rows<true>(lin, x, ldx, y, ldy, rows);
  else
    gemm_rows<false>(lin, x, ldx, y, ldy, rows);
}

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
// Blocks and tiers.

struct Block {
  bool s4 = false;
  int H = 0;
  Arr ln_w, ln_b;
  float eps = 1e-5f;
  // S4: packed recurrence (ssm_group layout, one run per lane group), state (B M H) re / im, Linear(H, 2H)
  int M = 0, R = 0;
  int64_t group_stride = 0;
  Arr ssm;
  at::Tensor re_, im_;
  float* re = nullptr;
  float* im = nullptr;
  Linear out;
  // FF: Linear(H, F), GELU, Linear(F, H)
  Linear ff_in, ff_out;
};

struct Tier {
  int H = 0, p = 0;
  std::vector<Block> down, up;
  Linear down_linear, up_linear;  // (H p -> H') and (H' -> H p)
  at::Tensor dreg_, ureg_;        // shift registers (B H p), FastLM.down[i] / up[i], updated in place
  float* dreg = nullptr;
  float* ureg = nullptr;
  at::Tensor skips_, res_, pooled_, deeper_;  // scratch: (n_down + 1) x (B H), (B H), (B H'), (B H')
  float *skips = nullptr, *res = nullptr, *pooled = nullptr, *deeper = nullptr;
};

struct Settings {
  float temperature = 1.0f;
  float top_p = 1.0f;
  int top_k = 0;
  bool filtered() const { return top_p < 1.0f || top_k > 0; }
};

class Net {
 public:
  Net(int64_t batch, int64_t n_classes, std::vector<int64_t> pool, bool unet, double temperature, double top_p,
      int64_t top_k)
      : B_(static_cast<int>(batch)), C_(static_cast<int>(n_classes)), unet_(unet) {
    TORCH_CHECK(batch >= 1 && n_classes >= 1, "batch and classes must be positive");
    TORCH_CHECK(temperature > 0 && top_p > 0 && top_p <= 1 && top_k >= 0, "invalid sampling settings");
    settings_.temperature = static_cast<float>(temperature);
    settings_.top_p = static_cast<float>(top_p);
    settings_.top_k = static_cast<int>(top_k);
    tiers_.resize(pool.size());
    for (size_t i = 0; i < pool.size(); ++i) {
      TORCH_CHECK(pool[i] >= 1, "pool sizes must be positive");
      tiers_[i].p = static_cast<int>(pool[i]);
    }
  }

  void set_io(const at::Tensor& embedding, const at::Tensor& norm_w, const at::Tensor& norm_b, double eps,
              const at::Tensor& head_w, const c10::optional<at::Tensor>& head_b) {
    emb_ = f32(embedding);
    TORCH_CHECK(emb_.dim() == 2 && emb_.size(0) == C_ + 1, "embedding must be (classes + 1, H)");
    H0_ = static_cast<int>(emb_.size(1));
    norm_w_.staging = f32(norm_w);
    norm_b_.staging = f32(norm_b);
    TORCH_CHECK(norm_w_.staging.numel() == H0_ && norm_b_.staging.numel() == H0_, "final norm size mismatch");
    norm_eps_ = static_cast<float>(eps);
    head_ = make_linear(head_w, head_b);
    TORCH_CHECK(head_.N == C_ && head_.K == H0_, "head must be Linear(H, classes)");
  }

  void set_tier(int64_t i, int64_t H, const at::Tensor& down_w, const c10::optional<at::Tensor>& down_b,
                const at::Tensor& up_w, const c10::optional<at::Tensor>& up_b, at::Tensor dreg, at::Tensor ureg) {
    Tier& T = tier(i);
    T.H = static_cast<int>(H);
    T.down_linear = make_linear(down_w, down_b);
    T.up_linear = make_linear(up_w, up_b);
    TORCH_CHECK(T.down_linear.K == T.H * T.p && T.up_linear.N == T.H * T.p, "pooling linear sizes mismatch");
    T.dreg_ = state_tensor(dreg, {B_, T.H, T.p}, {static_cast<int64_t>(T.H) * T.p, T.p, 1});
    T.ureg_ = state_tensor(ureg, {B_, T.H, T.p}, {static_cast<int64_t>(T.H) * T.p, T.p, 1});
    T.dreg = T.dreg_.data_ptr<float>();
    T.ureg = T.ureg_.data_ptr<float>();
  }

  // group: 2 i = tier i's down blocks, 2 i + 1 its up blocks, 2 n = the centre. ssm (H, (4R + 6) M): per
  // channel G_0 .. G_{R-1}, DE, Q_0 .. Q_{R-1}, Db, c, each M real then M imaginary parts; beta (H, R); state
  // re / im (B, H, M) with strides (M H, 1, H).
  void add_s4(int64_t group, const at::Tensor& ln_w, const at::Tensor& ln_b, double eps, const at::Tensor& ssm,
              const at::Tensor& beta, const at::Tensor& dskip, int64_t rank, at::Tensor re, at::Tensor im,
              const at::Tensor& out_w, const c10::optional<at::Tensor>& out_b) {
    Block k;
    k.s4 = true;
    set_norm(k, ln_w, ln_b, eps);
    const int H = k.H;
    k.R = static_cast<int>(rank);
    TORCH_CHECK(k.R >= 0 && k.R <= RMAX, "DPLR rank must be at most ", RMAX);
    TORCH_CHECK(re.dim() == 3 && re.size(0) == B_ && re.size(1) == H, "SSM state must be (B, H, M)");
    const int M = k.M = static_cast<int>(re.size(2));
    const int NR = k.R, A = 6 + 2 * NR;
    at::Tensor w = f32(ssm), bt = f32(beta), d = f32(dskip);
    TORCH_CHECK(w.numel() == static_cast<int64_t>(H) * (4 * NR + 6) * M, "SSM parameter block has the wrong size");
    TORCH_CHECK(bt.numel() == static_cast<int64_t>(H) * NR && d.numel() == H, "beta / D have the wrong size");
    // pack per lane group
    const int groups = (H + L - 1) / L;
    k.group_stride = static_cast<int64_t>(L) * (NR + 1 + static_cast<int64_t>(M) * (4 * NR + 6));
    at::Tensor packed = at::zeros({groups * k.group_stride}, at::kFloat);
    const float* W = w.data_ptr<float>();
    const float* BT = bt.data_ptr<float>();
    const float* DS = d.data_ptr<float>();
    float* P = packed.data_ptr<float>();
    const int64_t per_h = static_cast<int64_t>(4 * NR + 6) * M;
    // source array index a (0 .. 4R+5, in the order G_j re/im, DE re/im, Q_j re/im, Db re/im, c re/im)
    auto src = [&](int h, int array, int m) { return W[h * per_h + static_cast<int64_t>(array) * M + m]; };
    for (int h = 0; h < H; ++h) {
      const int g = h / L, l = h % L;
      float* base = P + g * k.group_stride;
      for (int j = 0; j < NR; ++j) base[j * L + l] = BT[h * NR + j];
      base[NR * L + l] = DS[h];
      float* s1 = base + (NR + 1) * L;
      float* s2 = s1 + static_cast<int64_t>(M) * 2 * NR * L;
      for (int m = 0; m < M; ++m) {
        for (int a = 0; a < 2 * NR; ++a) s1[(static_cast<int64_t>(m) * 2 * NR + a) * L + l] = src(h, a, m);
        for (int a = 0; a < A; ++a) s2[(static_cast<int64_t>(m) * A + a) * L + l] = src(h, 2 * NR + a, m);
      }
    }
    k.ssm.staging = packed;
    k.re_ = state_tensor(re, {B_, H, M}, {static_cast<int64_t>(M) * H, 1, H});
    k.im_ = state_tensor(im, {B_, H, M}, {static_cast<int64_t>(M) * H, 1, H});
    k.re = k.re_.data_ptr<float>();
    k.im = k.im_.data_ptr<float>();
    k.out = make_linear(out_w, out_b);
    TORCH_CHECK(k.out.K == H && k.out.N == 2 * H, "S4 output linear must be Linear(H, 2H)");
    groups_of(group).push_back(std::move(k));
  }

  void add_ff(int64_t group, const at::Tensor& ln_w, const at::Tensor& ln_b, double eps, const at::Tensor& w1,
              const c10::optional<at::Tensor>& b1, const at::Tensor& w2, const c10::optional<at::Tensor>& b2) {
    Block k;
    set_norm(k, ln_w, ln_b, eps);
    k.ff_in = make_linear(w1, b1);
    k.ff_out = make_linear(w2, b2);
    TORCH_CHECK(k.ff_in.K == k.H && k.ff_out.N == k.H && k.ff_out.K == k.ff_in.N, "FF linear sizes mismatch");
    groups_of(group).push_back(std::move(k));
  }

  // Check the widths chain, lay the weights out in the order of a step, allocate the scratch; call once.
  void finalize() {
    TORCH_CHECK(emb_.defined(), "set_io was not called");
    TORCH_CHECK(!ready_, "finalize() was already called");
    int H = H0_;
    int64_t wide = 0, width = H;
    auto check_group = [&](const std::vector<Block>& g, int Hg) {
      for (const Block& k : g) {
        TORCH_CHECK(k.H == Hg, "block width does not match its tier");
        wide = std::max<int64_t>(wide, k.s4 ? 2 * k.H : k.ff_in.N);
      }
    };
    for (size_t i = 0; i < tiers_.size(); ++i) {
      Tier& T = tiers_[i];
      TORCH_CHECK(T.H == H, "tier ", i, " was not set or has the wrong width");
      check_group(T.down, H);
      check_group(T.up, H);
      TORCH_CHECK(!unet_ || T.down.size() == T.up.size(), "U-Net tiers need as many up as down blocks");
      const int H2 = T.down_linear.N;
      TORCH_CHECK(T.up_linear.K == H2, "pooling linear sizes mismatch");
      T.skips_ = at::zeros({static_cast<int64_t>(T.down.size() + 1) * B_ * H}, at::kFloat);
      T.res_ = at::zeros({static_cast<int64_t>(B_) * H}, at::kFloat);
      T.pooled_ = at::zeros({static_cast<int64_t>(B_) * H2}, at::kFloat);
      T.deeper_ = at::zeros({static_cast<int64_t>(B_) * H2}, at::kFloat);
      T.skips = T.skips_.data_ptr<float>();
      T.res = T.res_.data_ptr<float>();
      T.pooled = T.pooled_.data_ptr<float>();
      T.deeper = T.deeper_.data_ptr<float>();
      H = H2;
      width = std::max<int64_t>(width, H);
    }
    check_group(center_, H);
    Hc_ = H;
    SW_ = (std::max({wide, width, 3 * static_cast<int64_t>(C_)}) + 15) / 16 * 16;  // 64-byte rows
    u_ = at::zeros({B_ * SW_}, at::kFloat);
    t1_ = at::zeros({B_ * SW_}, at::kFloat);
    t2_ = at::zeros({B_ * SW_}, at::kFloat);
    x0_ = at::zeros({static_cast<int64_t>(B_) * H0_}, at::kFloat);
    y0_ = at::zeros({static_cast<int64_t>(B_) * H0_}, at::kFloat);
    order_.assign(static_cast<size_t>(B_) * 4 * C_, 0);
    u_p_ = u_.data_ptr<float>();
    t1_p_ = t1_.data_ptr<float>();
    t2_p_ = t2_.data_ptr<float>();
    x0_p_ = x0_.data_ptr<float>();
    y0_p_ = y0_.data_ptr<float>();
    place_tier(0);
    arena_.place(norm_w_);
    arena_.place(norm_b_);
    place_linear(head_);
    arena_.build();
    ready_ = true;
  }

  int64_t get_t() const { return t_; }
  void set_t(int64_t t) {
    TORCH_CHECK(t >= 0, "t must be >= 0");
    t_ = t;
  }
  int64_t weight_bytes() const { return arena_.bytes(); }
  int64_t get_threads() const { return threads_; }
  void set_threads(int64_t n) {
    TORCH_CHECK(n >= 1, "threads must be >= 1");
    threads_ = static_cast<int>(n);
  }

  // token (B) the previous sample, u (B) uniforms -> (token (B) long, log p(token) (B), logits (B C)).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> step(const at::Tensor& token, const at::Tensor& u) {
    at::Tensor tok = as_tokens(token), uu = as_uniforms(u, 1);
    at::Tensor out_tok = at::empty({B_}, at::kLong), out_lp = at::empty({B_}, at::kFloat);
    at::Tensor logits = at::empty({B_, C_}, at::kFloat);
    std::lock_guard<std::mutex> guard(mutex_);
    check_ready();
    run(tok.data_ptr<int64_t>(), uu.data_ptr<float>(), out_tok.data_ptr<int64_t>(), out_lp.data_ptr<float>(),
        logits.data_ptr<float>());
    ++t_;
    return {out_tok, out_lp, logits};
  }

  // n steps at once, each sample fed back: u (n B) -> (tokens (n B), log-probs (n B), logits of the last step).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> steps(const at::Tensor& token, const at::Tensor& u) {
    at::Tensor tok = as_tokens(token), uu = as_uniforms(u, 2);
    const int64_t n = uu.size(0);
    at::Tensor out_tok = at::empty({n, B_}, at::kLong), out_lp = at::empty({n, B_}, at::kFloat);
    at::Tensor logits = at::full({B_, C_}, std::nanf(""), at::kFloat);
    std::lock_guard<std::mutex> guard(mutex_);
    check_ready();
    const int64_t* prev = tok.data_ptr<int64_t>();
    for (int64_t s = 0; s < n; ++s) {
      int64_t* cur = out_tok.data_ptr<int64_t>() + s * B_;
      run(prev, uu.data_ptr<float>() + s * B_, cur, out_lp.data_ptr<float>() + s * B_, logits.data_ptr<float>());
      ++t_;
      prev = cur;
    }
    return {out_tok, out_lp, logits};
  }

 private:
  int B_, C_, H0_ = 0;
  int threads_ = 1;
  bool unet_, ready_ = false;
  int64_t t_ = 0;
  Settings settings_;
  at::Tensor emb_;
  Arr norm_w_, norm_b_;
  float norm_eps_ = 1e-5f;
  Linear head_;
  std::vector<Tier> tiers_;
  std::vector<Block> center_;
  Arena arena_;
  int Hc_ = 0;       // width of the centre tier
  int64_t SW_ = 0;   // row stride of the scratch buffers u_, t1_, t2_ (the widest row any block or sampling needs)
  at::Tensor u_, t1_, t2_, x0_, y0_;          // scratch: LayerNorm out, block temporaries, tier-0 in / out
  float *u_p_ = nullptr, *t1_p_ = nullptr, *t2_p_ = nullptr, *x0_p_ = nullptr, *y0_p_ = nullptr;
  std::vector<uint32_t> order_;  // (B 4C) sort buffers of filtered sampling
  std::mutex mutex_;

  at::Tensor state_tensor(const at::Tensor& t, std::vector<int64_t> shape, std::vector<int64_t> strides) const {
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.device().is_cpu(), "state tensors must be float32 CPU tensors");
    TORCH_CHECK(t.sizes().vec() == shape, "state tensor has shape ", t.sizes(), ", expected ", at::IntArrayRef(shape));
    TORCH_CHECK(t.strides().vec() == strides, "state tensor has strides ", t.strides(), ", expected ",
                at::IntArrayRef(strides));
    return t;  // shares storage: updated in place
  }

  Tier& tier(int64_t i) {
    TORCH_CHECK(i >= 0 && i < static_cast<int64_t>(tiers_.size()), "tier index out of range");
    return tiers_[i];
  }

  std::vector<Block>& groups_of(int64_t g) {
    const int64_t n = static_cast<int64_t>(tiers_.size());
    TORCH_CHECK(g >= 0 && g <= 2 * n, "block group out of range");
    TORCH_CHECK(!ready_, "the model is already finalized");
    if (g == 2 * n) return center_;
    return g % 2 ? tiers_[g / 2].up : tiers_[g / 2].down;
  }

  void set_norm(Block& k, const at::Tensor& w, const at::Tensor& b, double eps) {
    k.ln_w.staging = f32(w);
    k.ln_b.staging = f32(b);
    k.H = static_cast<int>(k.ln_w.staging.numel());
    TORCH_CHECK(k.ln_b.staging.numel() == k.H, "LayerNorm weight and bias sizes differ");
    k.eps = static_cast<float>(eps);
  }

  void place_linear(Linear& lin) {
    arena_.place(lin.b);
    arena_.place(lin.w);
  }

  void place_block(Block& k) {
    arena_.place(k.ln_w);
    arena_.place(k.ln_b);
    if (k.s4) {
      arena_.place(k.ssm);
      place_linear(k.out);
    } else {
      place_linear(k.ff_in);
      place_linear(k.ff_out);
    }
  }

  // In the order of a step where every tier runs (as tier_rows).
  void place_tier(size_t i) {
    if (i == tiers_.size()) {
      for (Block& k : center_) place_block(k);
      return;
    }
    Tier& T = tiers_[i];
    for (Block& k : T.down) place_block(k);
    place_linear(T.down_linear);
    place_tier(i + 1);
    place_linear(T.up_linear);
    for (Block& k : T.up) place_block(k);
  }

  void check_ready() const { TORCH_CHECK(ready_, "finalize() was not called"); }

  at::Tensor as_tokens(const at::Tensor& token) const {
    TORCH_CHECK(token.dim() == 1 && token.size(0) == B_, "token must have shape (", B_, ",)");
    TORCH_CHECK(token.device().is_cpu(), "token must be a CPU tensor");
    TORCH_CHECK(!at::isFloatingType(token.scalar_type()) && !at::isComplexType(token.scalar_type()),
                "token must be an integer tensor");
    at::Tensor t = (token.scalar_type() == at::kLong ? token : token.to(at::kLong)).contiguous();
    const int64_t* p = t.data_ptr<int64_t>();
    for (int b = 0; b < B_; ++b)
      if (p[b] < 0 || p[b] > C_)
        throw std::out_of_range("token " + std::to_string(p[b]) + " out of range [0, " + std::to_string(C_) + "]");
    return t;
  }

  at::Tensor as_uniforms(const at::Tensor& u, int dims) const {
    TORCH_CHECK(u.dim() == dims && u.size(dims - 1) == B_, "u must have shape ", dims == 1 ? "(B,)" : "(n, B)");
    TORCH_CHECK(u.device().is_cpu(), "u must be a CPU tensor");
    return (u.scalar_type() == at::kFloat ? u : u.to(at::kFloat)).contiguous();
  }

  // ----- the step -----
  // Rows split across min(threads_, torch threads, B) threads (default 1: on the 2-core machine this was
  // measured on, the step is memory-bound and two threads, each streaming all the weights, were slower).
  void run(const int64_t* token, const float* u, int64_t* out_tok, float* out_lp, float* logits) {
    const int parts = std::min({threads_, at::get_num_threads(), B_});
    if (parts <= 1) {
      run_rows(token, u, out_tok, out_lp, logits, 0, B_);
      return;
    }
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t part = begin; part < end; ++part) {
        const int b0 = static_cast<int>(part * B_ / parts), b1 = static_cast<int>((part + 1) * B_ / parts);
        run_rows(token, u, out_tok, out_lp, logits, b0, b1);
      }
    });
  }

  // The whole step for rows [b0, b1): embedding, tiers, final norm, head, sampling.
  void run_rows(const int64_t* token, const float* u, int64_t* out_tok, float* out_lp, float* logits, int b0,
                int b1) {
    const int H = H0_, rows = b1 - b0;
    float* x0 = x0_p_;
    float* y0 = y0_p_;
    const float* emb = emb_.data_ptr<float>();
    for (int b = b0; b < b1; ++b)
      std::memcpy(x0 + static_cast<int64_t>(b) * H, emb + token[b] * H, sizeof(float) * H);
    tier_rows(0, x0, y0, t_, b0, b1);
    float* un = u_p_ + b0 * SW_;
    layer_norm(y0 + static_cast<int64_t>(b0) * H, H, un, SW_, rows, H, norm_w_.p, norm_b_.p, norm_eps_);
    gemm(head_, un, SW_, logits + static_cast<int64_t>(b0) * C_, C_, rows, false);
    for (int b = b0; b < b1; ++b)
      sample_row(logits + static_cast<int64_t>(b) * C_, u[b], out_tok + b, out_lp + b,
                 t1_p_ + b * SW_, order_.data() + static_cast<int64_t>(b) * 4 * C_);
  }

  // Tier i at its own step tau: x (B H_i) -> out (B H_i), rows [b0, b1). As FastLM._tier.
  void tier_rows(size_t i, const float* x, float* out, int64_t tau, int b0, int b1) {
    const int rows = b1 - b0;
    if (i == tiers_.size()) {
      const int64_t off = static_cast<int64_t>(b0) * Hc_, n = static_cast<int64_t>(rows) * Hc_;
      std::memcpy(out + off, x + off, sizeof(float) * n);
      for (Block& k : center_) run_block(k, out, b0, b1);
      for (int64_t e = off; e < off + n; ++e) out[e] += x[e];
      return;
    }
    Tier& T = tiers_[i];
    const int H = T.H, p = T.p;
    const int64_t BH = static_cast<int64_t>(B_) * H, off = static_cast<int64_t>(b0) * H;
    const int64_t n = static_cast<int64_t>(rows) * H;
    float* skips = T.skips;  // skips[j]: the tier input after j down blocks
    std::memcpy(skips + off, x + off, sizeof(float) * n);
    float* cur = skips;
    for (size_t j = 0; j < T.down.size(); ++j) {
      float* next = skips + static_cast<int64_t>(j + 1) * BH;
      std::memcpy(next + off, cur + off, sizeof(float) * n);
      run_block(T.down[j], next, b0, b1);
      cur = next;
    }
    // push cur into the down register; y = the oldest output still due + skip
    float* y = out;
    for (int64_t e = off; e < off + n; ++e) {
      float* d = T.dreg + e * p;
      for (int s = 0; s + 1 < p; ++s) d[s] = d[s + 1];
      d[p - 1] = cur[e];
      y[e] = T.ureg[e * p] + cur[e];
    }
    if (tau % p == p - 1) {  // pool full: run the deeper tier, refill the outputs of the next p steps
      const int H2 = T.down_linear.N;
      float* pooled = T.pooled;
      float* deeper = T.deeper;
      gemm(T.down_linear, T.dreg + off * p, static_cast<int64_t>(H) * p, pooled + static_cast<int64_t>(b0) * H2,
           H2, rows, false);
      tier_rows(i + 1, pooled, deeper, tau / p, b0, b1);
      gemm(T.up_linear, deeper + static_cast<int64_t>(b0) * H2, H2, T.ureg + off * p, static_cast<int64_t>(H) * p,
           rows, false);
    } else {
      for (int64_t e = off; e < off + n; ++e) {
        float* r = T.ureg + e * p;
        for (int s = 0; s + 1 < p; ++s) r[s] = r[s + 1];
        r[p - 1] = 0.0f;
      }
    }
    if (unet_) {
      for (size_t j = 0; j < T.up.size(); ++j) {
        run_block(T.up[j], y, b0, b1);
        const float* skip = skips + static_cast<int64_t>(T.down.size() - 1 - j) * BH;
        for (int64_t e = off; e < off + n; ++e) y[e] += skip[e];
      }
      return;
    }
    float* res = T.res;
    std::memcpy(res + off, y + off, sizeof(float) * n);
    for (Block& k : T.up) run_block(k, y, b0, b1);
    for (int64_t e = off; e < off + n; ++e) y[e] += res[e];
  }

  template <int R>
  void ssm_rows(const Block& k, const float* u, float* z, int b0, int b1) {
    const int H = k.H, M = k.M;
    const int64_t sb = static_cast<int64_t>(M) * H, sm = H;
    for (int h0 = 0, g = 0; h0 < H; h0 += L, ++g) {
      const float* wg = k.ssm.p + g * k.group_stride;
      const int nl = std::min(L, H - h0);
      float* re = k.re + static_cast<int64_t>(b0) * sb + h0;
      float* im = k.im + static_cast<int64_t>(b0) * sb + h0;
      const float* ub = u + b0 * SW_ + h0;
      float* zb = z + b0 * SW_ + h0;
      int b = b0;
      if (nl == L) {
        for (; b + 2 <= b1; b += 2, re += 2 * sb, im += 2 * sb, ub += 2 * SW_, zb += 2 * SW_)
          ssm_group<R, 2, true>(wg, M, k.R, nl, re, im, sb, sm, ub, SW_, zb, SW_);
        for (; b < b1; ++b, re += sb, im += sb, ub += SW_, zb += SW_)
          ssm_group<R, 1, true>(wg, M, k.R, nl, re, im, sb, sm, ub, SW_, zb, SW_);
      } else {
        for (; b < b1; ++b, re += sb, im += sb, ub += SW_, zb += SW_)
          ssm_group<R, 1, false>(wg, M, k.R, nl, re, im, sb, sm, ub, SW_, zb, SW_);
      }
    }
  }

  // x (B H) <- block(x), rows [b0, b1): x + GLU(Linear(GELU(SSM(LN x) + D LN x))) for S4,
  // x + Linear(GELU(Linear(LN x))) for FF. Scratch rows have the fixed stride SW_ (threads own their rows).
  void run_block(Block& k, float* x, int b0, int b1) {
    const int H = k.H, rows = b1 - b0;
    const int64_t off = static_cast<int64_t>(b0) * H;
    float* u = u_p_ + b0 * SW_;
    float* t1 = t1_p_ + b0 * SW_;
    float* t2 = t2_p_ + b0 * SW_;
    layer_norm(x + off, H, u, SW_, rows, H, k.ln_w.p, k.ln_b.p, k.eps);
    if (k.s4) {
      switch (k.R) {
        case 0: ssm_rows<0>(k, u_p_, t1_p_, b0, b1); break;
        case 1: ssm_rows<1>(k, u_p_, t1_p_, b0, b1); break;
        default: ssm_rows<-1>(k, u_p_, t1_p_, b0, b1); break;
      }
      for (int r = 0; r < rows; ++r) gelu_inplace(t1 + r * SW_, H);
      gemm(k.out, t1, SW_, t2, SW_, rows, false);
      for (int r = 0; r < rows; ++r) {
        float* __restrict xr = x + off + static_cast<int64_t>(r) * H;
        const float* __restrict gr = t2 + r * SW_;
#pragma omp simd
        for (int h = 0; h < H; ++h) xr[h] += gr[h] * sigmoid_f(gr[H + h]);
      }
    } else {
      const int F = k.ff_in.N;
      gemm(k.ff_in, u, SW_, t1, SW_, rows, false);
      for (int r = 0; r < rows; ++r) gelu_inplace(t1 + r * SW_, F);
      gemm(k.ff_out, t1, SW_, x + off, H, rows, true);
    }
  }
  // ----- sampling, as sashimi.generation.sampling.sample -----
  // scratch: 3 C floats; order: 2 C uint32 (sort keys) and 2 C uint32 (classes). Writes the token and
  // log p(token) under the unfiltered, temperature-1 model.
  void sample_row(const float* logits, float u, int64_t* token, float* logp, float* scratch, uint32_t* order) const {
    const int C = C_;
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
    const float temp = settings_.temperature;
    if (!settings_.filtered()) {  // probs = softmax(logits / T); token = #{c : cdf_c <= u cdf_C}
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
      const int kcap = settings_.top_k > 0 ? std::min(settings_.top_k, C) : C;
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
        const bool keep = static_cast<float>(all) - pc < settings_.top_p;
        kept += keep ? static_cast<double>(pc) : 0.0;
        cdf[c] = static_cast<float>(kept);
      }
      for (int c = kcap; c < C; ++c) cdf[c] = cdf[kcap - 1];
      *token = cls[inverse_cdf(cdf, C, u)];
    }
    *logp = (logits[*token] - mx) - lse;
  }

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
};

// The elementwise functions of the step applied to a tensor (for tests of their accuracy).
at::Tensor elementwise(const std::string& name, const at::Tensor& x) {
  at::Tensor y = x.detach().to(at::kFloat).contiguous().clone();
  float* p = y.data_ptr<float>();
  const int64_t n = y.numel();
  if (name == "gelu") {
    gelu_inplace(p, n);
  } else if (name == "sigmoid") {
    for (int64_t i = 0; i < n; ++i) p[i] = sigmoid_f(p[i]);
  } else if (name == "exp") {
    for (int64_t i = 0; i < n; ++i) p[i] = exp_f(p[i]);
  } else {
    TORCH_CHECK(false, "unknown function ", name);
  }
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sashimi: fused native generation step (see sashimi/generation/native.py)";
  m.def("elementwise", &elementwise, "gelu / sigmoid / exp of the native step, elementwise (for tests)");
  m.def("zeros", &zeros_huge, "n zeroed float32, 64-byte aligned, on huge pages from 1 MB up where possible");
  py::class_<Net>(m, "Net")
      .def(py::init<int64_t, int64_t, std::vector<int64_t>, bool, double, double, int64_t>(), py::arg("batch"),
           py::arg("n_classes"), py::arg("pool"), py::arg("unet"), py::arg("temperature"), py::arg("top_p"),
           py::arg("top_k"))
      .def("set_io", &Net::set_io)
      .def("set_tier", &Net::set_tier)
      .def("add_s4", &Net::add_s4)
      .def("add_ff", &Net::add_ff)
      .def("finalize", &Net::finalize)
      .def_property("t", &Net::get_t, &Net::set_t)
      .def_property_readonly("weight_bytes", &Net::weight_bytes)
      .def_property("threads", &Net::get_threads, &Net::set_threads)
      .def("step", &Net::step, py::call_guard<py::gil_scoped_release>())
      .def("steps", &Net::steps, py::call_guard<py::gil_scoped_release>());
}
