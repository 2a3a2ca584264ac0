// The fused native generation step of sashimi.generation.fast.FastLM: one call runs a whole model step for the
// batch (embedding, every due tier, head, sampling) on raw float32 pointers, with no allocation besides the
// output tensors. Built and loaded by sashimi/generation/native.py (torch.utils.cpp_extension, JIT).
// This file holds the model (blocks, tiers, Net: the schedule of a step, its threads) and its Python bindings;
// the kernels are in the headers beside it, each with the packing of the memory layout it reads: simd.h (the
// vector unit built for), math.h (exp / GELU / sigmoid, LayerNorm), gemm.h (Linear layers: panel packing,
// float32 or bfloat16 weights), recurrence.h (S4 steps and the chunked recurrence: lane-group and chunk-table
// packing), sampling.h (a row's token from its logits), memory.h (buffers, weight arena), share.h (a thread's
// share of a step), team.h (threads).
//
// Dimension letters as in fast.py: B = batch, H = width of a tier, M = modes of a recurrence, C = classes,
// R = DPLR rank, p = pool, L = channels per SIMD lane group.
//
// Layout. All weights live in one 4 KB aligned arena (on huge pages where possible), in the order a step reads
// them, so that a step is one long sequential stream (at batch 1 the step is bound by how fast weights stream
// from L2, L3 and memory). Linear weights are packed in panels of 64, 32 or 16 output columns (each (K nb)
// row-major). The SSM state is (B M H) in memory (FastLM allocates its (B H M) state tensors with that stride
// for this backend), so every recurrence runs across channels in SIMD lanes with no horizontal sums.
// Activations are row-major with the batch first.
//
// Threads (Net::threads; native.py sets it from threads= (the CLI: --threads or SASHIMI_NATIVE_THREADS), default 2 where the process may use 2
// CPUs). Thread 0 is the caller, the others persistent workers of this Net (Team; not torch's pool). Two ways
// to share a step:
// - Column split (batch < Net::rows_from, and the deeper levels at any batch). Each thread owns a fixed share
//   of every layer, the same every step: whole output panels of every Linear (GLU pairs together), whole lane
//   groups of every recurrence (its parameters and state), 32-column units of every elementwise op; all rows
//   of the batch. So each thread streams about half the weights (and of the state). Dependent stages meet at
//   a barrier (two per block). Two exceptions, both because of the state layout (see Net::steps): during a
//   long steps() call the states are copied into a private layout, lane group by lane group; in step() at
//   batch >= threads the recurrences split the batch rows instead of the lane groups.
// - Row split (batch >= Net::rows_from, over the outermost Net::row_levels levels: tier 0, tier 1, ...; see
//   step_rows). Each thread runs those levels for its own rows of the batch, all columns, alone: embedding,
//   blocks, pooling, head and sampling, with no barrier. The team meets only where a level deeper than that
//   runs (split by columns as above) and at the end of the step. Each thread streams all of the outer levels'
//   weights (L2 / L3 resident at the sc09 preset's sizes), in exchange for ~30 fewer barriers per step and no
//   LayerNorm done twice. Measured on the 2-core machine of benchmarks/RESULTS.md at the sc09 preset: +16%
//   samples/s at batch 16 and +8% at batch 8 with tiers 0 and 1 by rows; a wash at batch 4; slower at 2.
// Every output element is computed by one thread with the operations of the one-thread step in the same order
// (the kernels do not depend on how many rows they are given at once): the results are bit-identical for any
// number of threads and either split. Column split, two threads against one: 1.8x (a call per step) to 2.1x
// (steps()) the samples/s at batch 1, 1.75-1.8x at batch 16.
//
// The S4 recurrences (real and imaginary parts apart, as in FastS4Block) use one form for both layers:
//     k_j = beta_j u + Re(sum_m G_j x)             (j < R; R = 0 for S4D)
//     x'  = DE x - sum_j Q_j k_j + Db u,   y = Re(sum_m c x') + D u
// which for DPLR is the Woodbury step of FastS4Block._dplr with its products folded once at setup (in float64,
// see native.py): DE = D E, Q_j = D P_j, Db = D 2B, G_j = sum_k (I - S)_jk 2 conj(P_k) + R_j E,
// S_jk = Re(sum R_j P_k), beta_j = Re(sum R_j 2B); for S4D it is x' = mu x + b u.
// By default (Net::chunked) a layer steps this recurrence only once per chunk of 16 of its steps, for all 16
// at once; between, its outputs come from a free response and a 16-tap convolution (see chunk_run). The
// per-step form (ssm_group) stays for chunked = false.
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__unix__)
#include <pthread.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "gemm.h"
#include "math.h"
#include "memory.h"
#include "recurrence.h"
#include "sampling.h"
#include "share.h"
#include "team.h"

namespace {

constexpr int kOwnStateSteps = 256;  // multi-threaded steps() calls this long use private SSM states (see there)

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
  float* own = nullptr;    // the private copy of the state during a multi-threaded steps() call (see there):
  int64_t own_stride = 0;  // lane group g: re (B M L) at own + g own_stride, im 384 bytes after its end (as
  int64_t own_im = 0;      // in native.py's state buffer: no 4K aliasing of the re and im rows): re + own_im
  // chunked recurrence (see chunk_run): per lane group its tables (chunk_half_stride) and buffers: the inputs
  // since the state's x_0 (T B L), then f (T B L); how many inputs are buffered, whether f is for this x_0
  Arr ctab;
  int64_t ctab_stride = 0;
  at::Tensor cbuf_;
  float* cbuf = nullptr;
  int pos = 0;
  bool fvalid = false;
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

class Net {
 public:
  Net(int64_t batch, int64_t n_classes, std::vector<int64_t> pool, bool unet, double temperature, double top_p,
      int64_t top_k, bool bf16)
      : B_(static_cast<int>(batch)), C_(static_cast<int>(n_classes)), unet_(unet), bf16_(bf16) {
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
    emb_p_ = emb_.data_ptr<float>();
    H0_ = static_cast<int>(emb_.size(1));
    norm_w_.staging = f32(norm_w);
    norm_b_.staging = f32(norm_b);
    TORCH_CHECK(norm_w_.staging.numel() == H0_ && norm_b_.staging.numel() == H0_, "final norm size mismatch");
    norm_eps_ = static_cast<float>(eps);
    head_ = make_linear(head_w, head_b, false, bf16_);
    TORCH_CHECK(head_.N == C_ && head_.K == H0_, "head must be Linear(H, classes)");
  }

