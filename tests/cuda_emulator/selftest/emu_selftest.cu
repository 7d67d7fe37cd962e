// Self-test of the CUDA host emulator (not a GPU test): the scheduler's block
// and warp semantics, launch argument capture, graph capture and replay, and
// the detection of kernel bugs. Built by ../CMakeLists.txt, run by ../run_tests.sh.
//
//   emu_selftest            runs the checks, prints "ok" (DEEPCORE_EMU_ORDER=reverse: in reverse order)
//   emu_selftest BUG        runs a kernel with that bug (divergent_barrier,
//                           early_exit_shuffle, deadlock; and in race-checker
//                           builds tree_sum, blocks_add, shuffle_not_a_fence,
//                           read_then_atomic, init_then_atomic, reader_slots,
//                           uninit_read; with DEEPCORE_EMU_DEVICES >= 2
//                           other_device_pointer);
//                           the emulator must abort naming it
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CHECK(c)                                                     \
  do {                                                               \
    if (!(c)) {                                                      \
      std::printf("FAILED %s:%d: %s\n", __FILE__, __LINE__, #c);     \
      std::exit(1);                                                  \
    }                                                                \
  } while (0)

// Block sum through warp shuffles and shared memory, as cuda/launch.cuh does.
__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__global__ void block_sum_kernel(const float* x, int n, float* out) {
  __shared__ float part[32];
  float v = 0.0f;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v += x[i];
  v = warp_sum(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
  }
}

// Warps run different numbers of shuffle rounds: warp w does w + 1 rounds.
__global__ void uneven_warps_kernel(int* out) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int v = lane;
  for (int r = 0; r <= warp; ++r) v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;  // lane ^ 1 after an odd number of rounds, lane after an even one
}

template <class T>
__global__ void fill_kernel(T* p, int n, T v) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) p[i] = v;
}

__global__ void add_from_device_kernel(float* p, int n, const float* scalar) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] += *scalar;
}

