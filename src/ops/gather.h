// Batch assembly: copy the rows named by an index vector into a reused buffer.
#pragma once
#include <cstddef>
#include "ops/common.h"

namespace deepcore {

// dst[i, :] = src[idx[i], :] for i in [0, n); each row is row_bytes long.
// Throws InvalidInput for an index outside [0, src_rows).
void gather_rows(const void* src, index_t src_rows, size_t row_bytes, const int64_t* idx, index_t n, void* dst);

}  // namespace deepcore
