// Activation functions, forward and backward, as used standalone (Activation
// layer) and fused into the dense epilogue. One declaration for both backends.
#pragma once
#include <cmath>
#include "ops/common.h"
#include "ops/fastmath.h"

namespace deepcore {

enum class Act : int {
  Linear = 0,
  Sigmoid = 1,
  Tanh = 2,
  Relu = 3,
  LeakyRelu = 4,  // alpha = negative slope
  Elu = 5,        // alpha
  Selu = 6,
  GeluErf = 7,    // exact: x * Phi(x)
  GeluTanh = 8,   // tanh approximation
  Swish = 9,      // x * sigmoid(beta * x)
  Mish = 10,      // x * tanh(softplus(x))
  Softplus = 11,
  Softmax = 12,   // over the last axis (rows)
};
constexpr int kNumActs = 13;

struct ActParams {
  Act kind = Act::Linear;
  float alpha = 0.0f;
  float beta = 1.0f;
};

constexpr float kSeluScale = 1.0507009873554804934f;
constexpr float kSeluAlpha = 1.6732632423543772848f;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCoef = 0.044715f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

// tanh(softplus(x)) with one exp: with n = e^x, (1+n)^2 = e^{2 softplus}, so
// tanh(softplus(x)) = ((1+n)^2 - 1) / ((1+n)^2 + 1) = (n^2 + 2n) / (n^2 + 2n + 2).
// For x >= 20 it is 1 to float precision (and n^2 would overflow past 44).
DC_HD float mish_tanh_softplus(float x) {
  const float n = fast_exp(x < 20.0f ? x : 20.0f);
  const float q = n * n + 2.0f * n;
  const float t = q / (q + 2.0f);
  return (x != x) ? x : t;
}

// y = f(x) for the elementwise activations (not softmax).
DC_HD float act_forward_scalar(Act kind, float x, float alpha, float beta) {
  switch (kind) {
    case Act::Linear: return x;
    case Act::Sigmoid: return fast_sigmoid(x);
    case Act::Tanh: return fast_tanh(x);
    case Act::Relu: return (x > 0.0f || x != x) ? x : 0.0f;  // NaN stays NaN
    case Act::LeakyRelu: return x > 0.0f ? x : alpha * x;
    case Act::Elu: return x > 0.0f ? x : alpha * (fast_exp(x) - 1.0f);
    case Act::Selu: return kSeluScale * (x > 0.0f ? x : kSeluAlpha * (fast_exp(x) - 1.0f));
    case Act::GeluErf: return x * normal_cdf(x);
    case Act::GeluTanh: return 0.5f * x * (1.0f + fast_tanh(kSqrt2OverPi * (x + kGeluCoef * x * x * x)));
    case Act::Swish: return x * fast_sigmoid(beta * x);
    case Act::Mish: return x * mish_tanh_softplus(x);
    case Act::Softplus: return softplus_f(x);
    default: return x;
  }
}

// dL/dx given dL/dy, the input x and the output y (whichever the derivative
// is cheaper from).
DC_HD float act_backward_scalar(Act kind, float x, float y, float dy, float alpha, float beta) {
  switch (kind) {
    case Act::Linear: return dy;
    case Act::Sigmoid: return dy * y * (1.0f - y);        // s' = s (1 - s)
    case Act::Tanh: return dy * (1.0f - y * y);           // tanh' = 1 - tanh^2
    case Act::Relu: return x > 0.0f ? dy : 0.0f;
    case Act::LeakyRelu: return x > 0.0f ? dy : alpha * dy;
    case Act::Elu: return x > 0.0f ? dy : dy * (y + alpha);               // alpha e^x = y + alpha
    case Act::Selu: return x > 0.0f ? dy * kSeluScale : dy * (y + kSeluScale * kSeluAlpha);
    case Act::GeluErf: {  // Phi(x) + x phi(x)
      const float cdf = normal_cdf(x);
      const float pdf = kInvSqrt2Pi * fast_exp(-0.5f * x * x);
      return dy * (cdf + x * pdf);
    }
    case Act::GeluTanh: {  // u = c (x + k x^3): 0.5(1+t) + 0.5 x (1-t^2) c (1 + 3k x^2)
      const float t = fast_tanh(kSqrt2OverPi * (x + kGeluCoef * x * x * x));
      return dy * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kGeluCoef * x * x));
    }
    case Act::Swish: {  // s = sigmoid(beta x): s + beta x s (1 - s)
      const float s = fast_sigmoid(beta * x);
      return dy * (s + beta * x * s * (1.0f - s));
    }
    case Act::Mish: {  // t = tanh(softplus(x)): t + x (1 - t^2) sigmoid(x)
      const float t = mish_tanh_softplus(x);
      const float n = fast_exp(x < 20.0f ? x : 20.0f);
      return dy * (t + x * (1.0f - t * t) * (n / (1.0f + n)));
    }
    case Act::Softplus: return dy * fast_sigmoid(x);
    default: return dy;
  }
}

// y = act(x) over rows x cols (softmax works per row). x == y is allowed.
void activation_forward(ActParams a, const float* x, float* y, index_t rows, index_t cols);
// dx = dL/dx from dy, x (pre-activation) and y (output). dx == dy is allowed.
void activation_backward(ActParams a, const float* x, const float* y, const float* dy, float* dx,
                         index_t rows, index_t cols);
// One pass over a row-major (rows, cols) tensor: z += b (per column), y = act(z).
// y == z is allowed. This is the dense layer's epilogue.
void bias_activation_forward(ActParams a, float* z, float* y, const float* b, index_t rows, index_t cols);

// Swish with a learnable beta (the Swish layer): y = x s, s = sigmoid(beta x),
// over n elements, with beta read from memory (*beta, one float) when the
// kernel runs, device memory on CUDA. So the value never passes through the
// host, and a step captured as a CUDA graph reads each replay's beta. The math
// is act_forward_scalar / act_backward_scalar's Act::Swish, bit for bit.
// y == x and dx == dy are allowed.
void swish_forward(const float* x, float* y, index_t n, const float* beta);
// dx = dy (s + beta x s (1 - s)).
void swish_backward(const float* x, const float* dy, float* dx, index_t n, const float* beta);
// *dbeta = dL/dbeta = sum_i dy_i x_i^2 s_i (1 - s_i): each term in float
// (swish_beta_grad_term), summed in double in a fixed order that depends on n
// only (the same bits for any thread count), rounded once to float.
// Overwrites *dbeta (0 when n == 0).
void swish_beta_grad(const float* x, const float* dy, index_t n, const float* beta, float* dbeta);

// One term dy x^2 s (1 - s), s = sigmoid(beta x), in float, on both backends.
// s (1 - s) = t / (1 + t)^2 with t = e^{-|beta x|} in (0, 1]: s (1 - s) is
// even in beta x, so this form has no 1 - s cancellation (from a float s,
// 1 - s at beta x = 10 keeps about 3 digits) and cannot overflow.
DC_HD float swish_beta_grad_term(float x, float dy, float beta) {
  const float t = fast_exp(-std::fabs(beta * x));
  const float q = 1.0f / (1.0f + t);
  return dy * x * x * (t * q * q);
}

}  // namespace deepcore