__global__ void divergent_barrier_kernel(float* p) {
  if (threadIdx.x < 16) return;
  __syncthreads();
  p[threadIdx.x] = 1.0f;
}
__global__ void early_exit_shuffle_kernel(float* p) {
  if (threadIdx.x == 5) return;
  p[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
__global__ void deadlock_kernel(float* p) {
  if (threadIdx.x % 32 == 0) {
    __syncthreads();
  } else {
    p[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);  // lane 0 never comes
    __syncthreads();
  }
}

// Block 0 writes its shared word; every block then reports what it found
// there before writing: shared memory starts undefined in each block.
__global__ void stale_shared_kernel(float* seen) {
  __shared__ float word;
  if (threadIdx.x == 0) seen[blockIdx.x] = word, word = 1.0f;
}
// The same in a template (GCC ignores a section attribute on a template's
// static locals: the shared memory of template kernels must be refilled too).
template <class T>
__global__ void stale_shared_template_kernel(T* seen) {
  __shared__ T word[2];
  if (threadIdx.x == 0) seen[blockIdx.x] = word[1], word[1] = T(1);
}

// A race on purpose: every thread of every block writes its own index into
// one word, so the last thread to run wins: (grid, block) (1, 63) in index
// order, (0, 0) with DEEPCORE_EMU_ORDER=reverse.
__global__ void last_writer_kernel(int* who) { *who = blockIdx.x * blockDim.x + threadIdx.x; }

// Races the race checker (DEEPCORE_EMU_RACECHECK builds) must report, and
// their correct versions, which it must accept.
// A shared-memory tree sum whose rounds are separated by __syncthreads only
// when `synced`: without, thread t reads part[t + s] in the round that
// thread t + s writes it.
__global__ void tree_sum_kernel(const float* x, float* out, bool synced) {
  __shared__ float part[64];
  part[threadIdx.x] = x[threadIdx.x];
  if (synced) __syncthreads();
  for (unsigned s = 32; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    if (synced) __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}
// Every block adds into out[0]: a race between blocks unless atomic.
__global__ void blocks_add_kernel(float* out, bool atomic) {
  if (threadIdx.x != 0) return;
  if (atomic)
    atomicAdd(out, 1.0f);
  else
    out[0] += 1.0f;
}
// Thread 0 reads the word, then every thread adds into it atomically with no
// barrier: thread 0's plain read races with the others' atomics (with
// `synced`, a __syncthreads between them makes it correct).
__global__ void read_then_atomic_kernel(int* x, int* out, bool synced) {
  if (threadIdx.x == 0) out[0] = x[0];
  if (synced) __syncthreads();
  atomicAdd(x, 1);
}
// Thread 0 zeroes a counter, then lane 0 of each warp adds to it: the
// __syncwarp orders warp 0 only, so warp 1's atomic races with the zeroing.
__global__ void init_then_atomic_kernel(int* x) {
  if (threadIdx.x == 0) x[0] = 0;
  __syncwarp();
  if (threadIdx.x % 32 == 0) atomicAdd(x, 1);
}
// One block of 64: threads 0 and 32 (another warp) read the word, then thread
// 1; warp 0's __syncwarp orders threads 0 and 1 before thread 30's write, but
// not thread 32: a race the checker must still see after the third read.
__global__ void reader_slots_kernel(int* x, int* out) {
  const int t = threadIdx.x;
  int v = 0;
  if (t == 0 || t == 32) v += x[0];
  if (t == 1) v += x[0];
  if (t < 32) {
    __syncwarp();
    if (t == 30) x[0] = 1;
  }
  out[t] = v;
}
// Correct: thread 0 writes, `rounds` barriers, thread 1 reads (more barriers
// than a 16-bit interval counter holds).
__global__ void many_barriers_kernel(int* x, int* out, int rounds) {
  if (threadIdx.x == 0) x[0] = 5;
  for (int i = 0; i < rounds; ++i) __syncthreads();
  if (threadIdx.x == 1) out[0] = x[0];
}
// A __shared__ variable at namespace scope (registered during static
// initialization) and a volatile one.
__shared__ float file_scope_word[32];
__global__ void file_scope_shared_kernel(float* out) {
  __shared__ volatile float mirror[32];
  file_scope_word[threadIdx.x] = float(threadIdx.x);
  mirror[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[blockIdx.x * 32 + threadIdx.x] = file_scope_word[31 - threadIdx.x] + mirror[threadIdx.x];
}

// Reads device memory: the race checker's initcheck reports it when nothing wrote it.
__global__ void uninit_read_kernel(const float* p, float* out) { out[threadIdx.x] = p[threadIdx.x] + 1.0f; }
// Lanes write their shared word, then read their neighbour's: a shuffle in
// between exchanges registers but orders no memory; __syncwarp does.
__global__ void shuffle_not_a_fence_kernel(float* out, bool syncwarp) {
  __shared__ float word[32];
  word[threadIdx.x] = float(threadIdx.x);
  float v = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  if (syncwarp) __syncwarp();
  out[threadIdx.x] = v + word[threadIdx.x ^ 1];
}

// Bug (DEEPCORE_EMU_DEVICES >= 2): `elsewhere` is memory of another device.
__global__ void other_device_pointer_kernel(float* out, const float* elsewhere) {
  out[threadIdx.x] = elsewhere[threadIdx.x];
}

// Several devices (DEEPCORE_EMU_DEVICES >= 2): memory, streams, events and
// graphs belong to the device current at their creation; launches must go to
// a stream of the current device; copies may name any device's memory.
void check_devices(float* d0) {
  int n = 0, cur = -1;
  CHECK(cudaGetDeviceCount(&n) == cudaSuccess);
  if (n < 2) return;
  CHECK(cudaSetDevice(n) == cudaErrorInvalidDevice && cudaGetLastError() == cudaErrorInvalidDevice);
  CHECK(cudaSetDevice(1) == cudaSuccess && cudaGetDevice(&cur) == cudaSuccess && cur == 1);
  float* p1 = nullptr;
  cudaStream_t s1;
  cudaEvent_t e1;
  CHECK(cudaMalloc(&p1, 256 * sizeof(float)) == cudaSuccess);
  CHECK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking) == cudaSuccess);
  CHECK(cudaEventCreate(&e1) == cudaSuccess);
  size_t free1 = 0, free0 = 0, total = 0;
  CHECK(cudaMemGetInfo(&free1, &total) == cudaSuccess);
  CHECK(cudaSetDevice(0) == cudaSuccess);
  CHECK(cudaMemGetInfo(&free0, &total) == cudaSuccess);
  CHECK(total - free1 == 256 * sizeof(float));  // cuda:1 holds p1 alone
  CHECK(total - free0 > 4096 * sizeof(float));   // cuda:0 holds the rest
  cudaPointerAttributes attr;
  CHECK(cudaPointerGetAttributes(&attr, p1) == cudaSuccess && attr.device == 1);
  CHECK(cudaPointerGetAttributes(&attr, d0) == cudaSuccess && attr.device == 0);
  // A launch on cuda:1's stream while cuda:0 is current fails, and runs nothing.
  uneven_warps_kernel<<<1, 32, 0, s1>>>(reinterpret_cast<int*>(p1));
  CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle);
  CHECK(cudaStreamSynchronize(s1) == cudaSuccess);
  unsigned untouched[32];
  CHECK(cudaMemcpy(untouched, p1, sizeof(untouched), cudaMemcpyDeviceToHost) == cudaSuccess);
  for (unsigned u : untouched) CHECK(u == 0xffffffffu);  // as cudaMalloc left it
  // Stream 0 is the current device's: cuda:1's event cannot be recorded there now.
  CHECK(cudaEventRecord(e1, nullptr) == cudaErrorInvalidResourceHandle);
  CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle);
  cudaStream_t s0;
  cudaEvent_t e0;
  CHECK(cudaStreamCreateWithFlags(&s0, cudaStreamNonBlocking) == cudaSuccess);
  CHECK(cudaEventCreate(&e0) == cudaSuccess);
  CHECK(cudaEventRecord(e0, s1) == cudaErrorInvalidResourceHandle);  // event and stream of different devices
  CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle);
  // Copies between devices (and on another device's stream) are fine.
  std::vector<float> h(256), back(256);
  for (int i = 0; i < 256; ++i) h[i] = float(i);
  CHECK(cudaMemcpyAsync(p1, h.data(), 256 * sizeof(float), cudaMemcpyHostToDevice, s1) == cudaSuccess);
  CHECK(cudaMemcpyAsync(d0, p1, 256 * sizeof(float), cudaMemcpyDeviceToDevice, s1) == cudaSuccess);
  CHECK(cudaStreamSynchronize(s1) == cudaSuccess);
  CHECK(cudaMemcpy(back.data(), d0, 256 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(back == h);
  // On its own device the stream runs kernels and records events; a graph
  // captured there replays only there.
  CHECK(cudaSetDevice(1) == cudaSuccess);
  CHECK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  uneven_warps_kernel<<<1, 32, 0, s1>>>(reinterpret_cast<int*>(p1));
  cudaGraph_t g;
  cudaGraphExec_t x;
  CHECK(cudaStreamEndCapture(s1, &g) == cudaSuccess && cudaGraphInstantiate(&x, g, 0) == cudaSuccess);
  CHECK(cudaGraphLaunch(x, s1) == cudaSuccess && cudaEventRecord(e1, s1) == cudaSuccess);
  CHECK(cudaEventSynchronize(e1) == cudaSuccess);
  CHECK(cudaGraphLaunch(x, s0) == cudaErrorInvalidResourceHandle);  // s0 is cuda:0's
  CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle);
  int lanes[32];
  CHECK(cudaMemcpy(lanes, p1, sizeof(lanes), cudaMemcpyDeviceToHost) == cudaSuccess);
  for (int t = 0; t < 32; ++t) CHECK(lanes[t] == (t ^ 1));
  CHECK(cudaGraphExecDestroy(x) == cudaSuccess && cudaGraphDestroy(g) == cudaSuccess);
  CHECK(cudaSetDevice(0) == cudaSuccess);
  CHECK(cudaFree(p1) == cudaSuccess);  // freed with another device current
  CHECK(cudaStreamDestroy(s0) == cudaSuccess && cudaStreamDestroy(s1) == cudaSuccess);
  CHECK(cudaEventDestroy(e0) == cudaSuccess && cudaEventDestroy(e1) == cudaSuccess);
  CHECK(cudaGetDevice(&cur) == cudaSuccess && cur == 0);
}

