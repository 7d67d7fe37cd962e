#include "ops/losses.h"
#include <algorithm>
#include <cmath>
#include <string>
#include "cpu/parallel.h"
#include "ops/fastmath.h"

namespace deepcore {
namespace {

// log softmax of one row: returns log-sum-exp and the row max.
inline double row_logsumexp(const float* z, index_t cols, float* m_out) {
  float m = -INFINITY;
  for (index_t j = 0; j < cols; ++j) m = std::max(m, z[j]);
  double s = 0.0;
  for (index_t j = 0; j < cols; ++j) s += std::exp(double(z[j]) - m);
  *m_out = m;
  return double(m) + std::log(s);
}

inline index_t row_argmax(const float* p, index_t cols) {
  index_t best = 0;
  for (index_t j = 1; j < cols; ++j)
    if (p[j] > p[best]) best = j;
  return best;
}

// Loss sums: terms added in double, in blocks fixed by the input size only:
// kSumBlock elements (elementwise losses) or kSumRows rows (row-wise losses)
// summed from 0 in order, then the blocks' partials added in block order
// (sum_blocks_in_order). The value has the same bits on one thread or many,
// and a batch of at most one block sums exactly as a plain loop would.
constexpr index_t kSumBlock = 4096;
constexpr index_t kSumRows = 512;

// The loss sum over items [0, n) (elements or rows) in blocks of `block`:
// add(i, s) adds item i's terms to the block's running sum s (and writes its
// gradient). Parallel when `elements` reaches kParallelThreshold.
template <class Add>
double blocked_sum(index_t n, index_t block, index_t elements, Add add) {
  const index_t blocks = (n + block - 1) / block;
  return sum_blocks_in_order(blocks, 0.0, [&](index_t k) {
    const index_t e = std::min(n, (k + 1) * block);
    double s = 0.0;
    for (index_t i = k * block; i < e; ++i) add(i, s);
    return s;
  }, elements);
}

// Partial sums of the sparse cross-entropy: the loss and the argmax hits.
struct LossHits {
  double loss = 0.0;
  int64_t hits = 0;
  LossHits& operator+=(const LossHits& o) {
    loss += o.loss, hits += o.hits;
    return *this;
  }
};

// Rows [r0, r1) of the sparse cross-entropy: their loss terms and argmax hits,
// summed in row order, and their gradient (s = 1 / rows). A function of its
// own, with values and restrict pointers: as a lambda body run by a pool
// thread, with its captures by reference, every gradient store could alias
// them (400000x10 logits on 2 threads: 28.4-29.5 ms as a lambda, 25.7-27.0 ms
// as a function; the OpenMP loop, whose outlined function reads its shared
// variables through a restrict pointer, 25.9-26.9 ms).
LossHits sparse_crossentropy_rows(const float* __restrict pred, const int32_t* __restrict labels,
                                  float* __restrict grad, index_t r0, index_t r1, index_t cols, float s,
                                  bool from_logits) {
  LossHits part;
  for (index_t r = r0; r < r1; ++r) {
    const float* z = pred + r * cols;
    const int32_t y = labels[r];
    part.hits += row_argmax(z, cols) == y;
    if (from_logits) {  // loss = lse(z) - z_y ; dz = (softmax(z) - onehot) / rows
      float m;
      const double lse = row_logsumexp(z, cols, &m);
      part.loss += lse - z[y];
      if (grad) {
        float* g = grad + r * cols;
        for (index_t j = 0; j < cols; ++j) g[j] = s * float(std::exp(double(z[j]) - lse));
        g[y] -= s;
      }
    } else {  // loss = -log p_y ; dp_y = -1 / (p_y rows)
      const float p = clip_probability(z[y]);
      part.loss += -std::log(double(p));
      if (grad) {
        float* g = grad + r * cols;
        for (index_t j = 0; j < cols; ++j) g[j] = 0.0f;
        g[y] = -s / p;
      }
    }
  }
  return part;
}

}  // namespace

double loss_forward_backward(Loss kind, const float* pred, const float* target, float* grad, index_t rows,
                             index_t cols, float param) {
  const index_t n = rows * cols;
  switch (kind) {
    case Loss::MeanSquaredError: {  // mean (p - t)^2 ; d/dp = 2 (p - t) / n
      const float s = 2.0f / float(n);
      const double total = blocked_sum(n, kSumBlock, n, [&](index_t i, double& sum) {
        const float e = pred[i] - target[i];
        if (grad) grad[i] = s * e;
        sum += double(e) * e;
      });
      return total / double(n);
    }
    case Loss::MeanAbsoluteError: {  // mean |p - t| ; d/dp = sign(p - t) / n
      const float s = 1.0f / float(n);
      const double total = blocked_sum(n, kSumBlock, n, [&](index_t i, double& sum) {
        const float e = pred[i] - target[i];
        if (grad) grad[i] = e > 0.0f ? s : (e < 0.0f ? -s : 0.0f);
        sum += std::fabs(e);
      });
      return total / double(n);
    }
    case Loss::Huber: {  // 0.5 e^2 if |e| <= delta else delta (|e| - 0.5 delta)
      const float d = param, s = 1.0f / float(n);
      const double total = blocked_sum(n, kSumBlock, n, [&](index_t i, double& sum) {
        const float e = pred[i] - target[i], ae = std::fabs(e);
        if (grad) grad[i] = s * (ae <= d ? e : std::copysign(d, e));
        sum += ae <= d ? 0.5 * double(e) * e : double(d) * (ae - 0.5 * d);
      });
      return total / double(n);
    }
    case Loss::BinaryCrossentropy: {  // -(t log p + (1-t) log(1-p)), p clipped
      const float s = 1.0f / float(n);
      const double total = blocked_sum(n, kSumBlock, n, [&](index_t i, double& sum) {
        const float p = clip_probability(pred[i]), t = target[i];
        if (grad) grad[i] = s * (p - t) / (p * (1.0f - p));
        sum += -(double(t) * std::log(double(p)) + (1.0 - t) * std::log(1.0 - double(p)));
      });
      return total / double(n);
    }
    case Loss::BinaryCrossentropyLogits: {  // max(z,0) - z t + log(1 + e^-|z|) ; d/dz = sigmoid(z) - t
      const float s = 1.0f / float(n);
      const double total = blocked_sum(n, kSumBlock, n, [&](index_t i, double& sum) {
        const float z = pred[i], t = target[i];
        if (grad) grad[i] = s * (fast_sigmoid(z) - t);
        sum += std::max(double(z), 0.0) - double(z) * t + std::log1p(std::exp(-std::fabs(double(z))));
      });
      return total / double(n);
    }
    case Loss::CategoricalCrossentropy: {  // -sum_j t_j log p_j, p clipped
      const float s = 1.0f / float(rows);
      const double total = blocked_sum(rows, kSumRows, n, [&](index_t r, double& sum) {
        const float* p = pred + r * cols;
        const float* t = target + r * cols;
        for (index_t j = 0; j < cols; ++j) {
          const float pc = clip_probability(p[j]);
          sum += -double(t[j]) * std::log(double(pc));
          if (grad) grad[r * cols + j] = -s * t[j] / pc;
        }
      });
      return total / double(rows);
    }
    case Loss::CategoricalCrossentropyLogits: {  // sum_j t_j (lse - z_j); d/dz = p sum(t) - t
      const float s = 1.0f / float(rows);
      const double total = blocked_sum(rows, kSumRows, n, [&](index_t r, double& sum) {
        const float* z = pred + r * cols;
        const float* t = target + r * cols;
        float m;
        const double lse = row_logsumexp(z, cols, &m);
        double tsum = 0.0;
        for (index_t j = 0; j < cols; ++j) {
          sum += double(t[j]) * (lse - z[j]);
          tsum += t[j];
        }
        if (grad)
          for (index_t j = 0; j < cols; ++j)
            grad[r * cols + j] = s * (float(std::exp(double(z[j]) - lse) * tsum) - t[j]);
      });
      return total / double(rows);
    }
  }
  throw InvalidInput("unknown loss kind " + std::to_string(int(kind)));
}

double sparse_categorical_crossentropy(const float* pred, const int32_t* labels, float* grad, index_t rows,
                                       index_t cols, bool from_logits, int64_t* correct) {
  // Validate every label before touching anything.
  for (index_t r = 0; r < rows; ++r)
    if (labels[r] < 0 || labels[r] >= cols)
      throw InvalidInput("label " + std::to_string(labels[r]) + " at row " + std::to_string(r) +
                         " is out of range: expected an integer in [0, " + std::to_string(cols) + ")");
  const float s = 1.0f / float(rows);
  const index_t blocks = (rows + kSumRows - 1) / kSumRows;
  const LossHits total = sum_blocks_in_order(blocks, LossHits{}, [&](index_t k) {
    return sparse_crossentropy_rows(pred, labels, grad, k * kSumRows, std::min(rows, (k + 1) * kSumRows), cols, s,
                                    from_logits);
  }, rows * cols);
  if (correct) *correct = total.hits;
  return total.loss / double(rows);
}

}  // namespace deepcore