  // A conditional model's label vectors (B, H): row b is added to every embedded token of sequence b.
  void set_cond(const at::Tensor& cond) {
    TORCH_CHECK(emb_.defined(), "set_io must come before set_cond");
    cond_ = f32(cond);
    TORCH_CHECK(cond_.dim() == 2 && cond_.size(0) == B_ && cond_.size(1) == H0_, "cond must be (batch, H)");
    cond_p_ = cond_.data_ptr<float>();
  }

  void set_tier(int64_t i, int64_t H, const at::Tensor& down_w, const c10::optional<at::Tensor>& down_b,
                const at::Tensor& up_w, const c10::optional<at::Tensor>& up_b, at::Tensor dreg, at::Tensor ureg) {
    Tier& T = tier(i);
    T.H = static_cast<int>(H);
    T.down_linear = make_linear(down_w, down_b, false, bf16_);
    T.up_linear = make_linear(up_w, up_b, false, bf16_);
    TORCH_CHECK(T.down_linear.K == T.H * T.p && T.up_linear.N == T.H * T.p, "pooling linear sizes mismatch");
    T.dreg_ = state_tensor(dreg, {B_, T.H, T.p}, {static_cast<int64_t>(T.H) * T.p, T.p, 1});
    T.ureg_ = state_tensor(ureg, {B_, T.H, T.p}, {static_cast<int64_t>(T.H) * T.p, T.p, 1});
    T.dreg = T.dreg_.data_ptr<float>();
    T.ureg = T.ureg_.data_ptr<float>();
  }

  // group: 2 i = tier i's down blocks, 2 i + 1 its up blocks, 2 n = the centre. ssm (H, (4R + 6) M): per
  // channel G_0 .. G_{R-1}, DE, Q_0 .. Q_{R-1}, Db, c, each M real then M imaginary parts; beta (H, R); state
  // re / im (B, H, M) with strides (M H, 1, H).
  // chunk_f (H, M, T, 2) and chunk_h (H, T): the chunked recurrence's tables (see chunk_run).
  void add_s4(int64_t group, const at::Tensor& ln_w, const at::Tensor& ln_b, double eps, const at::Tensor& ssm,
              const at::Tensor& beta, const at::Tensor& dskip, int64_t rank, at::Tensor re, at::Tensor im,
              const at::Tensor& out_w, const c10::optional<at::Tensor>& out_b, const at::Tensor& chunk_f,
              const at::Tensor& chunk_h) {
    Block k;
    k.s4 = true;
    set_norm(k, ln_w, ln_b, eps);
    const int H = k.H;
    k.R = static_cast<int>(rank);
    TORCH_CHECK(k.R >= 0 && k.R <= RMAX, "DPLR rank must be at most ", RMAX);
    TORCH_CHECK(re.dim() == 3 && re.size(0) == B_ && re.size(1) == H, "SSM state must be (B, H, M)");
    const int M = k.M = static_cast<int>(re.size(2));
    const int NR = k.R;
    at::Tensor w = f32(ssm), bt = f32(beta), d = f32(dskip);
    TORCH_CHECK(w.numel() == static_cast<int64_t>(H) * (4 * NR + 6) * M, "SSM parameter block has the wrong size");
    TORCH_CHECK(bt.numel() == static_cast<int64_t>(H) * NR && d.numel() == H, "beta / D have the wrong size");
    k.ssm.staging = pack_ssm_groups(w.data_ptr<float>(), bt.data_ptr<float>(), d.data_ptr<float>(), H, M, NR,
                                    k.group_stride);
    at::Tensor cf = f32(chunk_f), ch = f32(chunk_h);
    TORCH_CHECK(cf.numel() == static_cast<int64_t>(H) * M * kChunk * 2 && ch.numel() == static_cast<int64_t>(H) * kChunk,
                "chunk tables have the wrong size (expected (H, M, ", kChunk, ", 2) and (H, ", kChunk, "))");
    k.ctab.staging = pack_chunk_tables(w.data_ptr<float>(), bt.data_ptr<float>(), cf.data_ptr<float>(),
                                       ch.data_ptr<float>(), H, M, NR, f_table(), k.ctab_stride);
    const int groups = (H + L - 1) / L;
    k.cbuf_ = zeros_huge(static_cast<int64_t>(groups) * B_ * 2 * kChunk * L);
    k.cbuf = k.cbuf_.data_ptr<float>();
    k.re_ = state_tensor(re, {B_, H, M}, {static_cast<int64_t>(M) * H, 1, H});
    k.im_ = state_tensor(im, {B_, H, M}, {static_cast<int64_t>(M) * H, 1, H});
    k.re = k.re_.data_ptr<float>();
    k.im = k.im_.data_ptr<float>();
    k.out = make_linear(out_w, out_b, /*glu=*/true, bf16_);
    TORCH_CHECK(k.out.K == H && k.out.N == 2 * H, "S4 output linear must be Linear(H, 2H)");
    groups_of(group).push_back(std::move(k));
  }

