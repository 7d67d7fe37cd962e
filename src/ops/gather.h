// Batch assembly: copy the rows named by an index vector into a reused buffer.
#pragma once
#include <cstddef>
#include <string>

#include "ops/common.h"

namespace deepcore {

// dst[i, :] = src[idx[i], :] for i in [0, n); each row is row_bytes long.
// Throws InvalidInput for an index outside [0, src_rows).
void gather_rows(const void* src, index_t src_rows, size_t row_bytes, const int64_t* idx, index_t n, void* dst);

// The check gather_rows makes before copying anything (host indices; shared
// by the CPU kernel and the CUDA twin): InvalidInput naming the first index
// outside [0, src_rows) and its position.
inline void check_gather_indices(const int64_t* idx, index_t n, index_t src_rows) {
  for (index_t i = 0; i < n; ++i)
    if (idx[i] < 0 || idx[i] >= src_rows)
      throw InvalidInput("index " + std::to_string(idx[i]) + " at position " + std::to_string(i) +
                         " is out of range: expected [0, " + std::to_string(src_rows) + ")");
}

}  // namespace deepcore
