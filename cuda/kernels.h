// The CUDA twins of the CPU kernels. Each has the signature of its CPU
// declaration in src/ops/*.h (same name, same arguments, same meaning), with
// every pointer a device pointer (except optimizer_step's per-segment tables,
// see there); they live in deepcore::cuda so that a reader (and the linker)
// never confuses the two backends. Launches go to deepcore's stream
// (current_stream(), stream.h) and return without waiting, except where a
// result comes back to the host (the loss value; optimizer_step's penalty and
// gradient norm), which waits for that stream.
//
// Not twinned: philox_permutation (host-only: the shuffled order is made on
// the host and gather_rows takes host indices), perceptron (a teaching kernel,
// sequential by nature) and bias_activation_forward (the CPU dense layer's
// epilogue, not bound; the GPU dense layer adds the bias in cuBLASLt's).
#pragma once
#include <cstdint>

#include "ops/activations.h"
#include "ops/common.h"
#include "ops/dropout.h"
#include "ops/losses.h"
#include "ops/optimizers.h"

namespace deepcore {
namespace cuda {

// ops/activations.h
void activation_forward(ActParams a, const float* x, float* y, index_t rows, index_t cols);
void activation_backward(ActParams a, const float* x, const float* y, const float* dy, float* dx, index_t rows,
                         index_t cols);

// ops/philox.h
void philox_uniform(float* out, index_t n, uint64_t seed, uint64_t stream, float low, float high);
void philox_normal(float* out, index_t n, uint64_t seed, uint64_t stream, float mean, float stddev, bool truncated);

// ops/optimizers.h
void sgd_update(float* w, const float* g, float* velocity, index_t n, float lr, float momentum, bool nesterov);
// The one exception to "every pointer a device pointer": offsets, seg_l1 and
// seg_l2 (nseg + 1 and nseg entries, validated by the caller) are host arrays,
// uploaded with the call, as the Python side keeps them. The update itself
// needs no host round trip; the penalty and *grad_norm come back to the host,
// so the call synchronizes when a penalty is set or grad_norm is given, and
// otherwise returns 0 without waiting.
double optimizer_step(const OptParams& p, float* w, const float* g, float* s0, float* s1, float* s2, index_t n,
                      const int64_t* offsets, index_t nseg, const float* seg_l1, const float* seg_l2,
                      double* grad_norm);
void max_norm(float* w, index_t outer, index_t r, index_t inner, float max_value);

// ops/batchnorm.h (all arguments device pointers; null where the CPU allows null)
void batchnorm_forward_train(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                             float* inv_std, float* moving_mean, float* moving_var, index_t A, index_t C, index_t B,
                             float eps, float momentum);
void batchnorm_forward_inference(const float* x, const float* gamma, const float* beta, const float* moving_mean,
                                 const float* moving_var, float* y, index_t A, index_t C, index_t B, float eps);
void batchnorm_backward(const float* x, const float* dy, const float* gamma, const float* mean,
                        const float* inv_std, float* dx, float* dgamma, float* dbeta, index_t A, index_t C,
                        index_t B);
void channel_affine(const float* x, const float* center, const float* scale, const float* offset, float* y,
                    index_t A, index_t C, index_t B);

// ops/losses.h. Labels are validated on the device before anything is
// written; a label out of range throws InvalidInput naming it and its row, as
// on the CPU. Synchronizes (the loss comes back to the host).
double sparse_categorical_crossentropy(const float* pred, const int32_t* labels, float* grad, index_t rows,
                                       index_t cols, bool from_logits, int64_t* correct);

// ops/dropout.h: the same Philox keying as the CPU, so the same (seed, stream,
// call) gives the same masks on both devices. keep_bits (device, may be null)
// as on the CPU: bit k of word w is element 32 w + k.
void dropout_forward(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream, uint32_t call,
                     uint32_t* keep_bits);
void dropout_backward(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                      uint32_t call);
void dropout_backward_bits(const float* dy, float* dx, index_t n, float rate, const uint32_t* keep_bits);
void dropout_mask(float* mask, index_t n, float rate, uint64_t seed, uint64_t stream, uint32_t call);
void alpha_dropout_forward(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream,
                           uint32_t call, uint32_t* keep_bits);
void alpha_dropout_backward(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                            uint32_t call);
void alpha_dropout_backward_bits(const float* dy, float* dx, index_t n, float rate, const uint32_t* keep_bits);
void rrelu_forward(const float* x, float* y, index_t n, float lower, float upper, bool training, uint64_t seed,
                   uint64_t stream, uint32_t call);
void rrelu_backward(const float* x, const float* dy, float* dx, index_t n, float lower, float upper, bool training,
                    uint64_t seed, uint64_t stream, uint32_t call);
void prelu_forward(const float* x, const float* alpha, float* y, index_t B, index_t P, index_t S, index_t Q);
// dalpha is overwritten, summed in double in a fixed order (deterministic); dx may be null, or dy.
void prelu_backward(const float* x, const float* alpha, const float* dy, float* dx, float* dalpha, index_t B,
                    index_t P, index_t S, index_t Q);

// ops/dense.h, through cuBLASLt loaded at run time (cublaslt.h, matmul.h):
// throw std::runtime_error with lt::reason() when it is unavailable. fp32
// (CUBLAS_COMPUTE_32F) unless set_tf32(true) (matmul.h). Bias, and ReLU when
// y == z, are fused in cuBLASLt's epilogue (its ReLU maps NaN to 0 where the
// CPU keeps NaN); db is a fixed-order sum in double.
void sgemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, float alpha, const float* a, index_t lda,
           const float* b, index_t ldb, float beta, float* c, index_t ldc);
void dense_forward(const float* x, const float* w, const float* b, float* z, float* y, index_t batch, index_t in,
                   index_t out, ActParams act);
void dense_backward(const float* x, const float* w, const float* z, const float* y, const float* dy, float* dz_buf,
                    float* dx, float* dw, float* db, index_t batch, index_t in, index_t out, ActParams act,
                    bool dy_is_dz, bool accumulate);

// ops/activations.h. Synchronizes (the sum comes back to the host); fixed-order double sum.
double swish_beta_grad(const float* x, const float* dy, index_t n, float beta);

// ops/losses.h: every dense-target loss, the CPU's terms and gradients.
// Synchronizes (the loss comes back to the host); fixed-order double sum.
double loss_forward_backward(Loss kind, const float* pred, const float* target, float* grad, index_t rows,
                             index_t cols, float param);

// ops/gather.h. idx is a HOST array (as Model.fit keeps the shuffled order),
// checked on the host with the CPU's words, then uploaded with the call;
// src and dst are device pointers.
void gather_rows(const void* src, index_t src_rows, size_t row_bytes, const int64_t* idx, index_t n, void* dst);

// The number of NaN and +-inf elements (the CPU's is inline in its binding). Synchronizes.
int64_t count_nonfinite(const float* x, index_t n);

}  // namespace cuda
}  // namespace deepcore