  void add_ff(int64_t group, const at::Tensor& ln_w, const at::Tensor& ln_b, double eps, const at::Tensor& w1,
              const c10::optional<at::Tensor>& b1, const at::Tensor& w2, const c10::optional<at::Tensor>& b2) {
    Block k;
    set_norm(k, ln_w, ln_b, eps);
    k.ff_in = make_linear(w1, b1, false, bf16_);
    k.ff_out = make_linear(w2, b2, false, bf16_);
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
        wide = std::max<int64_t>(wide, k.s4 ? k.out.width() : k.ff_in.N);
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
      T.skips_ = zeros_huge(static_cast<int64_t>(T.down.size() + 1) * B_ * H);
      T.res_ = zeros_huge(static_cast<int64_t>(B_) * H);
      T.pooled_ = zeros_huge(static_cast<int64_t>(B_) * H2);
      T.deeper_ = zeros_huge(static_cast<int64_t>(B_) * H2);
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
    u_ = zeros_huge(B_ * SW_);
    t1_ = zeros_huge(B_ * SW_);
    t2_ = zeros_huge(B_ * SW_);
    x0_ = zeros_huge(static_cast<int64_t>(B_) * H0_);
    y0_ = zeros_huge(static_cast<int64_t>(B_) * H0_);
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

  // Bring the SSM state tensors up to the current step: advance each chunked recurrence's x_0 by the inputs
  // buffered since (the next step starts a new chunk from there). Call before reading or writing the states.
  void sync() {
    std::lock_guard<std::mutex> guard(mutex_);
    sync_locked();
  }
  bool get_chunked() const { return chunked_; }
  void set_chunked(bool on) {  // the state is brought up to date and the flag set under one lock
    std::lock_guard<std::mutex> guard(mutex_);
    sync_locked();
    chunked_ = on;
  }

 private:
  void sync_locked() {
    check_ready();
    int maxM = 1;
    for_each_block([&](Block& k) { maxM = std::max(maxM, k.M); });
    std::vector<float> xs(2 * static_cast<int64_t>(maxM) * LH);
    for_each_block([&](Block& k) {
      if (!k.s4) return;
      for (int g = 0, h0 = 0; k.pos > 0 && h0 < k.H; ++g, h0 += L) {
        const float* tab = k.ctab.p + g * k.ctab_stride;
        const int nl = std::min(L, k.H - h0);
        for (int b = 0; b < B_; ++b) {
          const float* ub = k.cbuf + static_cast<int64_t>(g) * 2 * kChunk * B_ * L + b * L;
          for (int o = 0; o < nl; o += LH) {
            const int64_t at = static_cast<int64_t>(b) * k.M * k.H + h0 + o;
            const float* P = tab + kChunk * L + o / LH * chunk_half_stride(k.M, k.R, f_table());
            chunk_state(k.re + at, k.im + at, k.H, k.M, std::min(LH, nl - o), xs.data(), false);
            chunk_run<-1, true, false>(P, k.M, k.R, xs.data(), xs.data() + k.M * LH, LH, ub + o,
                                       static_cast<int64_t>(B_) * L, nullptr, 0, k.pos);
            chunk_state(k.re + at, k.im + at, k.H, k.M, std::min(LH, nl - o), xs.data(), true);
          }
        }
      }
      k.pos = 0;
      k.fvalid = false;
    });
  }

 public:
  int64_t get_threads() const { return threads_; }
  void set_threads(int64_t n) {
    TORCH_CHECK(n >= 1 && n <= 64, "threads must be in 1..64");
    std::lock_guard<std::mutex> guard(mutex_);
    threads_ = static_cast<int>(n);
  }

  int64_t get_rows_from() const { return rows_from_; }
  void set_rows_from(int64_t b) {
    TORCH_CHECK(b >= 1, "rows_from must be >= 1");
    std::lock_guard<std::mutex> guard(mutex_);
    rows_from_ = static_cast<int>(std::min<int64_t>(b, 1 << 30));
  }
  bool get_balance() const { return balance_; }
  void set_balance(bool on) {
    std::lock_guard<std::mutex> guard(mutex_);
    balance_ = on;
    row_split_.clear();  // even shares again from the next step
  }
  std::vector<int64_t> get_row_split() const { return std::vector<int64_t>(row_split_.begin(), row_split_.end()); }
  void set_row_split(const std::vector<int64_t>& split) {  // for tests: shares by hand (balance stays as set)
    std::lock_guard<std::mutex> guard(mutex_);
    const int nt = static_cast<int>(split.size()) - 1;
    TORCH_CHECK(nt == threads_ && split.front() == 0 && split.back() == B_,
                "row_split must be threads + 1 boundaries from 0 to the batch size");
    for (int t = 0; t < nt; ++t) TORCH_CHECK(split[t] <= split[t + 1], "row_split must not decrease");
    even_row_split(nt);
    for (int t = 0; t <= nt; ++t) row_split_[t] = static_cast<int>(split[t]);
  }
  int64_t get_row_levels() const { return row_levels_; }
  void set_row_levels(int64_t n) {
    TORCH_CHECK(n >= 1 && n <= 64, "row_levels must be in 1..64");
    std::lock_guard<std::mutex> guard(mutex_);
    row_levels_ = static_cast<int>(n);
  }

  ~Net() {
    if (team_ && team_->forked()) team_.release();  // see run()
    team_.reset();  // stops and joins the workers (idle: a step holds mutex_ until the team is done with it)
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
  // On more than one thread and for n >= kOwnStateSteps, the SSM states are copied into a private layout for
  // the call and back at its end: lane group by lane group, each in pages of its own. In the shared (B M H)
  // layout every 256-byte row of a state holds channels of both threads, and each core's prefetchers keep
  // pulling in lines the other core is about to write (measured: the recurrence ran 2-2.7x slower per lane
  // group than on separate arrays). A state is consistent again when the call returns.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> steps(const at::Tensor& token, const at::Tensor& u) {
    at::Tensor tok = as_tokens(token), uu = as_uniforms(u, 2);
    const int64_t n = uu.size(0);
    at::Tensor out_tok = at::empty({n, B_}, at::kLong), out_lp = at::empty({n, B_}, at::kFloat);
    at::Tensor logits = at::full({B_, C_}, std::nanf(""), at::kFloat);
    std::lock_guard<std::mutex> guard(mutex_);
    check_ready();
    const bool own = threads_ > 1 && n >= kOwnStateSteps;
    if (own) own_state(true);
    try {
      const int64_t* prev = tok.data_ptr<int64_t>();
      for (int64_t s = 0; s < n; ++s) {
        int64_t* cur = out_tok.data_ptr<int64_t>() + s * B_;
        run(prev, uu.data_ptr<float>() + s * B_, cur, out_lp.data_ptr<float>() + s * B_, logits.data_ptr<float>());
        ++t_;
        prev = cur;
      }
    } catch (...) {  // e.g. no worker thread could be started: the steps done so far stay in the shared state
      if (own) own_state(false);
      throw;
    }
    if (own) own_state(false);
    return {out_tok, out_lp, logits};
  }

  // Teacher forcing: n steps that consume the given tokens (n B) -> the logits of every step (n B C), step s
  // predicting the token after tokens[s]. Nothing is sampled into the output (a prime, or an exact likelihood).
  at::Tensor forced(const at::Tensor& tokens) {
    TORCH_CHECK(tokens.dim() == 2 && tokens.size(1) == B_, "tokens must have shape (n, ", B_, ")");
    const int64_t n = tokens.size(0);
    at::Tensor tok = tokens.to(at::kLong).contiguous();
    at::Tensor u = at::full({B_}, 0.5f, at::kFloat);
    at::Tensor scratch_tok = at::empty({B_}, at::kLong), scratch_lp = at::empty({B_}, at::kFloat);
    at::Tensor logits = at::empty({n, B_, C_}, at::kFloat);
    for (int64_t s = 0; s < n; ++s) as_tokens(tok[s]);  // range checks, before the state changes
    std::lock_guard<std::mutex> guard(mutex_);
    check_ready();
    const bool own = threads_ > 1 && n >= kOwnStateSteps;
    if (own) own_state(true);
    try {
      for (int64_t s = 0; s < n; ++s) {
        run(tok.data_ptr<int64_t>() + s * B_, u.data_ptr<float>(), scratch_tok.data_ptr<int64_t>(),
            scratch_lp.data_ptr<float>(), logits.data_ptr<float>() + s * B_ * C_);
        ++t_;
      }
    } catch (...) {
      if (own) own_state(false);
      throw;
    }
    if (own) own_state(false);
    return logits;
  }

 private:
  int B_, C_, H0_ = 0;
  int threads_ = 1;
  bool unet_, ready_ = false;
  bool chunked_ = true;  // the chunked recurrence (chunk_run, chunk_groups); else ssm_group every step
  int rows_from_ = 8;   // the row split (step_rows) from this batch on, over the outermost row_levels_ levels
  int row_levels_ = 2;  // (defaults: the fastest measured for the sc09 preset, see benchmarks/RESULTS.md)
  // The row split's shares: thread t runs rows [row_split_[t], row_split_[t + 1]) of the outer levels. With
  // balance_, thread 0 moves the boundaries every kBalanceSteps steps so that each thread's row work (its step
  // less the deeper levels, which the team shares by columns) takes as long: on a CPU shared with other work,
  // or a VM whose vCPUs run at different speeds, the faster thread takes more rows instead of waiting at the
  // barriers. Results do not depend on the shares (bit-identical, as for any split).
  static constexpr int kBalanceSteps = 256;
  struct alignas(64) RowClock {
    double row_ns = 0.0, deeper_ns = 0.0;  // this window's row work; this step's deeper levels
  };
  bool balance_ = true;
  std::vector<int> row_split_;
  std::vector<RowClock> row_clock_;
  int balance_steps_ = 0;
  std::vector<Block*> deferred_;  // row split: the blocks whose chunk positions advance at the end of the step
  bool f_table() const { return B_ >= kFreeTableBatch; }  // the chunks' f from the table F (else free steps)
  bool bf16_ = false;  // Linear weights as bfloat16 (gemm.h)
  int64_t t_ = 0;
  Settings settings_;
  at::Tensor emb_;
  at::Tensor cond_;  // (B, H) label vectors of a conditional model; undefined for an unconditional one
  const float* emb_p_ = nullptr;  // emb_'s and cond_'s data, read once per row and step (no checks there)
  const float* cond_p_ = nullptr;
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
  std::mutex mutex_;               // one step at a time
  struct Job {                     // the arguments of the step being run, for every thread of the team
    const int64_t* token;
    const float* u;
    int64_t* out_tok;
    float* out_lp;
    float* logits;
    int64_t tau;
  } job_{};
  std::vector<at::Tensor> scratch_;  // threads 1..: their u and t2 (B SW_ each)
  std::vector<at::Tensor> chunk_scratch_;  // per thread: Ctx::xs
  at::Tensor own_state_;             // the private SSM states (see steps())
  bool own_active_ = false;
  std::unique_ptr<Team> team_;     // started by the first step on more than one thread

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
      arena_.place(k.ctab);
      place_linear(k.out);
    } else {
      place_linear(k.ff_in);
      place_linear(k.ff_out);
    }
  }

