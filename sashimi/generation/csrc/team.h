// The team of threads of a multi-threaded step (persistent workers and their barrier).
// Part of the native generation step: fast_step.cpp includes it (one translation unit).
#pragma once

#include <torch/extension.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__unix__)
#include <pthread.h>
#endif

namespace {

// ----------------------------------------------------------------------------------------------------------
// The team of a multi-threaded step: nt - 1 persistent workers (std::thread; torch's thread pool is left
// alone), started with the first step that asks for nt threads and stopped when the Net is destroyed.
// post() starts one step on every worker (a generation counter); an idle worker spins on it for up to
// kIdleSpin, then sleeps on a condition variable, so it does not hold a core between calls. Within a step the
// team meets at barrier(): each thread publishes how many barriers it has reached (its own cache line) and
// waits until every other thread has reached as many. On the 2-core machine of benchmarks/RESULTS.md this
// costs ~0.13 us, a third or less of a shared counter with a sense flag (0.4-1.1 us: the counter line and
// the flag line each make a round trip).

struct alignas(64) Flag {
  std::atomic<uint64_t> v{0};
};

static inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Bumped in a child process after fork(): a team's workers exist only in the process that started them.
static std::atomic<uint64_t> g_forks{0};

class Team {
 public:
  Team(int n, std::function<void(Team&, int)> body) : n_(n), body_(std::move(body)), arrived_(new Flag[n]) {
    static std::once_flag once;
    std::call_once(once, [] {
#if defined(__unix__)
      pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1); });
#endif
    });
    forks_ = g_forks.load();
    try {
      for (int t = 1; t < n; ++t) workers_.emplace_back([this, t] { work(t); });
    } catch (...) {  // could not start a thread: stop the others
      stop();
      throw;
    }
  }
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;
  ~Team() { stop(); }

  int size() const { return n_; }
  bool forked() const { return forks_ != g_forks.load(); }

  // On thread 0 (the caller): run one step on the team; returns when thread 0's share is done.
  void run() {
    post();
    body_(*this, 0);
  }

  void barrier(int tid) {
    const uint64_t e = arrived_[tid].v.load(std::memory_order_relaxed) + 1;
    arrived_[tid].v.store(e, std::memory_order_release);
    for (int o = 0; o < n_; ++o) {
      if (o == tid) continue;
      for (int spin = 1; arrived_[o].v.load(std::memory_order_acquire) < e; ++spin) {
        cpu_relax();
        if (spin % 4096 == 0) std::this_thread::yield();  // more threads than free cores
      }
    }
  }

 private:
  static constexpr std::chrono::microseconds kIdleSpin{500};

  void stop() {
    stop_.store(true);
    post();
    for (std::thread& w : workers_) w.join();
  }

  void post() {
    gen_.fetch_add(1);  // sequentially consistent, as the load of sleepers_ and the waits below
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
  }

  void work(int tid) {
    uint64_t seen = 0;  // no step is posted before the constructor returns
    for (;;) {
      seen = wait_past(seen);
      if (stop_.load()) return;
      body_(*this, tid);
    }
  }

  // The generation after `seen`: spin, then sleep.
  uint64_t wait_past(uint64_t seen) {
    const auto until = std::chrono::steady_clock::now() + kIdleSpin;
    for (int spin = 1;; ++spin) {
      const uint64_t g = gen_.load(std::memory_order_acquire);
      if (g != seen) return g;
      cpu_relax();
      if (spin % 256 == 0 && std::chrono::steady_clock::now() > until) break;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    sleepers_.fetch_add(1);  // post() either sees this or its step is seen below
    uint64_t g;
    while ((g = gen_.load()) == seen) wake_.wait(lock);
    sleepers_.fetch_sub(1);
    return g;
  }

  const int n_;
  std::function<void(Team&, int)> body_;
  std::unique_ptr<Flag[]> arrived_;  // barriers reached, per thread
  alignas(64) std::atomic<uint64_t> gen_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  uint64_t forks_ = 0;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
};


}  // namespace
