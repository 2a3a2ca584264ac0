// A thread's share of a step (Ctx) and how work is split into shares.
// Part of the native generation step: fast_step.cpp includes it (one translation unit).
#pragma once

#include <cstdint>

#include "math.h"

namespace {

// ----------------------------------------------------------------------------------------------------------
// Threads. A step runs on a team of nt threads (the caller's thread is thread 0; the others are the team's
// persistent workers, see Team below). Every thread walks the same sequence of stages and owns a fixed slice of
// each: the output panels of every Linear, the lane groups of every recurrence, a range of columns of every
// elementwise op (all rows of the batch: a column split, so that each thread streams only its share of the
// weights and of the SSM state). Between dependent stages the team meets at a barrier. With nt = 1 the barriers
// are no-ops and the slices are everything, so the one-thread step is the same code. Each output element is
// computed by one thread with the same operations in the same order whatever nt is: the results do not depend
// on the number of threads, bit for bit.

struct Team;

struct Ctx {
  int tid = 0, nt = 1;
  float* u = nullptr;   // this thread's LayerNorm output (B rows of stride SW): every thread normalises the
                        // whole row itself, which costs less than a barrier
  float* t2 = nullptr;  // this thread's output panels of the S4 output Linear (B rows of stride SW)
  Team* team = nullptr;
  float* xs = nullptr;  // this thread's chunk scratch: B rows of 2 M LH floats (M: the most modes of a layer)
  int b0 = 0, b1 = 0;   // the rows of the batch this share covers
  // Row split (Net::rows_from): the share of the outer levels, all columns of rows [b0, b1) on one thread
  // (nt = 1, no barriers); team_ctx is then the whole team's context, for the deeper levels.
  const Ctx* team_ctx = nullptr;
};

// Part t of n parts of [0, count): the ranges of consecutive threads are adjacent.
static inline void part(int count, const Ctx& c, int& begin, int& end) {
  begin = static_cast<int>(static_cast<int64_t>(count) * c.tid / c.nt);
  end = static_cast<int>(static_cast<int64_t>(count) * (c.tid + 1) / c.nt);
}

// This thread's columns of an elementwise op over rows of width H: whole 32-float (128-byte) units.
static inline void columns(int H, const Ctx& c, int& begin, int& end) {
  int u0, u1;
  part((H + 31) / 32, c, u0, u1);
  begin = std::min(H, 32 * u0);
  end = std::min(H, 32 * u1);
}


}  // namespace