  // In the order of a step where every tier runs (as run_tier).
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
  // On threads_ threads (thread 0: the caller), set by native.py (threads= or its default).
  void run(const int64_t* token, const float* u, int64_t* out_tok, float* out_lp, float* logits) {
    job_ = Job{token, u, out_tok, out_lp, logits, t_};
    if (threads_ <= 1) {
      step_share(Ctx{0, 1, u_p_, t2_p_, nullptr, chunk_scratch(0), 0, B_});
      return;
    }
    if (team_ && team_->forked()) team_.release();  // its workers live in the parent process: leak it
    if (!team_ || team_->size() != threads_) start_team(threads_);
    if (static_cast<int>(row_split_.size()) != threads_ + 1) even_row_split(threads_);
    team_->run();
  }

  // Thread tid's chunk scratch (Ctx::xs), allocated on first use.
  float* chunk_scratch(int tid) {
    if (static_cast<int>(chunk_scratch_.size()) <= tid) chunk_scratch_.resize(tid + 1);
    if (!chunk_scratch_[tid].defined()) {
      int M = 1;
      for_each_block([&](Block& k) { M = std::max(M, k.M); });
      chunk_scratch_[tid] = zeros_huge(static_cast<int64_t>(B_) * 2 * M * LH);
    }
    return chunk_scratch_[tid].data_ptr<float>();
  }

