// Shared definitions for every op family: index type, host/device qualifiers,
// the error type kernels throw for bad input, and the dispatch attribute.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define DC_HD __host__ __device__ __forceinline__
#else
#define DC_HD inline __attribute__((always_inline))
#endif

// Hot elementwise loops are compiled for baseline x86-64, AVX2+FMA (v3) and
// AVX-512 (v4); the loader picks one at run time. Never -march=native.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define DC_MULTIVERSION __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define DC_MULTIVERSION
#endif

namespace deepcore {

using index_t = int64_t;

// Thrown by kernels for input they cannot process (a label out of range, ...).
// The bindings translate it to ValueError.
struct InvalidInput : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Parallel thresholds, all of them: work below one stays on the calling thread
// (a job on deepcore's thread pool, src/cpu/parallel.h, costs a few
// microseconds, and ~100 us on the 2-core VM when it wakes a sleeping worker:
// more than a small loop). Listed by
// name by deepcore._core.parallel_thresholds() (src/bindings.cpp), so tests can
// size their inputs just above each.

// Elements: activations, Dense epilogue, losses, BatchNorm, dropout family, RReLU, PReLU, uniform, count_nonfinite,
// the elementwise merges (output elements), repeat (output elements).
constexpr index_t kParallelThreshold = 1 << 20;
// Parameters: optimizer_step (memory-bound; 266k-parameter MLP, Adam: 185 -> 135 us per step on 2 threads).
constexpr index_t kOptimizerParallelThreshold = 1 << 17;
// Elements: philox_normal (Box-Muller's log, sqrt, sin and cos make each element dearer than a uniform).
constexpr index_t kNormalParallelThreshold = kParallelThreshold / 4;
// Bytes copied: gather_rows, concatenate (as many bytes as kParallelThreshold float32 elements).
constexpr index_t kGatherParallelBytes = 4 * kParallelThreshold;
// Channels (alpha entries): prelu_backward splits them among threads only with this many (and enough elements).
constexpr index_t kPreluBackwardParallelChannels = 64;
// Floats moved: im2col, col2im, pooling and zero padding (copies and short
// window sums, cheaper per element than an activation).
constexpr index_t kWindowParallelThreshold = 1 << 18;

}  // namespace deepcore
