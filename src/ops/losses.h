// Losses, forward and backward in one pass. Every loss is the Keras
// "sum_over_batch_size" reduction: the mean over all elements for elementwise
// losses (= mean over the last axis, then over the batch), the mean over rows
// for the cross-entropies. Returned values are accumulated in double.
#pragma once
#include "ops/common.h"

namespace deepcore {

enum class Loss : int {
  MeanSquaredError = 0,
  MeanAbsoluteError = 1,
  Huber = 2,                  // param = delta
  BinaryCrossentropy = 3,     // pred are probabilities (clipped to [eps, 1-eps])
  BinaryCrossentropyLogits = 4,
  CategoricalCrossentropy = 5,        // pred are probabilities, rows
  CategoricalCrossentropyLogits = 6,  // softmax fused
};

// Probabilities are clipped to [kProbEpsilon, 1 - kProbEpsilon] as Keras does.
constexpr float kProbEpsilon = 1e-7f;

// min(max(p, eps), 1 - eps) with std::max / std::min's comparisons, so NaN
// stays NaN; one definition for the CPU and the CUDA kernels.
DC_HD float clip_probability(float p) {
  p = (p < kProbEpsilon) ? kProbEpsilon : p;
  return (1.0f - kProbEpsilon < p) ? 1.0f - kProbEpsilon : p;
}

// Loss with dense targets (same shape as pred: rows x cols). grad (nullable)
// receives dL/dpred (or dL/dlogits for the *Logits kinds).
double loss_forward_backward(Loss kind, const float* pred, const float* target, float* grad, index_t rows,
                             index_t cols, float param);

// Sparse categorical cross-entropy with integer labels in [0, cols).
// from_logits: pred are logits, softmax fused (grad = (softmax - onehot)/rows);
// else pred are probabilities (grad = -1/(p_label rows) at the label).
// correct (nullable) receives the number of rows whose argmax equals the label.
// Throws InvalidInput naming the first label out of range.
double sparse_categorical_crossentropy(const float* pred, const int32_t* labels, float* grad, index_t rows,
                                       index_t cols, bool from_logits, int64_t* correct);

}  // namespace deepcore
