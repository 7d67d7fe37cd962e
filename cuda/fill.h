// Fills device memory with one value (DeviceBuffer's `buf[key] = scalar`).
#pragma once
#include <cstddef>
#include <cstdint>

#include "ops/common.h"

namespace deepcore {
namespace cuda {

// dst[i] = the low `itemsize` bytes of `bits` (itemsize 4 or 8), i < n, on
// deepcore's stream; a memset when the pattern is all zeros. dst must be
// aligned to itemsize.
void fill(void* dst, index_t n, size_t itemsize, uint64_t bits);

}  // namespace cuda
}  // namespace deepcore
