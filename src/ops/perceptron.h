// Rosenblatt's perceptron: threshold logic units with a step activation.
#pragma once
#include "ops/common.h"

namespace deepcore {

// One pass of the perceptron learning rule over the samples in `order`:
//   yhat = step(x W + b)   (step(z) = 1 if z >= 0 else 0, one unit per output)
//   W[:, k] += eta (t_k - yhat_k) x,  b[k] += eta (t_k - yhat_k)
// x: (n, in), targets: (n, k) in {0, 1}, w: (in, k), b: (k).
// Returns the number of samples with at least one wrong output.
int64_t perceptron_epoch(const float* x, const float* targets, float* w, float* b, index_t n, index_t in,
                         index_t k, const int64_t* order, float eta);

}  // namespace deepcore
