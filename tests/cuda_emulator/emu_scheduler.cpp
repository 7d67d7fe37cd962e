// Host emulator of CUDA kernel execution (a test tool; nothing here runs on a
// GPU): the fiber scheduler behind emu_device.h.
//
// A launch runs its blocks one after another on the calling OS thread. The
// threads of a block are fibers (ucontext): a fiber runs emulated threads one
// after another for as long as none of them waits, so a kernel without
// barriers runs straight through on one fiber per block; a thread that reaches
// __syncthreads, __syncwarp or __shfl_xor_sync parks, and the scheduler starts
// the next thread on a fresh fiber. A block barrier opens when every thread of
// the block has arrived; a warp exchange completes when the 32 lanes of the
// warp have arrived (per warp: warps may run different numbers of loop
// iterations). A barrier that can never open (threads of the block exited, or
// wait at different kinds of barrier) is a bug in the kernel: the emulator
// prints what every thread is doing, names the kernel, and aborts.
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <vector>

#include "emu_device.h"
#include "emu_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define DEEPCORE_EMU_ASAN 1
#include <sanitizer/common_interface_defs.h>
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DEEPCORE_EMU_ASAN 1
#include <sanitizer/common_interface_defs.h>
#endif
#endif

namespace deepcore_emu {

thread_local uint3 t_thread_idx;
thread_local uint3 t_block_idx;
thread_local dim3 t_block_dim;
thread_local dim3 t_grid_dim;

namespace {

#if DEEPCORE_EMU_ASAN
constexpr size_t kStackBytes = size_t(1) << 20;
#else
constexpr size_t kStackBytes = size_t(256) << 10;
#endif
constexpr size_t kGuardBytes = 4096;

enum class Wait { Running, Block, Warp, Done };
enum WarpOp { kNoOp = 0, kShuffle = 1, kSyncwarp = 2 };

struct Fiber {
  ucontext_t ctx;
  char* stack = nullptr;  // usable part (above the guard page)
  int thread = -1;        // the emulated thread it runs now
  Wait wait = Wait::Running;
#if DEEPCORE_EMU_ASAN
  void* fake_stack = nullptr;
#endif
};

struct WarpState {
  int size = 0;     // lanes that exist (the last warp of a block may be partial)
  int arrived = 0;  // lanes waiting at the current warp operation
  int exited = 0;
  int op = kNoOp;
  unsigned mask = 0;
  uint64_t buf[32] = {};
  uint64_t result[32] = {};
  std::vector<Fiber*> waiting;
};

struct BlockRun {
  const char* kernel = nullptr;
  void (*body)(void*) = nullptr;
  void* args = nullptr;
  int nthreads = 0;
  int next_thread = 0;
  int exited = 0;
  int barrier_arrived = 0;
  std::vector<Fiber*> barrier_waiting;
  std::vector<WarpState> warps;
  std::deque<Fiber*> ready;
  std::vector<Fiber*> live;
  Fiber* current = nullptr;
  ucontext_t scheduler;
  std::vector<int> thread_state;  // per thread: 0 not started, 1 running, 2 barrier, 3 warp op, 4 exited
#if DEEPCORE_EMU_ASAN
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;
#endif
};

thread_local BlockRun* t_run = nullptr;
thread_local std::vector<char*> t_free_stacks;

char* take_stack() {
  if (!t_free_stacks.empty()) {
    char* s = t_free_stacks.back();
    t_free_stacks.pop_back();
    return s;
  }
  void* m = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (m == MAP_FAILED) fatal("the emulator could not map a fiber stack");
  mprotect(m, kGuardBytes, PROT_NONE);  // a stack overflow faults instead of corrupting memory
  return static_cast<char*>(m) + kGuardBytes;
}

void set_thread_idx(int t) {
  const dim3 b = t_block_dim;
  t_thread_idx = uint3{unsigned(t) % b.x, unsigned(t) / b.x % b.y, unsigned(t) / (b.x * b.y)};
}

const char* state_name(int s) {
  static const char* names[] = {"not started", "running", "waiting at __syncthreads",
                                "waiting at a warp operation", "exited"};
  return names[s];
}

[[noreturn]] void kernel_bug(const BlockRun& r, const std::string& what) {
  std::string msg = "deepcore host emulator: kernel " + std::string(r.kernel) + ", block (" +
                    std::to_string(t_block_idx.x) + "," + std::to_string(t_block_idx.y) + "," +
                    std::to_string(t_block_idx.z) + "): " + what + "\n  threads of the block:";
  // Runs of threads in the same state, so that 256 threads fit in a few lines.
  for (int t = 0; t < r.nthreads;) {
    int u = t;
    while (u + 1 < r.nthreads && r.thread_state[u + 1] == r.thread_state[t]) ++u;
    msg += "\n    " + std::to_string(t) + (u > t ? "-" + std::to_string(u) : "") + ": " +
           state_name(r.thread_state[t]);
    t = u + 1;
  }
  fatal(msg);
}

// Fiber -> scheduler, and back when resumed.
void park(BlockRun& r, Fiber* f) {
#if DEEPCORE_EMU_ASAN
  __sanitizer_start_switch_fiber(f->wait == Wait::Done ? nullptr : &f->fake_stack, r.scheduler_stack,
                                 r.scheduler_stack_size);
#endif
  swapcontext(&f->ctx, &r.scheduler);
#if DEEPCORE_EMU_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, nullptr, nullptr);
#endif
  set_thread_idx(f->thread);
}

// Scheduler -> fiber, and back when the fiber parks or ends.
void resume(BlockRun& r, Fiber* f) {
  r.current = f;
  f->wait = Wait::Running;
  if (f->thread >= 0) set_thread_idx(f->thread), r.thread_state[f->thread] = 1;
#if DEEPCORE_EMU_ASAN
  __sanitizer_start_switch_fiber(&r.scheduler_fake_stack, f->stack, kStackBytes);
#endif
  swapcontext(&r.scheduler, &f->ctx);
#if DEEPCORE_EMU_ASAN
  __sanitizer_finish_switch_fiber(r.scheduler_fake_stack, nullptr, nullptr);
#endif
  r.current = nullptr;
}

void thread_exited(BlockRun& r, int t) {
  r.thread_state[t] = 4;
  ++r.exited;
  WarpState& w = r.warps[t / 32];
  ++w.exited;
  if (w.arrived > 0)
    kernel_bug(r, "thread " + std::to_string(t) + " exited while " + std::to_string(w.arrived) +
                      " lanes of its warp wait at a warp operation (__shfl_xor_sync/__syncwarp with a full mask "
                      "needs every lane)");
  if (r.barrier_arrived > 0)
    kernel_bug(r, "thread " + std::to_string(t) + " exited while " + std::to_string(r.barrier_arrived) +
                      " threads wait at __syncthreads (a divergent barrier)");
}

void fiber_main() {
  BlockRun& r = *t_run;
  Fiber* f = r.current;
#if DEEPCORE_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &r.scheduler_stack, &r.scheduler_stack_size);
#endif
  while (r.next_thread < r.nthreads) {
    const int t = r.next_thread++;
    f->thread = t;
    r.thread_state[t] = 1;
    set_thread_idx(t);
    r.body(r.args);
    thread_exited(r, t);
  }
  f->wait = Wait::Done;
  park(r, f);  // never resumed
  fatal("deepcore host emulator: a finished fiber was resumed");
}

Fiber* new_fiber(BlockRun& r) {
  auto* f = new Fiber();
  f->stack = take_stack();
  getcontext(&f->ctx);
  f->ctx.uc_stack.ss_sp = f->stack;
  f->ctx.uc_stack.ss_size = kStackBytes;
  f->ctx.uc_link = nullptr;
  makecontext(&f->ctx, fiber_main, 0);
  r.live.push_back(f);
  return f;
}

void run_block(BlockRun& r) {
  r.next_thread = 0;
  r.exited = 0;
  r.barrier_arrived = 0;
  r.barrier_waiting.clear();
  r.ready.clear();
  r.thread_state.assign(r.nthreads, 0);
  const int nwarps = (r.nthreads + 31) / 32;
  r.warps.assign(nwarps, WarpState());
  for (int w = 0; w < nwarps; ++w) r.warps[w].size = std::min(32, r.nthreads - 32 * w);
  for (;;) {
    Fiber* f = nullptr;
    if (!r.ready.empty()) {
      f = r.ready.front();
      r.ready.pop_front();
    } else if (r.next_thread < r.nthreads) {
      f = new_fiber(r);
    } else if (!r.live.empty()) {
      kernel_bug(r, "deadlock: no thread can run (threads wait at barriers that can never open)");
    } else {
      break;
    }
    resume(r, f);
    if (f->wait == Wait::Done) {
      t_free_stacks.push_back(f->stack);
      for (size_t i = 0; i < r.live.size(); ++i)
        if (r.live[i] == f) {
          r.live[i] = r.live.back();
          r.live.pop_back();
          break;
        }
      delete f;
    }
  }
}

BlockRun& current_run(const char* intrinsic) {
  if (!t_run || !t_run->current) fatal(std::string("deepcore host emulator: ") + intrinsic + " called outside a kernel");
  return *t_run;
}

// Waits at warp operation `op`; returns once all lanes of the warp arrived.
WarpState& warp_arrive(BlockRun& r, int op, unsigned mask, uint64_t bits, const char* what) {
  Fiber* f = r.current;
  const int t = f->thread;
  WarpState& w = r.warps[t / 32];
  const unsigned full = w.size == 32 ? 0xffffffffu : ((1u << w.size) - 1);
  if (mask != 0xffffffffu || w.size != 32)
    kernel_bug(r, std::string(what) + " with mask " + std::to_string(mask) + " in a warp of " +
                      std::to_string(w.size) + " lanes: only full warps with the full mask are emulated");
  (void)full;
  if (w.exited > 0)
    kernel_bug(r, "thread " + std::to_string(t) + " reached " + what + " after " + std::to_string(w.exited) +
                      " lanes of its warp exited");
  if (w.arrived > 0 && w.op != op)
    kernel_bug(r, "lanes of one warp wait at different warp operations (__shfl_xor_sync and __syncwarp): "
                  "divergent warp code");
  w.op = op;
  w.buf[t % 32] = bits;
  if (++w.arrived == w.size) {
    std::memcpy(w.result, w.buf, sizeof(w.buf));
    w.arrived = 0;
    for (Fiber* g : w.waiting) r.ready.push_back(g);
    w.waiting.clear();
    return w;
  }
  w.waiting.push_back(f);
  f->wait = Wait::Warp;
  r.thread_state[t] = 3;
  park(r, f);
  return w;
}

}  // namespace

void block_barrier() {
  BlockRun& r = current_run("__syncthreads");
  Fiber* f = r.current;
  if (r.exited > 0)
    kernel_bug(r, "thread " + std::to_string(f->thread) + " reached __syncthreads after " +
                      std::to_string(r.exited) + " threads of the block exited (a divergent barrier)");
  if (r.warps[f->thread / 32].arrived > 0)
    kernel_bug(r, "thread " + std::to_string(f->thread) +
                      " reached __syncthreads while lanes of its warp wait at a warp operation: divergent code");
  if (++r.barrier_arrived == r.nthreads) {
    r.barrier_arrived = 0;
    for (Fiber* g : r.barrier_waiting) r.ready.push_back(g);
    r.barrier_waiting.clear();
    return;
  }
  r.barrier_waiting.push_back(f);
  f->wait = Wait::Block;
  r.thread_state[f->thread] = 2;
  park(r, f);
}

void warp_barrier(unsigned mask) { warp_arrive(current_run("__syncwarp"), kSyncwarp, mask, 0, "__syncwarp"); }

uint64_t warp_exchange_xor(unsigned mask, uint64_t bits, int lane_mask, int width) {
  BlockRun& r = current_run("__shfl_xor_sync");
  const int lane = r.current->thread % 32;
  WarpState& w = warp_arrive(r, kShuffle, mask, bits, "__shfl_xor_sync");
  if (width <= 0 || width > 32 || (width & (width - 1)))
    kernel_bug(r, "__shfl_xor_sync with width " + std::to_string(width) + " (must be a power of 2 up to 32)");
  const int src = lane ^ lane_mask;
  if (src < 0 || src >= (lane / width + 1) * width) return bits;  // a later group: the lane's own value
  return w.result[src];
}

void run_kernel(const KernelLaunch& k) {
  if (t_run) fatal("deepcore host emulator: a kernel was launched from inside a kernel");
  BlockRun r;
  r.kernel = k.name;
  r.body = k.body;
  r.args = k.args.get();
  r.nthreads = int(k.block.x * k.block.y * k.block.z);
  t_block_dim = k.block;
  t_grid_dim = k.grid;
  t_run = &r;
  for (unsigned z = 0; z < k.grid.z; ++z)
    for (unsigned y = 0; y < k.grid.y; ++y)
      for (unsigned x = 0; x < k.grid.x; ++x) {
        t_block_idx = uint3{x, y, z};
        run_block(r);
      }
  t_run = nullptr;
}

}  // namespace deepcore_emu