  // Copy every SSM state into its private layout (load) or back (on thread 0, the team idle: after a step the
  // workers touch no state).
  void own_state(bool load) {
    if (!own_state_.defined()) {  // allocated on first use: lane group regions page-aligned
      int64_t total = 0;
      for_each_block([&](Block& k) {
        if (!k.s4) return;
        k.own_im = static_cast<int64_t>(B_) * k.M * L + 96;
        k.own_stride = (2 * k.own_im + 1023) / 1024 * 1024;
        total += k.own_stride * ((k.H + L - 1) / L);
      });
      own_state_ = zeros_huge(std::max<int64_t>(total, 1));
      float* p = own_state_.data_ptr<float>();
      for_each_block([&](Block& k) {
        if (!k.s4) return;
        k.own = p;
        p += k.own_stride * ((k.H + L - 1) / L);
      });
    }
    for_each_block([&](Block& k) {
      if (!k.s4) return;
      const int H = k.H, M = k.M;
      for (int g = 0, h0 = 0; h0 < H; ++g, h0 += L) {
        const int nl = std::min(L, H - h0);
        float* re = k.own + g * k.own_stride;
        float* im = re + k.own_im;
        for (int64_t row = 0; row < static_cast<int64_t>(B_) * M; ++row) {  // row = b M + m
          float* sre = k.re + row * H + h0;
          float* sim = k.im + row * H + h0;
          if (load) {
            std::memcpy(re + row * L, sre, sizeof(float) * nl);
            std::memcpy(im + row * L, sim, sizeof(float) * nl);
          } else {
            std::memcpy(sre, re + row * L, sizeof(float) * nl);
            std::memcpy(sim, im + row * L, sizeof(float) * nl);
          }
        }
      }
    });
    own_active_ = load;
  }

  template <typename F>
  void for_each_block(F&& f) {
    for (Tier& T : tiers_) {
      for (Block& k : T.down) f(k);
      for (Block& k : T.up) f(k);
    }
    for (Block& k : center_) f(k);
  }

  void start_team(int n) {
    team_.reset();
    while (static_cast<int>(scratch_.size()) < n) scratch_.push_back(zeros_huge(2 * B_ * SW_));
    for (int tid = 0; tid < n; ++tid) chunk_scratch(tid);
    team_.reset(new Team(n, [this, n](Team& team, int tid) {
      float* own = scratch_[tid].data_ptr<float>();
      float* xs = chunk_scratch_[tid].data_ptr<float>();
      step_share(tid == 0 ? Ctx{0, n, u_p_, t2_p_, &team, xs, 0, B_}
                          : Ctx{tid, n, own, own + B_ * SW_, &team, xs, 0, B_});
    }));
  }

  // x0 row b, columns [h0, h1): the embedding of token[b], plus the label vector of sequence b if any.
  void embed(const Job& job, int b, int h0, int h1) {
    const int H = H0_;
    float* x = x0_p_ + static_cast<int64_t>(b) * H;
    std::memcpy(x + h0, emb_p_ + job.token[b] * H + h0, sizeof(float) * (h1 - h0));
    if (cond_p_ == nullptr) return;
    const float* v = cond_p_ + static_cast<int64_t>(b) * H;
    for (int h = h0; h < h1; ++h) x[h] += v[h];
  }

  static void barrier(const Ctx& c) {
    if (c.nt > 1) c.team->barrier(c.tid);
  }

  // One thread's share of the step: embedding, tiers, final norm, head; sampling is split by rows.
  void step_share(const Ctx& c) {
    if (c.nt > 1 && B_ >= rows_from_) {
      step_rows(c);
      return;
    }
    const Job& job = job_;
    const int H = H0_;
    int h0, h1;
    columns(H, c, h0, h1);
    for (int b = 0; b < B_; ++b) embed(job, b, h0, h1);
    run_tier(0, x0_p_, y0_p_, job.tau, c);
    barrier(c);
    layer_norm(y0_p_, H, c.u, SW_, B_, H, norm_w_.p, norm_b_.p, norm_eps_);
    gemm(head_, c.u, SW_, job.logits, C_, false, c);
    barrier(c);
    // rows: thread 0 takes the last part, so that at batch 1 it samples and no final barrier is needed
    const Ctx rev{c.nt - 1 - c.tid, c.nt, nullptr, nullptr, nullptr};
    int b0, b1;
    part(B_, rev, b0, b1);
    for (int b = b0; b < b1; ++b)
      sample_row(settings_, C_, job.logits + static_cast<int64_t>(b) * C_, job.u[b], job.out_tok + b, job.out_lp + b,
                 t1_p_ + b * SW_, order_.data() + static_cast<int64_t>(b) * 4 * C_);
    if (B_ > 1) barrier(c);
  }

