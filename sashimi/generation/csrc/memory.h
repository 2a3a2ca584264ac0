// Aligned, huge-page backed buffers and the weight arena (one buffer in the order a step reads).
// Part of the native generation step: fast_step.cpp includes it (one translation unit).
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

// n zeroed floats, 4 KB aligned; from 1 MB up on 2 MB transparent huge pages where the OS has them. A step
// streams megabytes of weights and state: 4 KB pages cost a TLB miss every 4 KB (measured: the weight arena on
// huge pages is 5-7% faster at batch 1, the state 4% at batch 16). Page alignment: the 32-column slices that
// different threads write start on 128-byte boundaries (the L2 prefetcher fetches pairs of 64-byte lines).
static at::Tensor zeros_huge(int64_t n) {
  constexpr size_t huge = size_t{2} << 20, page = 4096;
  const size_t want = std::max<size_t>(static_cast<size_t>(n) * 4, 1);
  const size_t align = want >= huge / 2 ? huge : page;
  const size_t bytes = (want + align - 1) / align * align;
  void* mem = nullptr;
  if (posix_memalign(&mem, align, bytes) != 0) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == huge) madvise(mem, bytes, MADV_HUGEPAGE);  // advice only: failure leaves ordinary pages
#endif
  std::memset(mem, 0, bytes);
  return at::from_blob(mem, {n}, [](void* q) { std::free(q); }, at::kFloat);
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

}  // namespace
