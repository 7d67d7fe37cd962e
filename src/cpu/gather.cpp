#include "ops/gather.h"
#include <cstring>
#include "cpu/parallel.h"

namespace deepcore {

void gather_rows(const void* src, index_t src_rows, size_t row_bytes, const int64_t* idx, index_t n, void* dst) {
  check_gather_indices(idx, n, src_rows);
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  const bool big = index_t(n * row_bytes) >= kGatherParallelBytes;
  parallel_chunks_if(big, n, [&](index_t i0, index_t i1) {
    for (index_t i = i0; i < i1; ++i) std::memcpy(d + i * row_bytes, s + idx[i] * row_bytes, row_bytes);
  }, 1);
}

}  // namespace deepcore
