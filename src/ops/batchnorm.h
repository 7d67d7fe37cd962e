// Batch normalization (Ioffe & Szegedy, 2015), forward and backward, and the
// per-feature affine map that serves BatchNormalization at inference and the
// Normalization layer. One declaration for both backends.
//
// Layout: the input is viewed as (A, C, B), row-major, with the C normalized
// features in the middle: statistics are taken over A and B for each feature c.
//   (batch, features), axis=-1        -> A = batch,   C = features, B = 1
//   (batch, H, W, ch),  axis=-1       -> A = batch*H*W, C = ch,     B = 1
//   (batch, ch, H, W),  axis=1        -> A = batch,   C = ch,       B = H*W
//   (batch, H, W, ch),  axis=[1, 2]   -> A = batch,   C = H*W,      B = ch
// n = A * B values per feature.
#pragma once
#include "ops/common.h"

namespace deepcore {

// Training forward, per feature c (two passes over x: statistics, normalize):
//   mu     = mean(x)                          over the n values of feature c
//   var    = mean((x - mu)^2)                 biased, as Keras normalizes with
//   inv_std = 1 / sqrt(var + eps)
//   y      = gamma * (x - mu) * inv_std + beta
//   moving_mean <- moving_mean * momentum + mu  * (1 - momentum)
//   moving_var  <- moving_var  * momentum + var * (1 - momentum)
// Sums run in double around a per-feature shift (the first value), so the
// variance does not cancel for data far from zero. gamma / beta may be null
// (scale=False: gamma = 1; center=False: beta = 0). mean and inv_std (C) are
// written for the backward pass. y == x is allowed. Requires n >= 2.
void batchnorm_forward_train(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                             float* inv_std, float* moving_mean, float* moving_var, index_t A, index_t C, index_t B,
                             float eps, float momentum);

// Inference forward with the moving statistics, one fused pass:
//   y = (x - moving_mean) * (gamma / sqrt(moving_var + eps)) + beta
void batchnorm_forward_inference(const float* x, const float* gamma, const float* beta, const float* moving_mean,
                                 const float* moving_var, float* y, index_t A, index_t C, index_t B, float eps);

// Backward of the training forward, with xhat = (x - mu) * inv_std:
//   dbeta  = sum(dy)          dgamma = sum(dy * xhat)
//   dx     = gamma * inv_std * (dy - dbeta / n - xhat * dgamma / n)
// One pass for the two sums (in double), one for dx. dx, dgamma, dbeta may be
// null; gamma may be null (= 1). dx == dy is allowed.
void batchnorm_backward(const float* x, const float* dy, const float* gamma, const float* mean,
                        const float* inv_std, float* dx, float* dgamma, float* dbeta, index_t A, index_t C,
                        index_t B);

// Per-feature affine map y = (x - center) * scale + offset. center and offset
// may be null (= 0). y == x is allowed. The Normalization layer's forward
// ((x - mean) / std), its backward (dy / std) and its inverse (x * std + mean).
void channel_affine(const float* x, const float* center, const float* scale, const float* offset, float* y,
                    index_t A, index_t C, index_t B);

}  // namespace deepcore