int main(int argc, char** argv) {
  float* d = nullptr;
  CHECK(cudaMalloc(&d, 4096 * sizeof(float)) == cudaSuccess);
  if (argc > 1) {
    CHECK(cudaMemset(d, 0, 4096 * sizeof(float)) == cudaSuccess);  // only uninit_read reads unwritten memory
    if (!std::strcmp(argv[1], "divergent_barrier")) divergent_barrier_kernel<<<1, 64>>>(d);
    if (!std::strcmp(argv[1], "early_exit_shuffle")) early_exit_shuffle_kernel<<<1, 32>>>(d);
    if (!std::strcmp(argv[1], "deadlock")) deadlock_kernel<<<1, 64>>>(d);
    if (!std::strcmp(argv[1], "tree_sum")) tree_sum_kernel<<<2, 64>>>(d, d + 128, false);
    if (!std::strcmp(argv[1], "blocks_add")) blocks_add_kernel<<<3, 32>>>(d, false);
    if (!std::strcmp(argv[1], "shuffle_not_a_fence")) shuffle_not_a_fence_kernel<<<1, 32>>>(d, false);
    if (!std::strcmp(argv[1], "read_then_atomic")) read_then_atomic_kernel<<<1, 32>>>(reinterpret_cast<int*>(d), reinterpret_cast<int*>(d) + 64, false);
    if (!std::strcmp(argv[1], "init_then_atomic")) init_then_atomic_kernel<<<1, 64>>>(reinterpret_cast<int*>(d));
    if (!std::strcmp(argv[1], "reader_slots")) reader_slots_kernel<<<1, 64>>>(reinterpret_cast<int*>(d), reinterpret_cast<int*>(d) + 64);
    if (!std::strcmp(argv[1], "other_device_pointer")) {
      float* elsewhere = nullptr;  // on cuda:1, handed to a kernel launched on cuda:0
      CHECK(cudaSetDevice(1) == cudaSuccess && cudaMalloc(&elsewhere, 64 * sizeof(float)) == cudaSuccess);
      CHECK(cudaSetDevice(0) == cudaSuccess);
      other_device_pointer_kernel<<<1, 32>>>(d, elsewhere);
    }
    if (!std::strcmp(argv[1], "uninit_read")) {
      float* fresh = nullptr;
      CHECK(cudaMalloc(&fresh, 64 * sizeof(float)) == cudaSuccess);
      CHECK(cudaMemset(fresh, 0, 31 * sizeof(float)) == cudaSuccess);  // lane 31 reads a float nothing wrote
      uninit_read_kernel<<<1, 32>>>(fresh, d);
    }
    (void)cudaDeviceSynchronize();  // the launch ran (deferred work runs when waited for)
    std::printf("the emulator did not report %s\n", argv[1]);
    return 0;  // the caller expects an abort
  }
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);

  // Block reduction: 3 blocks of 256 over 3000 elements.
  std::vector<float> h(3000);
  double want = 0;
  for (int i = 0; i < 3000; ++i) h[i] = float(i % 7), want += h[i];
  float* out = nullptr;
  CHECK(cudaMalloc(&out, 3 * sizeof(float)) == cudaSuccess);
  CHECK(cudaMemcpyAsync(d, h.data(), 3000 * sizeof(float), cudaMemcpyHostToDevice, s) == cudaSuccess);
  block_sum_kernel<<<3, 256, 0, s>>>(d, 3000, out);
  CHECK(cudaGetLastError() == cudaSuccess);
  float parts[3];
  CHECK(cudaMemcpyAsync(parts, out, sizeof(parts), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(double(parts[0]) + parts[1] + parts[2] == want);

  // Warps with different numbers of exchanges.
  int* lanes = nullptr;
  CHECK(cudaMalloc(&lanes, 128 * sizeof(int)) == cudaSuccess);
  uneven_warps_kernel<<<1, 128, 0, s>>>(lanes);
  int hl[128];
  CHECK(cudaMemcpyAsync(hl, lanes, sizeof(hl), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  for (int t = 0; t < 128; ++t) CHECK(hl[t] == ((t / 32) % 2 == 0 ? (t % 32) ^ 1 : t % 32));

  // Shared memory starts as NaN in every block, whatever the last block left;
  // so does a new allocation (a kernel reading what nothing wrote sees NaN).
  float* seen = nullptr;
  CHECK(cudaMalloc(&seen, 3 * sizeof(float)) == cudaSuccess);
  float hs[3] = {0, 0, 0};
  CHECK(cudaMemcpyAsync(hs, seen, sizeof(hs), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  for (float v : hs) CHECK(v != v);
  stale_shared_kernel<<<3, 32, 0, s>>>(seen);
  CHECK(cudaMemcpyAsync(hs, seen, sizeof(hs), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  for (float v : hs) CHECK(v != v);
  for (int rep = 0; rep < 2; ++rep) {  // the first launch registers the variable, the second reuses it
    stale_shared_template_kernel<<<3, 32, 0, s>>>(seen);
    CHECK(cudaMemcpyAsync(hs, seen, sizeof(hs), cudaMemcpyDeviceToHost, s) == cudaSuccess);
    for (float v : hs) CHECK(v != v);
  }

  // Deferred work (unless DEEPCORE_EMU_DEFERRED=0): a copy into pinned memory
  // lands when the host waits for it; a pinned source is read when the copy
  // runs, a pageable one at the call; a stream waiting for another's event
  // runs that stream's work first.
  const char* dflag = std::getenv("DEEPCORE_EMU_DEFERRED");
  const bool deferred = !(dflag && !std::strcmp(dflag, "0"));
  float* pin = nullptr;
  CHECK(cudaHostAlloc(reinterpret_cast<void**>(&pin), 4 * sizeof(float), 0) == cudaSuccess);
  pin[0] = 0.0f;
  fill_kernel<<<1, 32, 0, s>>>(d, 4, 7.0f);
  CHECK(cudaMemcpyAsync(pin, d, 4 * sizeof(float), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(pin[0] == (deferred ? 0.0f : 7.0f));
  cudaEvent_t ev;
  CHECK(cudaEventCreate(&ev) == cudaSuccess);
  CHECK(cudaEventRecord(ev, s) == cudaSuccess);
  CHECK(cudaEventSynchronize(ev) == cudaSuccess);
  CHECK(pin[0] == 7.0f);
  pin[0] = 1.0f;
  CHECK(cudaMemcpyAsync(d, pin, sizeof(float), cudaMemcpyHostToDevice, s) == cudaSuccess);
  pin[0] = 2.0f;  // before the copy ran: a GPU may copy either value
  float back = 0.0f;
  CHECK(cudaMemcpyAsync(&back, d, sizeof(float), cudaMemcpyDeviceToHost, s) == cudaSuccess);  // pageable: waits
  CHECK(back == (deferred ? 2.0f : 1.0f));
  float src = 3.0f;
  CHECK(cudaMemcpyAsync(d, &src, sizeof(float), cudaMemcpyHostToDevice, s) == cudaSuccess);
  src = 4.0f;  // pageable: staged at the call
  CHECK(cudaMemcpyAsync(&back, d, sizeof(float), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(back == 3.0f);
  cudaStream_t s2;
  CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking) == cudaSuccess);
  fill_kernel<<<1, 32, 0, s>>>(d, 4, 5.0f);
  CHECK(cudaEventRecord(ev, s) == cudaSuccess);
  CHECK(cudaStreamWaitEvent(s2, ev, 0) == cudaSuccess);
  CHECK(cudaMemcpyAsync(pin, d, 4 * sizeof(float), cudaMemcpyDeviceToHost, s2) == cudaSuccess);
  CHECK(cudaStreamSynchronize(s2) == cudaSuccess);
  CHECK(pin[0] == 5.0f);
  CHECK(cudaStreamDestroy(s2) == cudaSuccess);
  // The legacy stream and a blocking stream wait for each other's earlier
  // work; a non-blocking stream (s) is not waited for by the legacy stream.
  cudaStream_t blocking;
  CHECK(cudaStreamCreate(&blocking) == cudaSuccess);
  fill_kernel<<<1, 32, 0, blocking>>>(d, 4, 6.0f);
  float h4[4] = {0, 0, 0, 0};
  CHECK(cudaMemcpy(h4, d, sizeof(h4), cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(h4[0] == 6.0f);
  fill_kernel<<<1, 32>>>(d, 4, 9.0f);  // the legacy stream
  CHECK(cudaMemcpyAsync(h4, d, sizeof(h4), cudaMemcpyDeviceToHost, blocking) == cudaSuccess);
  CHECK(h4[0] == 9.0f);
  fill_kernel<<<1, 32, 0, s>>>(d, 4, 8.0f);  // non-blocking: not waited for
  CHECK(cudaMemcpy(h4, d, sizeof(h4), cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(h4[0] == (deferred ? 9.0f : 8.0f));
  CHECK(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(cudaStreamDestroy(blocking) == cudaSuccess);
  CHECK(cudaEventDestroy(ev) == cudaSuccess);
  CHECK(cudaFreeHost(pin) == cudaSuccess);

#if !DEEPCORE_EMU_RACECHECK  // it is a race, which the race checker reports
  // The order blocks and threads run in.
  const char* order = std::getenv("DEEPCORE_EMU_ORDER");
  const bool reverse = order && !std::strcmp(order, "reverse");
  last_writer_kernel<<<2, 64, 0, s>>>(lanes);
  CHECK(cudaMemcpyAsync(hl, lanes, sizeof(int), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(hl[0] == (reverse ? 0 : 127));
#endif

  // The correct versions of the race checker's racy kernels (run in every build).
  std::vector<float> ones(256, 1.0f);
  CHECK(cudaMemcpyAsync(d, ones.data(), 256 * sizeof(float), cudaMemcpyHostToDevice, s) == cudaSuccess);
  tree_sum_kernel<<<2, 64, 0, s>>>(d, d + 200, true);
  blocks_add_kernel<<<3, 32, 0, s>>>(d + 202, true);  // d[202] == 1 before: 4 after
  shuffle_not_a_fence_kernel<<<1, 32, 0, s>>>(d + 300, true);
  float* fresh = nullptr;
  CHECK(cudaMalloc(&fresh, 32 * sizeof(float)) == cudaSuccess);
  CHECK(cudaMemsetAsync(fresh, 0, 32 * sizeof(float), s) == cudaSuccess);
  uninit_read_kernel<<<1, 32, 0, s>>>(fresh, d + 400);  // every float written first: no report
  int* words = reinterpret_cast<int*>(d + 500);
  CHECK(cudaMemsetAsync(words, 0, 8 * sizeof(int), s) == cudaSuccess);
  read_then_atomic_kernel<<<1, 32, 0, s>>>(words, words + 1, true);
  many_barriers_kernel<<<1, 2, 0, s>>>(words + 2, words + 3, 70000);
  file_scope_shared_kernel<<<2, 32, 0, s>>>(d + 600);
  int hw[4];
  float hf[64];
  CHECK(cudaMemcpyAsync(hw, words, sizeof(hw), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(cudaMemcpyAsync(hf, d + 600, sizeof(hf), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(hw[0] == 32 && hw[1] == 0 && hw[3] == 5);
  for (int t = 0; t < 64; ++t) CHECK(hf[t] == float(31 - t % 32) + float(t % 32));
  float sums[3], shuffled[32];
  CHECK(cudaMemcpyAsync(sums, d + 200, sizeof(sums), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(cudaMemcpyAsync(shuffled, d + 300, sizeof(shuffled), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(sums[0] == 64.0f && sums[1] == 64.0f && sums[2] == 4.0f);
  for (int t = 0; t < 32; ++t) CHECK(shuffled[t] == 1.0f + float(t ^ 1));

  // Launch errors are reported by cudaGetLastError once, and do not stick.
  fill_kernel<<<1, 2048, 0, s>>>(d, 10, 1.0f);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(cudaGetLastError() == cudaSuccess);

  // Capture: nothing runs; replay uses the captured arguments and reads device memory at replay time.
  float* scalar = nullptr;
  CHECK(cudaMalloc(&scalar, sizeof(float)) == cudaSuccess);
  fill_kernel<<<4, 256, 0, s>>>(d, 1000, 0.0f);
  float one = 1.0f;
  CHECK(cudaMemcpyAsync(scalar, &one, sizeof(float), cudaMemcpyHostToDevice, s) == cudaSuccess);
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  int n = 1000;
  add_from_device_kernel<<<4, 256, 0, s>>>(d, n, scalar);
  n = 5;  // the captured launch keeps n == 1000
  float pageable = 0;
  CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);  // refused, and invalidates
  cudaGraph_t g = nullptr;
  CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && g == nullptr);
  CHECK(cudaGetLastError() == cudaErrorStreamCaptureInvalidated);
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  add_from_device_kernel<<<4, 256, 0, s>>>(d, 1000, scalar);
  CHECK(cudaMemcpyAsync(&pageable, d, sizeof(float), cudaMemcpyDeviceToHost, s) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  add_from_device_kernel<<<4, 256, 0, s>>>(d, n == 5 ? 1000 : 0, scalar);
  void* m = nullptr;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  CHECK(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess);
  CHECK(cudaMalloc(&m, 16) == cudaSuccess);  // allowed in relaxed mode
  CHECK(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess);
  CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g != nullptr);
  cudaGraphExec_t x = nullptr;
  CHECK(cudaGraphInstantiate(&x, g, 0) == cudaSuccess);
  CHECK(cudaGraphDestroy(g) == cudaSuccess);
  float hd[1000];
  CHECK(cudaMemcpyAsync(hd, d, sizeof(hd), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  for (float v : hd) CHECK(v == 0.0f);  // the capture ran nothing
  float two = 2.0f;
  CHECK(cudaMemcpyAsync(scalar, &two, sizeof(float), cudaMemcpyHostToDevice, s) == cudaSuccess);
  CHECK(cudaGraphLaunch(x, s) == cudaSuccess);
  CHECK(cudaGraphLaunch(x, s) == cudaSuccess);
  CHECK(cudaMemcpyAsync(hd, d, sizeof(hd), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  for (float v : hd) CHECK(v == 4.0f);  // two replays, each reading *scalar == 2 at replay time
  CHECK(cudaGraphExecDestroy(x) == cudaSuccess);
  check_devices(d);
  std::printf("ok\n");
  return 0;
}
