// Small elementwise helpers the model engine needs between layers.
#pragma once
#include "ops/common.h"

namespace deepcore {

// y <- a x + b y over n floats. a == 0 ignores x (y <- b y, also for a
// non-finite x); b == 1 is y <- y + a x. The graph engine sums the gradients
// of a tensor that feeds several layers (and of a layer called twice) with
// a = b = 1, and scales an output's loss gradient by its loss weight.
void axpby(float a, const float* x, float b, float* y, index_t n);

}  // namespace deepcore
