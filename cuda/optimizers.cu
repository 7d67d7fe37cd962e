// CUDA optimizer updates: the twin of src/cpu/optimizers.cpp, op for op.
#include <cmath>

#include "kernels.h"
#include "launch.cuh"

namespace deepcore {
namespace cuda {
namespace {

// As on the CPU: a velocity that decays geometrically ends up denormal; flush
// it to zero so that both backends keep the same state.
__device__ __forceinline__ float flush_denormal(float v) { return fabsf(v) < 1.17549435e-38f ? 0.0f : v; }

// Keras SGD, one thread per parameter:
//   momentum == 0:  w <- w - lr g
//   else:           v <- momentum v - lr g
//                   w <- w + v                      (classical)
//                   w <- w + momentum v - lr g      (Nesterov)
__global__ void sgd_update_kernel(float* w, const float* g, float* v, index_t n, float lr, float mom, bool nesterov) {
  for (index_t i = grid_index(); i < n; i += grid_stride()) {
    if (!v || mom == 0.0f) {
      w[i] -= lr * g[i];
    } else {
      const float vi = flush_denormal(mom * v[i] - lr * g[i]);
      v[i] = vi;
      w[i] += nesterov ? mom * vi - lr * g[i] : vi;
    }
  }
}

}  // namespace

void sgd_update(float* w, const float* g, float* velocity, index_t n, float lr, float momentum, bool nesterov) {
  if (n == 0) return;
  sgd_update_kernel<<<blocks_for(n), kThreads>>>(w, g, velocity, n, lr, momentum, nesterov);
  check_launch("sgd_update_kernel");
}

}  // namespace cuda
}  // namespace deepcore