  // The step with the outermost level split by rows (B >= rows_from_): this thread runs all of it for its rows,
  // alone, from the embedding to the sampled token; the team meets only where a deeper tier runs (see run_tier)
  // and once at the end. Its chunk positions advance after that barrier (no thread reads them any more).
  void step_rows(const Ctx& c) {
    const auto start = std::chrono::steady_clock::now();
    const Job& job = job_;
    const int H = H0_;
    Ctx r = c;
    r.tid = 0;
    r.nt = 1;
    r.team_ctx = &c;
    r.b0 = row_split_[c.tid];
    r.b1 = row_split_[c.tid + 1];
    const int rows = r.b1 - r.b0;
    for (int b = r.b0; b < r.b1; ++b) embed(job, b, 0, H);
    run_tier(0, x0_p_, y0_p_, job.tau, r);
    layer_norm(y0_p_ + r.b0 * H, H, r.u + r.b0 * SW_, SW_, rows, H, norm_w_.p, norm_b_.p, norm_eps_);
    gemm(head_, r.u, SW_, job.logits, C_, false, r);
    for (int b = r.b0; b < r.b1; ++b)
      sample_row(settings_, C_, job.logits + static_cast<int64_t>(b) * C_, job.u[b], job.out_tok + b, job.out_lp + b,
                 t1_p_ + b * SW_, order_.data() + static_cast<int64_t>(b) * 4 * C_);
    RowClock& clock = row_clock_[c.tid];
    clock.row_ns += elapsed_ns(start) - clock.deeper_ns;
    clock.deeper_ns = 0.0;
    barrier(c);
    if (c.tid == 0) {
      for (Block* k : deferred_) advance_pos(*k, chunk_mode(*k));
      deferred_.clear();
      if (++balance_steps_ == kBalanceSteps) rebalance_rows();
    }
  }

