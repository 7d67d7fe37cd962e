#include "ops/losses.h"
#include <algorithm>
#include <cmath>
#include <string>
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

}  // namespace

double loss_forward_backward(Loss kind, const float* pred, const float* target, float* grad, index_t rows,
                             index_t cols, float param) {
  const index_t n = rows * cols;
  double total = 0.0;
  switch (kind) {
    case Loss::MeanSquaredError: {  // mean (p - t)^2 ; d/dp = 2 (p - t) / n
      const float s = 2.0f / float(n);
#pragma omp parallel for reduction(+ : total) if (n >= kParallelThreshold)
      for (index_t i = 0; i < n; ++i) {
        const float e = pred[i] - target[i];
        total += double(e) * e;
        if (grad) grad[i] = s * e;
      }
      return total / double(n);
    }
    case Loss::MeanAbsoluteError: {  // mean |p - t| ; d/dp = sign(p - t) / n
      const float s = 1.0f / float(n);
#pragma omp parallel for reduction(+ : total) if (n >= kParallelThreshold)
      for (index_t i = 0; i < n; ++i) {
        const float e = pred[i] - target[i];
        total += std::fabs(e);
        if (grad) grad[i] = e > 0.0f ? s : (e < 0.0f ? -s : 0.0f);
      }
      return total / double(n);
    }
    case Loss::Huber: {  // 0.5 e^2 if |e| <= delta else delta (|e| - 0.5 delta)
      const float d = param, s = 1.0f / float(n);
#pragma omp parallel for reduction(+ : total) if (n >= kParallelThreshold)
      for (index_t i = 0; i < n; ++i) {
        const float e = pred[i] - target[i], ae = std::fabs(e);
        total += ae <= d ? 0.5 * double(e) * e : double(d) * (ae - 0.5 * d);
        if (grad) grad[i] = s * (ae <= d ? e : std::copysign(d, e));
      }
      return total / double(n);
    }
    case Loss::BinaryCrossentropy: {  // -(t log p + (1-t) log(1-p)), p clipped
      const float s = 1.0f / float(n);
#pragma omp parallel for reduction(+ : total) if (n >= kParallelThreshold)
      for (index_t i = 0; i < n; ++i) {
        const float p = clip_probability(pred[i]), t = target[i];
        total += -(double(t) * std::log(double(p)) + (1.0 - t) * std::log(1.0 - double(p)));
        if (grad) grad[i] = s * (p - t) / (p * (1.0f - p));
      }
      return total / double(n);
    }
    case Loss::BinaryCrossentropyLogits: {  // max(z,0) - z t + log(1 + e^-|z|) ; d/dz = sigmoid(z) - t
      const float s = 1.0f / float(n);
#pragma omp parallel for reduction(+ : total) if (n >= kParallelThreshold)
      for (index_t i = 0; i < n; ++i) {
        const float z = pred[i], t = target[i];
        total += std::max(double(z), 0.0) - double(z) * t + std::log1p(std::exp(-std::fabs(double(z))));
        if (grad) grad[i] = s * (fast_sigmoid(z) - t);
      }
      return total / double(n);
    }
    case Loss::CategoricalCrossentropy: {  // -sum_j t_j log p_j, p clipped
      const float s = 1.0f / float(rows);
#pragma omp parallel for reduction(+ : total) if (n >= kParallelThreshold)
      for (index_t r = 0; r < rows; ++r) {
        const float* p = pred + r * cols;
        const float* t = target + r * cols;
        for (index_t j = 0; j < cols; ++j) {
          const float pc = clip_probability(p[j]);
          total += -double(t[j]) * std::log(double(pc));
          if (grad) grad[r * cols + j] = -s * t[j] / pc;
        }
      }
      return total / double(rows);
    }
    case Loss::CategoricalCrossentropyLogits: {  // sum_j t_j (lse - z_j); d/dz = p sum(t) - t
      const float s = 1.0f / float(rows);
#pragma omp parallel for reduction(+ : total) if (n >= kParallelThreshold)
      for (index_t r = 0; r < rows; ++r) {
        const float* z = pred + r * cols;
        const float* t = target + r * cols;
        float m;
        const double lse = row_logsumexp(z, cols, &m);
        double tsum = 0.0;
        for (index_t j = 0; j < cols; ++j) {
          total += double(t[j]) * (lse - z[j]);
          tsum += t[j];
        }
        if (grad)
          for (index_t j = 0; j < cols; ++j)
            grad[r * cols + j] = s * (float(std::exp(double(z[j]) - lse) * tsum) - t[j]);
      }
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
  double total = 0.0;
  int64_t hits = 0;
#pragma omp parallel for reduction(+ : total, hits) if (rows * cols >= kParallelThreshold)
  for (index_t r = 0; r < rows; ++r) {
    const float* z = pred + r * cols;
    const int32_t y = labels[r];
    hits += row_argmax(z, cols) == y;
    if (from_logits) {  // loss = lse(z) - z_y ; dz = (softmax(z) - onehot) / rows
      float m;
      const double lse = row_logsumexp(z, cols, &m);
      total += lse - z[y];
      if (grad) {
        float* g = grad + r * cols;
        for (index_t j = 0; j < cols; ++j) g[j] = s * float(std::exp(double(z[j]) - lse));
        g[y] -= s;
      }
    } else {  // loss = -log p_y ; dp_y = -1 / (p_y rows)
      const float p = clip_probability(z[y]);
      total += -std::log(double(p));
      if (grad) {
        float* g = grad + r * cols;
        for (index_t j = 0; j < cols; ++j) g[j] = 0.0f;
        g[y] = -s / p;
      }
    }
  }
  if (correct) *correct = hits;
  return total / double(rows);
}

}  // namespace deepcore
