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

// Work below this many elements stays on one thread: an OpenMP fork costs a
// few microseconds, more than the loop itself for small tensors.
constexpr index_t kParallelThreshold = 1 << 20;

}  // namespace deepcore
