// The CUDA twins of the CPU kernels. Each has the signature of its CPU
// declaration in src/ops/*.h (same name, same arguments, same meaning), with
// every pointer a device pointer (except optimizer_step's per-segment tables,
// see there); they live in deepcore::cuda so that a reader (and the linker)
// never confuses the two backends. Launches go to deepcore's stream
// (current_stream(), stream.h) and return without waiting, except where a
// result comes back to the host (the loss value; optimizer_step's penalty and
// gradient norm), which waits for that stream.
//
// The *_graph variants at the end serve CUDA graphs (graph.h).
//
// Not twinned: philox_permutation (host-only: the shuffled order is made on
// the host and gather_rows takes host indices), perceptron (a teaching kernel,
// sequential by nature) and bias_activation_forward (the CPU dense layer's
// epilogue, not bound; the GPU dense layer adds the bias in cuBLASLt's).
#pragma once
#include <cstddef>
#include <cstdint>

#include "ops/activations.h"
#include "ops/common.h"
#include "ops/conv.h"
#include "ops/dropout.h"
#include "ops/losses.h"
#include "ops/merge.h"
#include "ops/repeat.h"
#include "ops/optimizers.h"

namespace deepcore {
namespace cuda {

// ops/activations.h
void activation_forward(ActParams a, const float* x, float* y, index_t rows, index_t cols);
void activation_backward(ActParams a, const float* x, const float* y, const float* dy, float* dx, index_t rows,
                         index_t cols);
// beta and dbeta: one float each in device memory, read / written when the
// kernels run; nothing waits (capturable). dbeta: a fixed-order double sum.
void swish_forward(const float* x, float* y, index_t n, const float* beta);
void swish_backward(const float* x, const float* dy, float* dx, index_t n, const float* beta);
void swish_beta_grad(const float* x, const float* dy, index_t n, const float* beta, float* dbeta);

// ops/philox.h
void philox_uniform(float* out, index_t n, uint64_t seed, uint64_t stream, float low, float high);
void philox_normal(float* out, index_t n, uint64_t seed, uint64_t stream, float mean, float stddev, bool truncated);

// ops/optimizers.h
void sgd_update(float* w, const float* g, float* velocity, index_t n, float lr, float momentum, bool nesterov);

// y <- a x + b y (ops/elementwise.h); x may be null when a == 0.
void axpby(float a, const float* x, float b, float* y, index_t n);
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

// ops/merge.h. xs, dxs and cols are HOST arrays of k entries (k <= kMaxMergeInputs)
// holding device pointers (dxs entries may be null), copied into the launch's
// arguments; y, dy and what the pointers point to live on the device.
void merge_forward(MergeOp op, const float* const* xs, int k, float* y, index_t n);
void merge_backward(MergeOp op, const float* const* xs, int k, const float* dy, float* const* dxs, index_t n);
void concatenate_forward(const float* const* xs, const index_t* cols, int k, float* y, index_t rows);
void concatenate_backward(const float* dy, const index_t* cols, int k, float* const* dxs, index_t rows);
// ops/repeat.h (RepeatVector).
void repeat_forward(const float* x, float* y, index_t rows, index_t n, index_t cols);
void repeat_backward(const float* dy, float* dx, index_t rows, index_t n, index_t cols);

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

// ops/conv.h (cuda/conv.cu): im2col + the dense twins above (cuBLASLt) for
// Conv2D, gather kernels for col2im and the pooling backward (the CPU's terms
// in the CPU's order), pooling forward and zero padding.
void conv2d_forward(const Window2D& g, const float* x, const float* w, const float* b, float* col, float* z,
                    float* y, index_t cout, ActParams act);
void conv2d_backward(const Window2D& g, const float* col, const float* w, const float* z, const float* y,
                     const float* dy, float* dz_buf, float* dcol, float* dx, float* dw, float* db, index_t cout,
                     ActParams act, bool dy_is_dz, bool accumulate);
void pool2d_forward(const Window2D& g, Pool mode, const float* x, float* y, int32_t* argmax);
void pool2d_backward(const Window2D& g, Pool mode, const float* dy, const int32_t* argmax, float* dx);
void pad2d(const float* x, float* y, index_t batch, index_t h, index_t w, index_t c, index_t top, index_t bottom,
           index_t left, index_t right);
void crop2d(const float* dy, float* dx, index_t batch, index_t h, index_t w, index_t c, index_t top, index_t bottom,
            index_t left, index_t right);

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

// ---------------------------------------------------- CUDA-graph variants
// For steps captured once and replayed (graph.h). They queue the same kernels
// as the functions above, but read what changes from step to step from device
// memory when they run, never copy from the host and never wait for the device,
// so a replay sees the values set before it. Same numerics, bit for bit.

// optimizer_step's segment tables on the device, uploaded once
// (upload_segments; the owner frees `block` with device_free), with the
// workspace of the reduction and its result.
struct DeviceSegments {
  void* block = nullptr;  // the one allocation holding everything below
  size_t bytes = 0;
  index_t n = 0, nseg = 0, nruns = 0;
  bool penalties = false;  // some segment has a nonzero l1 or l2
  const int64_t* offsets = nullptr;    // nseg + 1
  const int64_t* first_run = nullptr;  // nseg + 1
  const float* l1 = nullptr;           // nseg (zeros when none)
  const float* l2 = nullptr;           // nseg
  double* result = nullptr;            // 2: penalty, squared gradient norm (of the last step that reduced)
  double* run_sq = nullptr;            // nruns: workspace
  double* run_pen = nullptr;           // nruns: workspace
  float* scale = nullptr;              // nseg: workspace
};
// Host tables as in optimizer_step (offsets may be null: one segment of n).
// Copies from pageable memory: refuses to run during a capture.
DeviceSegments upload_segments(const int64_t* offsets, index_t nseg, const float* seg_l1, const float* seg_l2,
                               index_t n);
// optimizer_step with the hyperparameters read from *hyper (a device
// OptParams) when the kernels run. `structure` (the host copy) decides what is
// queued: the reduction runs when clipping by norm, with penalties, or when
// want_norm, and then leaves the penalty and squared norm in t.result. While
// *skip (device, may be null) is nonzero the update leaves everything unchanged.
// result: where the reduction's (penalty, squared norm) go (nullptr: t.result).
void optimizer_step_graph(const OptParams& structure, const OptParams* hyper, float* w, const float* g, float* s0,
                          float* s1, float* s2, const DeviceSegments& t, bool want_norm, const int32_t* skip,
                          double* result = nullptr);
bool optimizer_step_graph_reduces(const OptParams& structure, const DeviceSegments& t, bool want_norm);

// The dropout family and RReLU with `call` (the Philox call word) read from a
// device uint32 when the kernel runs; increment_counters adds 1 (mod 2^32) to
// n such words, so that a graph can advance the call between replays.
void dropout_forward_graph(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream,
                           const uint32_t* call, uint32_t* keep_bits);
void dropout_backward_graph(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                            const uint32_t* call);
void dropout_mask_graph(float* mask, index_t n, float rate, uint64_t seed, uint64_t stream, const uint32_t* call);
void alpha_dropout_forward_graph(const float* x, float* y, index_t n, float rate, uint64_t seed, uint64_t stream,
                                 const uint32_t* call, uint32_t* keep_bits);
void alpha_dropout_backward_graph(const float* dy, float* dx, index_t n, float rate, uint64_t seed, uint64_t stream,
                                  const uint32_t* call);
void rrelu_forward_graph(const float* x, float* y, index_t n, float lower, float upper, bool training, uint64_t seed,
                         uint64_t stream, const uint32_t* call);
void rrelu_backward_graph(const float* x, const float* dy, float* dx, index_t n, float lower, float upper,
                          bool training, uint64_t seed, uint64_t stream, const uint32_t* call);
void increment_counters(uint32_t* counters, index_t n);

// Where sparse_categorical_crossentropy_graph leaves its results (device
// memory, read back by the host after a replay). Accumulating, the sums run
// over the steps since the last reset_loss_scalars.
struct LossScalars {
  double total;         // sum of the row losses
  int64_t hits;         // rows whose argmax equals the label
  int64_t rows;         // rows summed
  int64_t steps;        // calls summed
  uint64_t first_bad;   // kNoBadLabel, or the row of the first bad label (of the first call that had one)
  int64_t bad_label;    // that label
  int64_t bad_cols;     // and the class count of that call
  int32_t bad;          // 1 when the last call found a bad label (optimizer_step_graph's skip), else 0
  int32_t unused;
  // The step's (penalty, squared norm) when optimizer_step_graph was given this
  // LossScalars: one host copy then reads the loss and the penalty together.
  // An overwriting loss call zeroes them (the step's optimizer writes after it).
  double penalty;
  double sq_norm;
};
static_assert(offsetof(LossScalars, sq_norm) == offsetof(LossScalars, penalty) + sizeof(double),
              "optimizer_step_graph writes (penalty, squared norm) as two consecutive doubles");
constexpr uint64_t kNoBadLabel = ~uint64_t(0);
// As sparse_categorical_crossentropy (same kernels, so the same loss and grad),
// without returning: overwrites *out (accumulate: adds to it). A bad label
// writes nothing but out->bad and the first_bad fields.
void sparse_categorical_crossentropy_graph(const float* pred, const int32_t* labels, float* grad, index_t rows,
                                           index_t cols, bool from_logits, LossScalars* out, bool accumulate);
// Zero sums, no bad label (queued on the stream; capturable).
void reset_loss_scalars(LossScalars* out);
// The InvalidInput both sparse cross-entropies raise for a label out of [0, cols).
[[noreturn]] void throw_bad_label(int64_t label, uint64_t row, int64_t cols);

}  // namespace cuda
}  // namespace deepcore
