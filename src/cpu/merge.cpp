// CPU merge and concatenate kernels (ops/merge.h has the math and the rules).
// Elementwise merges run in tiles of kTile elements: the output tile starts as
// x_0 and each further input is folded into it by one vectorizable loop, so
// the tile stays in L1 while the k inputs stream through, and every element
// still sees its inputs in the order 0 .. k-1 (the bits do not depend on the
// tiling, the chunking or the thread count).
#include "ops/merge.h"
#include <algorithm>
#include <cstring>
#include "cpu/parallel.h"

namespace deepcore {
namespace {

constexpr index_t kTile = 1024;  // elements

// y[0, m) = op(x_i[0, m)), the tile of elements starting at b.
DC_MULTIVERSION void merge_forward_tile(MergeOp op, const float* const* xs, int k, float* y, index_t b,
                                        index_t m) {
  float* yt = y + b;
  if (yt != xs[0] + b) std::memcpy(yt, xs[0] + b, size_t(m) * sizeof(float));
  switch (op) {
    case MergeOp::Add:
    case MergeOp::Average:
      for (int i = 1; i < k; ++i) {
        const float* x = xs[i] + b;
        for (index_t j = 0; j < m; ++j) yt[j] += x[j];
      }
      if (op == MergeOp::Average) {
        const float kf = float(k);
        for (index_t j = 0; j < m; ++j) yt[j] /= kf;
      }
      break;
    case MergeOp::Subtract: {
      const float* x = xs[1] + b;
      for (index_t j = 0; j < m; ++j) yt[j] -= x[j];
      break;
    }
    case MergeOp::Multiply:
      for (int i = 1; i < k; ++i) {
        const float* x = xs[i] + b;
        for (index_t j = 0; j < m; ++j) yt[j] *= x[j];
      }
      break;
    case MergeOp::Maximum:
    case MergeOp::Minimum: {
      const bool is_max = op == MergeOp::Maximum;
      for (int i = 1; i < k; ++i) {
        const float* x = xs[i] + b;
        for (index_t j = 0; j < m; ++j) yt[j] = merge_takes(is_max, yt[j], x[j]) ? x[j] : yt[j];
      }
      break;
    }
  }
}

DC_MULTIVERSION void merge_backward_tile(MergeOp op, const float* const* xs, int k, const float* dy,
                                         float* const* dxs, index_t b, index_t m) {
  const float* g = dy + b;
  switch (op) {
    case MergeOp::Add:
      for (int i = 0; i < k; ++i)
        if (dxs[i]) std::memcpy(dxs[i] + b, g, size_t(m) * sizeof(float));
      break;
    case MergeOp::Subtract:
      if (dxs[0]) std::memcpy(dxs[0] + b, g, size_t(m) * sizeof(float));
      if (dxs[1]) {
        float* d = dxs[1] + b;
        for (index_t j = 0; j < m; ++j) d[j] = -g[j];
      }
      break;
    case MergeOp::Average: {
      const float kf = float(k);
      for (int i = 0; i < k; ++i) {
        if (!dxs[i]) continue;
        float* d = dxs[i] + b;
        for (index_t j = 0; j < m; ++j) d[j] = g[j] / kf;
      }
      break;
    }
    case MergeOp::Multiply: {
      // dx_i = (x_0 ... x_{i-1}) * (dy x_{k-1} ... x_{i+1}): the prefix
      // products go into the dx_i first, then the suffix sweep multiplies
      // them in. acc carries the running product of the tile.
      float acc[kTile];
      std::fill(acc, acc + m, 1.0f);
      for (int i = 0; i < k - 1; ++i) {
        const float* x = xs[i] + b;
        if (dxs[i]) std::memcpy(dxs[i] + b, acc, size_t(m) * sizeof(float));
        for (index_t j = 0; j < m; ++j) acc[j] *= x[j];
      }
      if (dxs[k - 1]) std::memcpy(dxs[k - 1] + b, acc, size_t(m) * sizeof(float));
      std::memcpy(acc, g, size_t(m) * sizeof(float));
      for (int i = k - 1; i >= 0; --i) {
        if (dxs[i]) {
          float* d = dxs[i] + b;
          for (index_t j = 0; j < m; ++j) d[j] *= acc[j];
        }
        if (i > 0) {
          const float* x = xs[i] + b;
          for (index_t j = 0; j < m; ++j) acc[j] *= x[j];
        }
      }
      break;
    }
    case MergeOp::Maximum:
    case MergeOp::Minimum: {
      // The winner of each element, by the forward's rule (merge_takes).
      const bool is_max = op == MergeOp::Maximum;
      float best[kTile];
      int32_t win[kTile];
      std::memcpy(best, xs[0] + b, size_t(m) * sizeof(float));
      std::fill(win, win + m, 0);
      for (int i = 1; i < k; ++i) {
        const float* x = xs[i] + b;
        for (index_t j = 0; j < m; ++j) {
          const bool take = merge_takes(is_max, best[j], x[j]);
          best[j] = take ? x[j] : best[j];
          win[j] = take ? i : win[j];
        }
      }
      for (int i = 0; i < k; ++i) {
        if (!dxs[i]) continue;
        float* d = dxs[i] + b;
        for (index_t j = 0; j < m; ++j) d[j] = win[j] == i ? g[j] : 0.0f;
      }
      break;
    }
  }
}

// fn(b, m) over the tiles of [0, n), split across threads for large n.
template <class TileFn>
void for_each_tile(index_t n, TileFn fn) {
  parallel_chunks(n, [&](index_t b, index_t e) {
    for (index_t t = b; t < e; t += kTile) fn(t, std::min(kTile, e - t));
  }, kParallelThreshold, kTile);
}

}  // namespace

void merge_forward(MergeOp op, const float* const* xs, int k, float* y, index_t n) {
  if (n == 0) return;
  for_each_tile(n, [&](index_t b, index_t m) { merge_forward_tile(op, xs, k, y, b, m); });
}

void merge_backward(MergeOp op, const float* const* xs, int k, const float* dy, float* const* dxs, index_t n) {
  if (n == 0 || std::none_of(dxs, dxs + k, [](float* d) { return d != nullptr; })) return;
  for_each_tile(n, [&](index_t b, index_t m) { merge_backward_tile(op, xs, k, dy, dxs, b, m); });
}

// Row r of every input is copied (or copied back) as one block per input;
// rows are split across threads when the bytes moved reach gather_rows's
// threshold.
void concatenate_forward(const float* const* xs, const index_t* cols, int k, float* y, index_t rows) {
  index_t total = 0;
  for (int i = 0; i < k; ++i) total += cols[i];
  if (rows == 0 || total == 0) return;
  parallel_chunks_if(rows * total * index_t(sizeof(float)) >= kGatherParallelBytes, rows, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      float* yr = y + r * total;
      for (int i = 0; i < k; ++i) {
        std::memcpy(yr, xs[i] + r * cols[i], size_t(cols[i]) * sizeof(float));
        yr += cols[i];
      }
    }
  }, 1);
}

void concatenate_backward(const float* dy, const index_t* cols, int k, float* const* dxs, index_t rows) {
  index_t total = 0;
  for (int i = 0; i < k; ++i) total += cols[i];
  if (rows == 0 || total == 0) return;
  parallel_chunks_if(rows * total * index_t(sizeof(float)) >= kGatherParallelBytes, rows, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const float* gr = dy + r * total;
      for (int i = 0; i < k; ++i) {
        if (dxs[i]) std::memcpy(dxs[i] + r * cols[i], gr, size_t(cols[i]) * sizeof(float));
        gr += cols[i];
      }
    }
  }, 1);
}

}  // namespace deepcore
