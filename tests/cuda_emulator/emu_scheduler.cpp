// Host emulator of CUDA kernel execution (a test tool; nothing here runs on a
// GPU): the fiber scheduler behind emu_device.h.
//
// A launch runs its blocks one after another on the calling OS thread. The
// threads of a block are fibers (see switch_context): a fiber runs emulated threads one
// after another for as long as none of them waits, so a kernel without
// barriers runs straight through on one fiber per block; a thread that reaches
// __syncthreads, __syncwarp or __shfl_xor_sync parks, and the scheduler starts
// the next thread on a fresh fiber. A block barrier opens when every thread of
// the block has arrived; a warp exchange completes when the 32 lanes of the
// warp have arrived (per warp: warps may run different numbers of loop
// iterations). A barrier that can never open (threads of the block exited, or
// wait at different kinds of barrier) is a bug in the kernel: the emulator
// prints what every thread is doing, names the kernel, and aborts.
// Blocks and threads start in index order, or in reverse (DEEPCORE_EMU_ORDER).
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

// Fiber switches. On x86-64 (without ASan) a hand-written switch saves the
// callee-saved registers, MXCSR and the x87 control word on the fiber's stack
// and swaps stack pointers: swapcontext also saves the signal mask with a
// system call on every switch, which took about 40% of the test time. Under
// ASan, and on other machines, ucontext (which ASan knows how to follow).
#if defined(__x86_64__) && !DEEPCORE_EMU_ASAN
#define DEEPCORE_EMU_FAST_SWITCH 1
// deepcore_emu_switch(save, load): saves this context's stack pointer in
// *save, continues the one saved at load. deepcore_emu_fiber_start: where a
// new fiber begins (its first switch "returns" there); calls the function
// whose address make_context left in r12 (it never returns).
asm(R"(
  .text
  .p2align 4
  .globl deepcore_emu_switch
  .hidden deepcore_emu_switch
  .type deepcore_emu_switch, @function
deepcore_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size deepcore_emu_switch, .-deepcore_emu_switch

  .p2align 4
  .globl deepcore_emu_fiber_start
  .hidden deepcore_emu_fiber_start
  .type deepcore_emu_fiber_start, @function
deepcore_emu_fiber_start:
  callq *%r12
  ud2
  .size deepcore_emu_fiber_start, .-deepcore_emu_fiber_start
)");
extern "C" void deepcore_emu_switch(void** save, void* load);
extern "C" void deepcore_emu_fiber_start();
#endif

