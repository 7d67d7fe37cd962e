// Optimizer updates over one flat parameter buffer (a model keeps all of its
// trainable weights in one contiguous array, so one call updates them all).
#pragma once
#include "ops/common.h"

namespace deepcore {

// Keras SGD:
//   momentum == 0:  w <- w - lr g
//   else:           v <- momentum v - lr g
//                   w <- w + v                      (classical)
//                   w <- w + momentum v - lr g      (Nesterov)
// velocity may be null when momentum == 0.
void sgd_update(float* w, const float* g, float* velocity, index_t n, float lr, float momentum, bool nesterov);

}  // namespace deepcore
