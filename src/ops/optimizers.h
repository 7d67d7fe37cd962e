// Optimizer updates over one flat parameter buffer. A model keeps all of its
// trainable weights in one contiguous array, split into segments (one per
// variable), so a single call updates every parameter: per-segment l1/l2
// penalty gradients, gradient clipping (by value, per-tensor norm or global
// norm), decoupled weight decay and the update rule run in one pass (plus one
// reduction pass when a norm or a penalty value is needed).
//
// Update rules follow Keras 3 (epsilon placement included). Per element, with
// g the gradient after penalties and clipping, t the 1-based step:
//   SGD      v <- mu v - lr g;  w <- w + v  (Nesterov: w <- w + mu v - lr g)
//   Adagrad  a <- a + g^2;      w <- w - lr g / sqrt(a + eps)
//   RMSprop  v <- rho v + (1-rho) g^2; [c <- rho c + (1-rho) g; d = v - c^2 + eps | d = v + eps]
//            i = lr g / sqrt(d); [mo <- mu mo + i; w <- w - mo | w <- w - i]
//   Adam     m <- m + (g-m)(1-b1); v <- v + (g^2-v)(1-b2); [vh <- max(vh, v)]
//            w <- w - c1 m / (sqrt(v or vh) + eps),  c1 = lr sqrt(1-b2^t)/(1-b1^t)
//   Adamax   m <- m + (g-m)(1-b1); u <- max(b2 u, |g|); w <- w - c1 m / (u + eps), c1 = lr/(1-b1^t)
//   Nadam    m, v as Adam; w <- w - lr (c1 m + c2 g) / (sqrt(c3 v) + eps)
//            (c1, c2: the Nesterov momentum-schedule products, c3 = 1/(1-b2^t))
//   Ftrl     Keras's FTRL-proximal with accumulators a and linear terms z.
#pragma once
#include "ops/common.h"

namespace deepcore {

enum class Opt : int { SGD = 0, Adagrad = 1, RMSprop = 2, Adam = 3, Adamax = 4, Nadam = 5, Ftrl = 6 };
constexpr int kNumOpts = 7;

struct OptParams {
  int kind = 0;
  float lr = 0.01f;
  float momentum = 0.0f;  // SGD, RMSprop
  float beta1 = 0.9f;     // Adam family
  float beta2 = 0.999f;   // Adam family; RMSprop's rho
  float epsilon = 1e-7f;
  bool nesterov = false, amsgrad = false, centered = false;
  float c1 = 0.0f, c2 = 0.0f, c3 = 0.0f;  // step-dependent coefficients (see above)
  float weight_decay = 0.0f;             // decoupled: w <- w - lr wd w before the update
  float clipvalue = 0.0f, clipnorm = 0.0f, global_clipnorm = 0.0f;  // <= 0: off
  // Ftrl
  float lr_power = -0.5f, l1 = 0.0f, l2 = 0.0f, l2_shrinkage = 0.0f, ftrl_beta = 0.0f;
};

// The slots each rule uses (null when unused):
//   SGD s0 velocity (momentum > 0) | Adagrad s0 accumulator |
//   RMSprop s0 velocity, s1 momentum (momentum > 0), s2 average gradient (centered) |
//   Adam s0 m, s1 v, s2 vhat (amsgrad) | Adamax s0 m, s1 u | Nadam s0 m, s1 v |
//   Ftrl s0 accumulator, s1 linear.
// offsets has nseg + 1 entries (0 .. n); seg_l1/seg_l2 (may be null) are the
// per-segment penalty strengths (loss += l1 sum|w| + l2 sum w^2).
// Returns the penalty value at the weights before the update (0 without penalties).
// Writes the gradient norm after penalties, before clipping, to *grad_norm if given
// (computed only when clipping by norm or when asked).
double optimizer_step(const OptParams& p, float* w, const float* g, float* s0, float* s1, float* s2, index_t n,
                      const int64_t* offsets, index_t nseg, const float* seg_l1, const float* seg_l2,
                      double* grad_norm);

// Kept for direct use: the plain SGD rule.
void sgd_update(float* w, const float* g, float* velocity, index_t n, float lr, float momentum, bool nesterov);

// MaxNorm: w viewed as (outer, r, inner); each of the outer*inner vectors along
// the middle axis whose L2 norm exceeds max_value is rescaled to max_value.
void max_norm(float* w, index_t outer, index_t r, index_t inner, float max_value);

}  // namespace deepcore