namespace deepcore_emu {

uint3 t_thread_idx;
uint3 t_block_idx;
dim3 t_block_dim;
dim3 t_grid_dim;

namespace {

#if DEEPCORE_EMU_ASAN
constexpr size_t kStackBytes = size_t(1) << 20;
#else
constexpr size_t kStackBytes = size_t(256) << 10;
#endif
constexpr size_t kGuardBytes = 4096;

enum class Wait { Running, Block, Warp, Done };
enum WarpOp { kNoOp = 0, kShuffle = 1, kSyncwarp = 2 };

#if DEEPCORE_EMU_FAST_SWITCH
struct Context {
  void* sp = nullptr;  // the saved stack pointer (deepcore_emu_switch's frame)
};
void switch_context(Context* from, Context* to) { deepcore_emu_switch(&from->sp, to->sp); }
// A context that starts entry() on [stack, stack + size): the frame that
// deepcore_emu_switch pops (MXCSR and x87 control word of this thread, six
// registers with r12 = entry), returning to deepcore_emu_fiber_start with the
// stack 16-byte aligned at its call, as the ABI wants.
void make_context(Context* c, char* stack, size_t size, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t(15);
  auto* sp = reinterpret_cast<uint64_t*>(top - 16 - 8 * 8);
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  sp[0] = uint64_t(mxcsr) | (uint64_t(fpcw) << 32);
  sp[1] = sp[2] = sp[3] = 0;                      // r15, r14, r13
  sp[4] = reinterpret_cast<uint64_t>(entry);      // r12
  sp[5] = sp[6] = 0;                              // rbx, rbp
  sp[7] = reinterpret_cast<uint64_t>(&deepcore_emu_fiber_start);
  c->sp = sp;
}
#else
struct Context {
  ucontext_t uc;
};
void switch_context(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
void make_context(Context* c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = nullptr;
  makecontext(&c->uc, entry, 0);
}
#endif

struct Fiber {
  Context ctx;
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
  Context scheduler;
  std::vector<uint3> coords;      // per thread: its threadIdx
  std::vector<int> thread_state;  // per thread: 0 not started, 1 running, 2 barrier, 3 warp op, 4 exited
#if DEEPCORE_EMU_ASAN
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;
#endif
};

// The __shared__ variables that have run (DEEPCORE_EMU_SHARED registers each
// at its first use), sorted by address, with the span they cover.
struct SharedRange {
  uintptr_t lo, hi;
};
struct SharedVariables {
  std::vector<SharedRange> ranges;
  uintptr_t lo = ~uintptr_t(0), hi = 0;
};
// A function-local static: a __shared__ variable at namespace scope registers
// during static initialization, possibly before this file's globals exist.
SharedVariables& shared_variables() {
  static SharedVariables v;
  return v;
}

// Shared memory is undefined when a block starts: 0xff bytes (NaN, -1).
void poison_shared_memory() {
  for (const SharedRange& r : shared_variables().ranges)
    std::memset(reinterpret_cast<void*>(r.lo), 0xff, r.hi - r.lo);
}

// DEEPCORE_EMU_ORDER=reverse runs the blocks of a grid and the threads of a
// block in reverse order (last first). A kernel whose result depends on the
// order in which its threads or blocks run (a missing barrier, a race between
// blocks) gives a different result in the two orders.
bool reverse_order() {
  static const bool reverse = [] {
    const char* e = std::getenv("DEEPCORE_EMU_ORDER");
    if (!e || !*e || !std::strcmp(e, "forward")) return false;
    if (!std::strcmp(e, "reverse")) return true;
    fatal(std::string("deepcore host emulator: DEEPCORE_EMU_ORDER must be forward or reverse, got ") + e);
  }();
  return reverse;
}

// The launch running now (one at a time: the runtime's lock is held).
BlockRun* t_run = nullptr;
std::vector<char*> t_free_stacks;

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

void set_thread_idx(int t) { t_thread_idx = t_run->coords[t]; }

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
  switch_context(&f->ctx, &r.scheduler);
#if DEEPCORE_EMU_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, nullptr, nullptr);
#endif
  set_thread_idx(f->thread);
  DEEPCORE_EMU_RACECHECK_CALL(thread_runs(f->thread, f->stack, kStackBytes));
}

// Scheduler -> fiber, and back when the fiber parks or ends.
void resume(BlockRun& r, Fiber* f) {
  r.current = f;
  f->wait = Wait::Running;
  if (f->thread >= 0) set_thread_idx(f->thread), r.thread_state[f->thread] = 1;
#if DEEPCORE_EMU_ASAN
  __sanitizer_start_switch_fiber(&r.scheduler_fake_stack, f->stack, kStackBytes);
#endif
  switch_context(&r.scheduler, &f->ctx);
#if DEEPCORE_EMU_ASAN
  __sanitizer_finish_switch_fiber(r.scheduler_fake_stack, nullptr, nullptr);
#endif
  DEEPCORE_EMU_RACECHECK_CALL(thread_stops());
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
  const bool reverse = reverse_order();
  while (r.next_thread < r.nthreads) {
    const int i = r.next_thread++;
    const int t = reverse ? r.nthreads - 1 - i : i;
    f->thread = t;
    r.thread_state[t] = 1;
    set_thread_idx(t);
    DEEPCORE_EMU_RACECHECK_CALL(thread_runs(t, f->stack, kStackBytes));
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
  make_context(&f->ctx, f->stack, kStackBytes, fiber_main);
  r.live.push_back(f);
  return f;
}

void run_block(BlockRun& r) {
  poison_shared_memory();
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
    // __syncwarp orders the memory accesses of the warp's lanes; a shuffle only exchanges values.
    if (op == kSyncwarp) DEEPCORE_EMU_RACECHECK_CALL(warp_barrier_opened(t / 32));
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

bool register_shared(const volatile void* p, size_t bytes) {
  const auto lo = reinterpret_cast<uintptr_t>(p);
  // Registered by the first thread to reach it, before any use.
  std::memset(reinterpret_cast<void*>(lo), 0xff, bytes);
  SharedVariables& v = shared_variables();
  v.ranges.insert(std::upper_bound(v.ranges.begin(), v.ranges.end(), lo,
                                   [](uintptr_t a, const SharedRange& r) { return a < r.lo; }),
                  SharedRange{lo, lo + bytes});
  v.lo = std::min(v.lo, lo);
  v.hi = std::max(v.hi, lo + bytes);
  return true;
}

bool in_shared_memory(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  const SharedVariables& v = shared_variables();
  if (a < v.lo || a >= v.hi) return false;
  auto it = std::upper_bound(v.ranges.begin(), v.ranges.end(), a,
                             [](uintptr_t x, const SharedRange& r) { return x < r.lo; });
  return it != v.ranges.begin() && a < (--it)->hi;
}

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
    DEEPCORE_EMU_RACECHECK_CALL(block_barrier_opened());
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
  r.coords.resize(r.nthreads);
  for (unsigned t = 0; t < unsigned(r.nthreads); ++t)
    r.coords[t] = uint3{t % k.block.x, t / k.block.x % k.block.y, t / (k.block.x * k.block.y)};
  t_block_dim = k.block;
  t_grid_dim = k.grid;
  t_run = &r;
  DEEPCORE_EMU_RACECHECK_CALL(begin_launch(k.name, k.grid, k.block));
  const unsigned long long nblocks = 1ull * k.grid.x * k.grid.y * k.grid.z;
  const bool reverse = reverse_order();
  for (unsigned long long i = 0; i < nblocks; ++i) {
    const unsigned long long b = reverse ? nblocks - 1 - i : i;
    t_block_idx = uint3{unsigned(b % k.grid.x), unsigned(b / k.grid.x % k.grid.y),
                        unsigned(b / (1ull * k.grid.x * k.grid.y))};
    DEEPCORE_EMU_RACECHECK_CALL(begin_block(uint32_t(b)));
    run_block(r);
  }
  t_run = nullptr;
  DEEPCORE_EMU_RACECHECK_CALL(end_launch());
}

}  // namespace deepcore_emu