  static double elapsed_ns(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - since).count();
  }

  void even_row_split(int nt) {
    row_split_.resize(nt + 1);
    for (int t = 0; t <= nt; ++t) row_split_[t] = static_cast<int>(static_cast<int64_t>(B_) * t / nt);
    row_clock_.assign(nt, RowClock{});
    balance_steps_ = 0;
  }

  // After kBalanceSteps steps (thread 0, between steps): shares in proportion to each thread's speed on its
  // rows over the window, at least one row each, if that makes the slowest share at least 3% faster.
  void rebalance_rows() {
    const int nt = static_cast<int>(row_split_.size()) - 1;
    std::vector<double> ns_per_row(nt);
    double speed = 0.0, slowest = 0.0;
    bool measured = true;
    for (int t = 0; t < nt; ++t) {
      const int rows = row_split_[t + 1] - row_split_[t];
      ns_per_row[t] = rows > 0 ? row_clock_[t].row_ns / rows : 0.0;
      measured = measured && ns_per_row[t] > 0.0;
      speed += measured ? 1.0 / ns_per_row[t] : 0.0;
      slowest = std::max(slowest, row_clock_[t].row_ns);
      row_clock_[t].row_ns = 0.0;
    }
    balance_steps_ = 0;
    if (!balance_ || !measured || B_ < nt) return;
    std::vector<int> next(nt + 1, B_);
    next[0] = 0;
    double share = 0.0;
    for (int t = 0; t + 1 < nt; ++t) {
      share += B_ / ns_per_row[t] / speed;
      next[t + 1] = std::min(std::max(static_cast<int>(std::lround(share)), next[t] + 1), B_ - (nt - 1 - t));
    }
    double predicted = 0.0;
    for (int t = 0; t < nt; ++t) predicted = std::max(predicted, (next[t + 1] - next[t]) * ns_per_row[t]);
    if (predicted < 0.97 * slowest) row_split_ = next;
  }

  // Tier i at its own step tau: x (B H_i) -> out (B H_i). As FastLM._tier. Elementwise work on this thread's
  // columns [h0, h1); a barrier wherever the next stage reads what other threads wrote.
  void run_tier(size_t i, const float* x, float* out, int64_t tau, const Ctx& c) {
    if (i == tiers_.size()) {
      int h0, h1;
      columns(Hc_, c, h0, h1);
      for_columns(Hc_, h0, h1, c, [&](int64_t e) { out[e] = x[e]; });
      for (Block& k : center_) run_block(k, out, c);
      if (!center_.empty()) barrier(c);
      for_columns(Hc_, h0, h1, c, [&](int64_t e) { out[e] += x[e]; });
      return;
    }
    Tier& T = tiers_[i];
    const int H = T.H, p = T.p;
    const int64_t BH = static_cast<int64_t>(B_) * H;
    int h0, h1;
    columns(H, c, h0, h1);
    float* skips = T.skips;  // skips[j]: the tier input after j down blocks
    for_columns(H, h0, h1, c, [&](int64_t e) { skips[e] = x[e]; });
    float* cur = skips;
    for (size_t j = 0; j < T.down.size(); ++j) {
      float* next = skips + static_cast<int64_t>(j + 1) * BH;
      if (j > 0) barrier(c);  // cur was written by the threads that own the previous block's output panels
      for_columns(H, h0, h1, c, [&](int64_t e) { next[e] = cur[e]; });
      run_block(T.down[j], next, c);
      cur = next;
    }
    if (!T.down.empty()) barrier(c);
    // push cur into the down register; y = the oldest output still due + skip
    float* y = out;
    for_columns(H, h0, h1, c, [&](int64_t e) {
      float* d = T.dreg + e * p;
      for (int s = 0; s + 1 < p; ++s) d[s] = d[s + 1];
      d[p - 1] = cur[e];
      y[e] = T.ureg[e * p] + cur[e];
    });
    if (tau % p == p - 1) {  // pool full: run the deeper tier, refill the outputs of the next p steps
      const int H2 = T.down_linear.N;
      const bool split = c.team_ctx && static_cast<int>(i) + 1 >= row_levels_;
      const Ctx& d = split ? *c.team_ctx : c;  // the deeper tiers: split by columns on the whole team
      const int64_t Hp = static_cast<int64_t>(H) * p;
      const auto start = std::chrono::steady_clock::now();
      barrier(d);
      gemm(T.down_linear, T.dreg, Hp, T.pooled, H2, false, d);
      barrier(d);
      run_tier(i + 1, T.pooled, T.deeper, tau / p, d);
      barrier(d);
      // ureg is next read at the next step, after this step's later barriers
      gemm(T.up_linear, T.deeper, H2, T.ureg, Hp, false, d);
      if (split) row_clock_[d.tid].deeper_ns += elapsed_ns(start);
    } else {
      for_columns(H, h0, h1, c, [&](int64_t e) {
        float* r = T.ureg + e * p;
        for (int s = 0; s + 1 < p; ++s) r[s] = r[s + 1];
        r[p - 1] = 0.0f;
      });
    }
    if (unet_) {
      for (size_t j = 0; j < T.up.size(); ++j) {
        run_block(T.up[j], y, c);
        barrier(c);
        const float* skip = skips + static_cast<int64_t>(T.down.size() - 1 - j) * BH;
        for_columns(H, h0, h1, c, [&](int64_t e) { y[e] += skip[e]; });
      }
      return;
    }
    float* res = T.res;
    for_columns(H, h0, h1, c, [&](int64_t e) { res[e] = y[e]; });
    for (Block& k : T.up) run_block(k, y, c);
    if (!T.up.empty()) barrier(c);
    for_columns(H, h0, h1, c, [&](int64_t e) { y[e] += res[e]; });
  }

  // f(e) for the elements e = b H + h of this share's rows b, columns h in [h0, h1).
  template <typename F>
  void for_columns(int H, int h0, int h1, const Ctx& c, F&& f) const {
    for (int b = c.b0; b < c.b1; ++b) {
      const int64_t row = static_cast<int64_t>(b) * H;
      for (int64_t e = row + h0; e < row + h1; ++e) f(e);
    }
  }

  // The recurrence on lane groups [g0, g1), rows [b0, b1): u (B SW) -> z (B SW).
  template <int R>
  void ssm_groups(const Block& k, int g0, int g1, int b0, int b1, const float* u, float* z) {
    const int H = k.H, M = k.M;
    const bool own = own_active_;
    const int64_t sb = static_cast<int64_t>(M) * (own ? L : H), sm = own ? L : H;
    for (int g = g0; g < g1; ++g) {
      const int h0 = g * L;
      const float* wg = k.ssm.p + g * k.group_stride;
      const int nl = std::min(L, H - h0);
      float* re = (own ? k.own + g * k.own_stride : k.re + h0) + b0 * sb;
      float* im = (own ? k.own + g * k.own_stride + k.own_im : k.im + h0) + b0 * sb;
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

  // The chunked recurrence on lane groups [g0, g1), rows [b0, b1): u (B SW) -> z (B SW). mode 0: a step
  // within the chunk; 1: compute f first (a new x_0); 2: the chunk is full: advance x_0 and compute f first.
  // With the table F and whole 16-lane halves, x_0 advances in place in the state (no copy to the scratch and
  // back: +6% samples/s at batch 16); otherwise a row's half goes through the scratch xs (the free response
  // runs on a copy, partial halves are padded).
  template <int R>
  void chunk_groups(const Block& k, int g0, int g1, int b0, int b1, const float* u, float* z, int mode, float* xs) {
    const int H = k.H, M = k.M;
    const bool own = own_active_, table = f_table();
    const int64_t sb = static_cast<int64_t>(M) * (own ? L : H), sm = own ? L : H;
    const int p = mode == 2 ? 0 : k.pos;
    const int64_t BL = static_cast<int64_t>(B_) * L, xstride = 2 * static_cast<int64_t>(M) * LH;
    for (int g = g0; g < g1; ++g) {
      const int h0 = g * L;
      const int nl = std::min(L, H - h0);
      const float* tab = k.ctab.p + g * k.ctab_stride;
      float* re = own ? k.own + g * k.own_stride : k.re + h0;
      float* im = own ? k.own + g * k.own_stride + k.own_im : k.im + h0;
      float* ub = k.cbuf + g * 2 * kChunk * BL;  // (T B L)
      float* fb = ub + kChunk * BL;               // (T B L)
      for (int o = 0; mode > 0 && o < nl; o += LH) {  // each half: advance x_0, then the next chunk's f
        const int nh = std::min(LH, nl - o);
        const float* P = tab + kChunk * L + o / LH * chunk_half_stride(M, k.R, table);
        if (table && nh == LH) {  // in place: the state's layout has whole halves at mode stride sm
          for (int b = b0; mode == 2 && b < b1; ++b) {
            if (b + 1 < b1) prefetch_state(re + (b + 1) * sb + o, im + (b + 1) * sb + o, sm, M);
            chunk_run<R, true, false>(P, M, k.R, re + b * sb + o, im + b * sb + o, sm, ub + b * L + o, BL, nullptr,
                                      0, kChunk);
          }
          chunk_table(P + chunk_param_floats(M, k.R), M, re + b0 * sb + o, im + b0 * sb + o, sb, sm, b1 - b0,
                      fb + b0 * L + o, BL);
          continue;
        }
        for (int b = b0; b < b1; ++b) {
          float* x = xs + (table ? (b - b0) * xstride : 0);
          if (b + 1 < b1) prefetch_state(re + (b + 1) * sb + o, im + (b + 1) * sb + o, sm, M);
          chunk_state(re + b * sb + o, im + b * sb + o, sm, M, nh, x, false);
          if (mode == 2) {
            chunk_run<R, true, false>(P, M, k.R, x, x + M * LH, LH, ub + b * L + o, BL, nullptr, 0, kChunk);
            chunk_state(re + b * sb + o, im + b * sb + o, sm, M, nh, x, true);
          }
          if (!table)
            chunk_run<R, false, true>(P, M, k.R, x, x + M * LH, LH, nullptr, 0, fb + b * L + o, BL, kChunk);
        }
        if (table)
          chunk_table(P + chunk_param_floats(M, k.R), M, xs, xs + M * LH, xstride, LH, b1 - b0, fb + b0 * L + o, BL);
      }
      chunk_out(tab, p, nl, B_, b0, b1, ub, fb, u + h0, z + h0, SW_);
    }
  }

  // -1: the per-step recurrence; 0: a step within the chunk; 1: compute f first; 2: advance x_0, then f.
  int chunk_mode(const Block& k) const { return !chunked_ ? -1 : k.pos == kChunk ? 2 : k.fvalid ? 0 : 1; }
  static void advance_pos(Block& k, int mode) {
    if (mode < 0) return;
    if (mode == 2) k.pos = 0;
    k.fvalid = true;
    ++k.pos;
  }

  // x (B H) <- block(x): x + GLU(Linear(GELU(SSM(LN x) + D LN x))) for S4, x + Linear(GELU(Linear(LN x))) for
  // FF. Every thread normalises all of x into its own c.u; then this thread's lane groups / panels. Scratch
  // rows have the fixed stride SW_.
  void run_block(Block& k, float* x, const Ctx& c) {
    const int H = k.H;
    barrier(c);  // x is complete
    const int rows = c.b1 - c.b0;
    layer_norm(x + c.b0 * H, H, c.u + c.b0 * SW_, SW_, rows, H, k.ln_w.p, k.ln_b.p, k.eps);
    if (k.s4) {
      // this thread's lane groups, or at batch >= nt on the shared state its rows (each row's state is a
      // region of its own there; lane groups interleave, see steps())
      const bool by_rows = c.nt > 1 && !own_active_ && B_ >= c.nt;
      int g0 = 0, g1 = (H + L - 1) / L, b0 = c.b0, b1 = c.b1;
      if (by_rows)
        part(B_, c, b0, b1);
      else
        part(g1, c, g0, g1);
      // all threads read k.pos / k.fvalid before the barrier below; thread 0 updates them after it (after the
      // step's last barrier in a row split: see step_rows)
      const int mode = chunk_mode(k);
      if (mode >= 0) {
        switch (k.R) {
          case 0: chunk_groups<0>(k, g0, g1, b0, b1, c.u, t1_p_, mode, c.xs); break;
          case 1: chunk_groups<1>(k, g0, g1, b0, b1, c.u, t1_p_, mode, c.xs); break;
          default: chunk_groups<-1>(k, g0, g1, b0, b1, c.u, t1_p_, mode, c.xs); break;
        }
      } else {
        switch (k.R) {
          case 0: ssm_groups<0>(k, g0, g1, b0, b1, c.u, t1_p_); break;
          case 1: ssm_groups<1>(k, g0, g1, b0, b1, c.u, t1_p_); break;
          default: ssm_groups<-1>(k, g0, g1, b0, b1, c.u, t1_p_); break;
        }
      }
      const int c0 = std::min(H, g0 * L), c1 = std::min(H, g1 * L);
      for (int r = b0; r < b1; ++r) gelu_inplace(t1_p_ + r * SW_ + c0, c1 - c0);
      barrier(c);
      if (c.team_ctx) {
        if (c.team_ctx->tid == 0) deferred_.push_back(&k);
      } else if (c.tid == 0) {
        advance_pos(k, mode);
      }
      gemm(k.out, t1_p_, SW_, c.t2, SW_, false, c);
      int p0, p1;
      part(k.out.panels, c, p0, p1);
      const int nb = k.out.nb, w = nb / 2;
      for (int r = c.b0; r < c.b1; ++r) {
        for (int pn = p0; pn < p1; ++pn) {
          const int n = std::min(w, H - pn * w);
          float* __restrict xr = x + static_cast<int64_t>(r) * H + pn * w;
          const float* __restrict gr = c.t2 + r * SW_ + pn * nb;
#pragma omp simd
          for (int h = 0; h < n; ++h) xr[h] += gr[h] * sigmoid_f(gr[w + h]);
        }
      }
    } else {
      const int F = k.ff_in.N;
      gemm(k.ff_in, c.u, SW_, t1_p_, SW_, false, c);
      int p0, p1;
      part(k.ff_in.panels, c, p0, p1);
      const int c0 = std::min(F, p0 * k.ff_in.nb), c1 = std::min(F, p1 * k.ff_in.nb);
      for (int r = c.b0; r < c.b1; ++r) gelu_inplace(t1_p_ + r * SW_ + c0, c1 - c0);
      barrier(c);
      gemm(k.ff_out, t1_p_, SW_, x, H, true, c);
    }
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
  m.attr("chunk") = kChunk;
  m.def("isa", [] { return std::string(kIsa); }, "the vector unit the kernels were built for (simd.h)");
  m.def("zeros", &zeros_huge, "n zeroed float32, 64-byte aligned, on huge pages from 1 MB up where possible");
  py::class_<Net>(m, "Net")
      .def(py::init<int64_t, int64_t, std::vector<int64_t>, bool, double, double, int64_t, bool>(), py::arg("batch"),
           py::arg("n_classes"), py::arg("pool"), py::arg("unet"), py::arg("temperature"), py::arg("top_p"),
           py::arg("top_k"), py::arg("bf16") = false)
      .def("set_io", &Net::set_io)
      .def("set_cond", &Net::set_cond)
      .def("set_tier", &Net::set_tier)
      .def("add_s4", &Net::add_s4)
      .def("add_ff", &Net::add_ff)
      .def("finalize", &Net::finalize)
      .def_property("t", &Net::get_t, &Net::set_t)
      .def_property_readonly("weight_bytes", &Net::weight_bytes)
      .def_property("threads", &Net::get_threads, &Net::set_threads)
      .def_property("chunked", &Net::get_chunked, &Net::set_chunked)
      .def_property("rows_from", &Net::get_rows_from, &Net::set_rows_from)
      .def_property("row_levels", &Net::get_row_levels, &Net::set_row_levels)
      .def_property("balance", &Net::get_balance, &Net::set_balance)
      .def_property("row_split", &Net::get_row_split, &Net::set_row_split)
      .def("sync", &Net::sync, py::call_guard<py::gil_scoped_release>())
      .def("step", &Net::step, py::call_guard<py::gil_scoped_release>())
      .def("steps", &Net::steps, py::call_guard<py::gil_scoped_release>())
      .def("forced", &Net::forced, py::call_guard<py::gil_scoped_release>());
}
