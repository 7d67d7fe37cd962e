// CUDA sparse categorical cross-entropy: the twin of the fused softmax +
// cross-entropy in src/cpu/losses.cpp. One warp per row computes the row's
// loss, its argmax hit and (optionally) the gradient; a one-block reduction
// then sums the rows in a fixed order, so the result is deterministic.
//
// Three kernels on the default stream, one synchronization at the end:
//   1. validate_labels: the first row whose label is outside [0, cols);
//   2. sparse_ce_rows: does nothing if (1) found a bad label (so, as on the
//      CPU, nothing is written for bad input), else one warp per row;
//   3. sum_rows: total loss and hit count.
// sparse_categorical_crossentropy_graph queues the same three, then moves the
// result into a LossScalars in device memory instead of returning it
// (loss_scalars_kernel), so that a CUDA graph can hold the whole step.
#include <climits>
#include <cmath>
#include <string>

#include "allocator.h"
#include "graph.h"
#include "kernels.h"
#include "launch.cuh"
#include "ops/losses.h"

namespace deepcore {
namespace cuda {
namespace {

constexpr unsigned long long kNoBadRow = ULLONG_MAX;

struct SceResult {
  double total;                  // sum over rows of the row losses
  long long hits;                // rows whose argmax equals the label
  unsigned long long first_bad;  // first row with a label out of range, or kNoBadRow
};

__global__ void validate_labels_kernel(const int32_t* labels, index_t rows, index_t cols, SceResult* res) {
  for (index_t r = grid_index(); r < rows; r += grid_stride())
    if (labels[r] < 0 || labels[r] >= cols) atomicMin(&res->first_bad, (unsigned long long)r);
}

// As on the CPU: min(max(p, eps), 1 - eps) with std::max/std::min semantics (NaN stays NaN).
__device__ __forceinline__ float clip_prob(float p) {
  p = (p < kProbEpsilon) ? kProbEpsilon : p;
  return (1.0f - kProbEpsilon < p) ? 1.0f - kProbEpsilon : p;
}

// The CPU's argmax: the first index of the largest value. NaN never wins,
// except at index 0, where nothing compares greater than it.
__device__ __forceinline__ index_t warp_row_argmax(const float* z, index_t cols, int lane) {
  float bv = -INFINITY;
  index_t bj = cols;
  for (index_t j = lane; j < cols; j += 32) {
    const float v = z[j];
    if (v > bv || (v == bv && j < bj)) bv = v, bj = j;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const index_t oj = __shfl_xor_sync(0xffffffffu, bj, o);
    if (ov > bv || (ov == bv && oj < bj)) bv = ov, bj = oj;
  }
  return (z[0] != z[0] || bj == cols) ? 0 : bj;
}

// from_logits: loss = lse(z) - z_y, dz = (softmax(z) - onehot(y)) / rows
// else:        loss = -log p_y,     dp_y = -1 / (p_y rows), 0 elsewhere
// lse and the loss are computed in double, as on the CPU.
__global__ void sparse_ce_rows_kernel(const float* pred, const int32_t* labels, float* grad, index_t rows,
                                      index_t cols, bool from_logits, const SceResult* res, double* row_loss,
                                      int* row_hit) {
  if (res->first_bad != kNoBadRow) return;
  const int lane = threadIdx.x % 32;
  const float s = 1.0f / float(rows);
  for (index_t r = warp_row(); r < rows; r += warp_row_stride()) {
    const float* z = pred + r * cols;
    const int32_t y = labels[r];
    const int hit = warp_row_argmax(z, cols, lane) == y;
    double loss;
    if (from_logits) {
      const double lse = warp_row_logsumexp(z, cols, lane);
      loss = lse - z[y];
      __syncwarp();  // every lane has read z before any lane writes grad (grad may alias pred)
      if (grad) {
        float* g = grad + r * cols;
        for (index_t j = lane; j < cols; j += 32) {
          const float gj = __fmul_rn(s, float(exp(double(z[j]) - lse)));
          g[j] = (j == y) ? __fsub_rn(gj, s) : gj;
        }
      }
    } else {
      const float p = clip_prob(z[y]);
      loss = -log(double(p));
      __syncwarp();  // as above: grad may alias pred
      if (grad) {
        float* g = grad + r * cols;
        for (index_t j = lane; j < cols; j += 32) g[j] = (j == y) ? -s / p : 0.0f;
      }
    }
    if (lane == 0) {
      row_loss[r] = loss;
      row_hit[r] = hit;
    }
  }
}

// One block: thread t sums rows t, t + kThreads, ... then a tree in shared memory.
__global__ void sum_rows_kernel(const double* row_loss, const int* row_hit, index_t rows, SceResult* res) {
  __shared__ double loss_part[kThreads];
  __shared__ long long hit_part[kThreads];
  if (res->first_bad != kNoBadRow) return;  // uniform across the block
  double l = 0.0;
  long long h = 0;
  for (index_t r = threadIdx.x; r < rows; r += kThreads) l += row_loss[r], h += row_hit[r];
  loss_part[threadIdx.x] = l;
  hit_part[threadIdx.x] = h;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) {
      loss_part[threadIdx.x] += loss_part[threadIdx.x + half];
      hit_part[threadIdx.x] += hit_part[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) res->total = loss_part[0], res->hits = hit_part[0];
}

// The call's result into *out (one thread): overwritten, or added when
// accumulating; a bad label leaves the sums alone and records where it was.
__global__ void loss_scalars_kernel(const SceResult* res, const int32_t* labels, index_t rows, index_t cols,
                                    LossScalars* out, bool accumulate) {
  if (!accumulate) *out = LossScalars{0.0, 0, 0, 0, kNoBadLabel, 0, 0, 0, 0, 0.0, 0.0};
  const bool bad = res->first_bad != kNoBadRow;
  out->bad = bad ? 1 : 0;
  if (bad) {
    if (out->first_bad == kNoBadLabel) {
      out->first_bad = res->first_bad;
      out->bad_label = labels[res->first_bad];
      out->bad_cols = cols;
    }
    return;
  }
  out->total += res->total;
  out->hits += res->hits;
  out->rows += rows;
  out->steps += 1;
}

__global__ void reset_loss_scalars_kernel(LossScalars* out) {
  *out = LossScalars{0.0, 0, 0, 0, kNoBadLabel, 0, 0, 0, 0, 0.0, 0.0};
}

// Scratch layout: [SceResult][row_loss: rows doubles][row_hit: rows ints]
constexpr size_t kResBytes = 32;
static_assert(sizeof(SceResult) <= kResBytes, "SceResult must fit its slot");
static_assert(kNoBadRow == kNoBadLabel, "LossScalars and SceResult mark 'no bad label' alike");
size_t sparse_ce_scratch_bytes(index_t rows) { return kResBytes + size_t(rows) * (sizeof(double) + sizeof(int)); }

// Queues the three kernels on `scratch`; the result lands in the SceResult at its start.
SceResult* queue_sparse_ce(void* scratch, const float* pred, const int32_t* labels, float* grad, index_t rows,
                           index_t cols, bool from_logits) {
  auto* res = static_cast<SceResult*>(scratch);
  auto* row_loss = reinterpret_cast<double*>(static_cast<char*>(scratch) + kResBytes);
  auto* row_hit = reinterpret_cast<int*>(row_loss + rows);

  check(cudaMemsetAsync(res, 0xff, sizeof(SceResult), current_stream()),
        "sparse_categorical_crossentropy: cudaMemsetAsync");
  validate_labels_kernel<<<blocks_for(rows), kThreads, 0, current_stream()>>>(labels, rows, cols, res);
  check_launch("validate_labels_kernel");
  sparse_ce_rows_kernel<<<blocks_for_rows(rows), kThreads, 0, current_stream()>>>(pred, labels, grad, rows, cols,
                                                                                  from_logits, res, row_loss, row_hit);
  check_launch("sparse_ce_rows_kernel");
  sum_rows_kernel<<<1, kThreads, 0, current_stream()>>>(row_loss, row_hit, rows, res);
  check_launch("sum_rows_kernel");
  return res;
}

}  // namespace

double sparse_categorical_crossentropy(const float* pred, const int32_t* labels, float* grad, index_t rows,
                                       index_t cols, bool from_logits, int64_t* correct) {
  if (rows == 0 || cols == 0) throw InvalidInput("sparse_categorical_crossentropy: y_pred is empty");
  ensure_not_capturing("sparse_categorical_crossentropy",
                       "it returns the loss to the host (in a graph, use sparse_categorical_crossentropy_graph with "
                       "LossScalars)");
  Scratch scratch(sparse_ce_scratch_bytes(rows));
  const SceResult* res = queue_sparse_ce(scratch.p, pred, labels, grad, rows, cols, from_logits);

  SceResult h;
  copy_to_host(&h, res, sizeof h, "sparse_categorical_crossentropy");
  if (h.first_bad != kNoBadRow) {
    int32_t label = 0;
    copy_to_host(&label, labels + h.first_bad, sizeof label, "sparse_categorical_crossentropy");
    throw_bad_label(label, h.first_bad, cols);
  }
  if (correct) *correct = h.hits;
  return h.total / double(rows);
}

void throw_bad_label(int64_t label, uint64_t row, int64_t cols) {
  throw InvalidInput("label " + std::to_string(label) + " at row " + std::to_string(row) +
                     " is out of range: expected an integer in [0, " + std::to_string(cols) + ")");
}

void sparse_categorical_crossentropy_graph(const float* pred, const int32_t* labels, float* grad, index_t rows,
                                           index_t cols, bool from_logits, LossScalars* out, bool accumulate) {
  if (rows == 0 || cols == 0) throw InvalidInput("sparse_categorical_crossentropy_graph: y_pred is empty");
  Scratch scratch(sparse_ce_scratch_bytes(rows));
  const SceResult* res = queue_sparse_ce(scratch.p, pred, labels, grad, rows, cols, from_logits);
  loss_scalars_kernel<<<1, 1, 0, current_stream()>>>(res, labels, rows, cols, out, accumulate);
  check_launch("loss_scalars_kernel");
}

void reset_loss_scalars(LossScalars* out) {
  reset_loss_scalars_kernel<<<1, 1, 0, current_stream()>>>(out);
  check_launch("reset_loss_scalars_kernel");
}

}  // namespace cuda
}  // namespace deepcore
