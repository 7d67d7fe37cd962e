// Race checker of the CUDA host emulator (built with DEEPCORE_EMU_RACECHECK=ON;
// a test tool, nothing here runs on a GPU).
//
// The translated kernel sources are compiled with -fsanitize=thread, which
// makes the compiler call __tsan_read4(addr), __tsan_write8(addr), ... before
// the loads and stores that may touch memory other threads see. This file
// defines those entry points itself (the module is not linked with libtsan,
// whose model of OS threads knows nothing of blocks and barriers). While an
// emulated thread runs, each access outside its fiber's stack is compared
// with the last write and the last reads of every byte it touches, under
// CUDA's rules:
//   - two threads of one block conflict unless a __syncthreads, or a
//     __syncwarp of the warp they share, completed between the two accesses
//     (a warp shuffle exchanges registers and orders no memory);
//   - two blocks of one launch always conflict on global memory (a block
//     cannot wait for another) and never on __shared__ memory (each block has
//     its own);
//   - accesses of different launches never conflict: the emulator runs
//     launches one after another, so a race between kernels on two streams
//     that a GPU would overlap is not seen here;
//   - a conflict is two accesses of which at least one writes and not both
//     are atomic.
// The threads of a block still run one at a time (emu_scheduler.cpp), so the
// check is exact for the order they ran in, whatever order a GPU picks. Each
// launch's races are reported when it ends, with the source lines (addr2line),
// and the process aborts, as for the emulator's other kernel bugs.
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "emu_internal.h"

namespace deepcore_emu {
namespace racecheck {
namespace {

// kAtomic: a read-modify-write; kAtomicLoad, kAtomicStore: atomic loads and stores.
enum Kind : uint8_t { kNone = 0, kRead = 1, kWrite = 2, kAtomic = 3, kAtomicLoad = 4, kAtomicStore = 5 };
bool is_atomic(uint8_t k) { return k == kAtomic || k == kAtomicLoad || k == kAtomicStore; }
bool reads(uint8_t k) { return k == kRead || k == kAtomic || k == kAtomicLoad; }
bool writes(uint8_t k) { return k == kWrite || k == kAtomic || k == kAtomicStore; }

// One access: which launch, block and thread made it, in which barrier
// interval of its block and of its warp. Intervals are compared for equality
// only (a recorded access is always in the past, so a different count means
// a barrier completed since; 32 bits, so that no loop wraps them).
struct Rec {
  uint32_t launch;
  uint32_t block;
  uint32_t bgen;
  uint32_t wgen;
  uint16_t thread;
  uint8_t kind;
  uint8_t pad;
};
static_assert(sizeof(Rec) == 20, "Rec is 20 bytes");

// Per byte: the last write (or atomic), and up to two reads since it. The
// second read slot keeps a read from another warp or block than the first's
// when there is one, so that a later write by any thread is unordered with
// at least one of them whenever it is unordered with some read of the two
// warps' or blocks'.
struct Cell {
  Rec w, r1, r2;
};
constexpr int kPageBits = 12;
constexpr uintptr_t kPageBytes = uintptr_t(1) << kPageBits;
struct Page {
  Cell cells[kPageBytes];
  uint64_t* uninit;  // this page's bits of `State::uninit`, or null when it has none
};

struct Race {
  uintptr_t pc;
  uintptr_t addr;
  bool shared;
  uint8_t kind;  // of this access
  Rec me, other;
};

struct State {
  bool active = false;  // an emulated thread runs
  uintptr_t stack_lo = 0, stack_hi = 0;
  uint32_t launch = 0, block = 0, bgen = 0;
  uint16_t thread = 0;
  uint32_t wgen[32] = {};
  const char* kernel = "";
  dim3 grid, blockdim;
  std::unordered_map<uintptr_t, Page*> pages;
  // Device memory nothing wrote yet: one bit per byte of cudaMalloc memory, per
  // page, cleared by kernel stores, copies and memsets into it, and GEMM output.
  std::unordered_map<uintptr_t, uint64_t*> uninit;
  std::vector<Race> uninit_reads;
  std::set<uintptr_t> uninit_seen;  // pcs
  uintptr_t last_key = ~uintptr_t(0);
  Page* last_page = nullptr;
  std::vector<Race> races;
  std::set<std::tuple<uintptr_t, uint8_t, uint8_t, bool>> seen;  // (pc, kind, other kind, same block)
  unsigned long long launches = 0, accesses = 0;
  size_t shadow_pages = 0;
};
State g;

Cell& cell(uintptr_t a) {
  const uintptr_t key = a >> kPageBits;
  if (key != g.last_key) {
    Page*& p = g.pages[key];
    if (!p) {
      p = static_cast<Page*>(std::calloc(1, sizeof(Page)));
      if (!p) fatal("deepcore host emulator racecheck: out of memory for the shadow of the accessed bytes");
      ++g.shadow_pages;
      auto u = g.uninit.find(key);
      p->uninit = u == g.uninit.end() ? nullptr : u->second;
    }
    g.last_key = key;
    g.last_page = p;
  }
  return g.last_page->cells[a & (kPageBytes - 1)];
}

// Whether recorded access o happened before the running thread's access
// (o is from the past; the question is whether CUDA orders it).
bool ordered(const Rec& o, bool shared) {
  if (o.kind == kNone || o.launch != g.launch) return true;
  if (o.block != g.block) return shared;  // another block's __shared__ is other memory
  if (o.thread == g.thread || o.bgen != g.bgen) return true;
  return (o.thread >> 5) == (g.thread >> 5) && o.wgen != g.wgen[g.thread >> 5];
}

// Whether o is ordered with every later access of this launch: another
// launch's, a __syncthreads completed since (in this block), or another
// block's shared memory. Only then may an atomic's record replace it: a plain
// access that some thread could still race with must stay in the shadow.
bool retired(const Rec& o, bool shared) {
  if (o.kind == kNone || o.launch != g.launch) return true;
  if (o.block != g.block) return shared;
  return o.bgen != g.bgen;
}

bool same_warp(const Rec& a, const Rec& b) { return a.block == b.block && (a.thread >> 5) == (b.thread >> 5); }

void note_race(uintptr_t pc, uintptr_t a, bool shared, uint8_t kind, const Rec& me, const Rec& other) {
  if (!g.seen.insert(std::make_tuple(pc, kind, other.kind, other.block == me.block)).second) return;
  if (g.races.size() < 16) g.races.push_back(Race{pc, a, shared, kind, me, other});
}

void access(const void* addr, size_t n, uint8_t kind, uintptr_t pc) {
  if (!g.active) return;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(addr);
  if (a0 >= g.stack_lo && a0 < g.stack_hi) return;  // the thread's own locals
  ++g.accesses;
  const bool shared = in_shared_memory(addr);
  const Rec me{g.launch, g.block, g.bgen, g.wgen[g.thread >> 5], g.thread, kind, 0};
  for (size_t i = 0; i < n; ++i) {
    const uintptr_t a = a0 + i;
    Cell& c = cell(a);
    if (uint64_t* u = g.last_page->uninit) {
      const uintptr_t bit = a & (kPageBytes - 1);
      if (u[bit >> 6] >> (bit & 63) & 1) {
        if (reads(kind) && g.uninit_seen.insert(pc).second && g.uninit_reads.size() < 16)
          g.uninit_reads.push_back(Race{pc, a, false, kind, me, Rec{}});
        if (writes(kind)) u[bit >> 6] &= ~(uint64_t(1) << (bit & 63));
      }
    }
    if (kind == kRead || kind == kAtomicLoad) {
      if (c.w.kind != kNone && !(is_atomic(kind) && is_atomic(c.w.kind)) && !ordered(c.w, shared))
        note_race(pc, a, shared, kind, me, c.w);
      // An atomic load does not replace a plain read that a later atomic of
      // some thread could race with (see retired).
      if (ordered(c.r1, shared)) {
        if (!(kind == kAtomicLoad && c.r1.kind == kRead && !retired(c.r1, shared))) c.r1 = me;
      } else if (ordered(c.r2, shared) || same_warp(c.r2, c.r1) || !same_warp(me, c.r1)) {
        // (an unordered r2 from another warp than r1's is kept)
        if (!(kind == kAtomicLoad && c.r2.kind == kRead && !retired(c.r2, shared))) c.r2 = me;
      }
      continue;
    }
    // A write, or an atomic read-modify-write: conflicts with an unordered
    // plain write or read (two atomics do not race).
    for (const Rec* o : {&c.w, &c.r1, &c.r2})
      if (o->kind != kNone && !(is_atomic(kind) && is_atomic(o->kind)) && !ordered(*o, shared))
        note_race(pc, a, shared, kind, me, *o);
    if (kind == kWrite) {
      c.w = me;
      c.r1.kind = c.r2.kind = kNone;
    } else if (!(c.w.kind == kWrite && !retired(c.w, shared))) {
      // An atomic keeps the reads (a later atomic of another thread races
      // with them), and does not replace a plain write that some thread's
      // later access could still race with (the atomic's own record is lost
      // then: a plain access racing only with the atomic, and ordered with
      // that write by a __syncwarp, goes unseen).
      c.w = me;
    }
  }
}

// Sets (uninitialized) or clears the bits of [p, p + n); clearing touches only
// pages that have bits.
void set_uninit(const void* p, size_t n, bool value) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t end = a + n;
  while (a < end) {
    const uintptr_t key = a >> kPageBits;
    const uintptr_t page_end = std::min(end, (key + 1) << kPageBits);
    auto it = g.uninit.find(key);
    uint64_t* bits = it == g.uninit.end() ? nullptr : it->second;
    if (!bits && value) {
      bits = static_cast<uint64_t*>(std::calloc(kPageBytes / 64, sizeof(uint64_t)));
      if (!bits) fatal("deepcore host emulator racecheck: out of memory for the initialization bits");
      g.uninit[key] = bits;
      auto pg = g.pages.find(key);
      if (pg != g.pages.end()) pg->second->uninit = bits;
    }
    if (bits) {
      for (uintptr_t b = a & (kPageBytes - 1), e = b + (page_end - a); b < e;) {
        const uintptr_t word = b >> 6, lo = b & 63, hi = std::min<uintptr_t>(64, lo + (e - b));
        const uint64_t mask = (hi == 64 ? ~uint64_t(0) : (uint64_t(1) << hi) - 1) & ~((uint64_t(1) << lo) - 1);
        bits[word] = value ? bits[word] | mask : bits[word] & ~mask;
        b += hi - lo;
      }
    }
    a = page_end;
  }
}

// The first byte of [p, p + n) nothing wrote, or 0.
uintptr_t first_uninit(const void* p, size_t n) {
  const auto a0 = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t a = a0; a < a0 + n; ++a) {
    auto it = g.uninit.find(a >> kPageBits);
    if (it == g.uninit.end()) {
      a = (((a >> kPageBits) + 1) << kPageBits) - 1;  // the whole page is written
      continue;
    }
    const uintptr_t bit = a & (kPageBytes - 1);
    if (it->second[bit >> 6] >> (bit & 63) & 1) return a;
  }
  return 0;
}

std::string thread_name(const Rec& r) {
  const unsigned bx = g.grid.x, by = g.grid.y, tx = g.blockdim.x, ty = g.blockdim.y;
  const unsigned t = r.thread, b = r.block;
  char buf[160];
  std::snprintf(buf, sizeof buf, "thread (%u,%u,%u) of block (%u,%u,%u)", t % tx, t / tx % ty, t / (tx * ty), b % bx,
                b / bx % by, b / (bx * by));
  return buf;
}

const char* verb(uint8_t kind) {
  return kind == kRead ? "reads" : kind == kWrite ? "writes" : kind == kAtomic ? "atomically updates"
         : kind == kAtomicLoad ? "atomically reads" : "atomically writes";
}
const char* past(uint8_t kind) {
  return kind == kRead ? "read" : kind == kWrite ? "wrote" : kind == kAtomic ? "atomically updated"
         : kind == kAtomicLoad ? "atomically read" : "atomically wrote";
}

// "file:line (function)" of the access at return address pc, through
// addr2line when the machine has it; the module and offset otherwise.
std::string where(uintptr_t pc) {
  Dl_info info;
  if (!dladdr(reinterpret_cast<void*>(pc), &info) || !info.dli_fname) return "an unknown address";
  char off[32];
  std::snprintf(off, sizeof off, "0x%lx", static_cast<unsigned long>(pc - 1 - uintptr_t(info.dli_fbase)));
  std::string fallback = std::string(info.dli_fname) + "+" + off;
  const std::string cmd = "addr2line -C -f -i -e '" + std::string(info.dli_fname) + "' " + off + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return fallback;
  std::vector<std::string> lines;
  char line[1024];
  while (std::fgets(line, sizeof line, p)) {
    std::string s(line);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    lines.push_back(s);
  }
  pclose(p);
  if (lines.size() < 2 || lines[1].rfind("??", 0) == 0) return fallback;
  // Pairs (function, file:line), innermost first; the frames in the kernel
  // sources (cuda/, the self-test) only, as "file:line in function", without
  // the emulator's launch plumbing they are inlined into.
  std::string out;
  for (size_t i = 0; i + 1 < lines.size(); i += 2) {
    std::string file = lines[i + 1];
    const size_t disc = file.find(" (discriminator");
    if (disc != std::string::npos) file = file.substr(0, disc);
    size_t root = file.rfind("/cuda/");
    if (root == std::string::npos) root = file.rfind("/selftest/");
    if (root == std::string::npos) continue;
    file = file.substr(root + 1);
    std::string fn = lines[i];
    for (const char* noise : {"(anonymous namespace)::", "deepcore::cuda::"})
      for (size_t k; (k = fn.find(noise)) != std::string::npos;) fn.erase(k, std::strlen(noise));
    fn = fn.substr(0, fn.find('('));                              // no argument list
    const size_t space = fn.find(' ');                            // nor a template's return type
    if (space != std::string::npos && space < fn.find('<')) fn = fn.substr(space + 1);
    const bool plumbing = fn.rfind("deepcore_emu::", 0) == 0 || fn.find("operator") != std::string::npos;
    out += (out.empty() ? "" : " <- ") + file + (plumbing || fn.empty() ? "" : " in " + fn);
  }
  if (out.empty()) return fallback;
  return out;
}

}  // namespace

void begin_launch(const char* kernel, dim3 grid, dim3 block) {
  ++g.launch;
  ++g.launches;
  g.kernel = kernel;
  g.grid = grid;
  g.blockdim = block;
  g.races.clear();
  g.seen.clear();
  g.uninit_reads.clear();
  g.uninit_seen.clear();
}

void begin_block(uint32_t linear_block) {
  g.block = linear_block;
  g.bgen = 0;
  std::memset(g.wgen, 0, sizeof g.wgen);
}

void thread_runs(int thread, const char* stack, size_t stack_bytes) {
  g.active = true;
  g.thread = uint16_t(thread);
  g.stack_lo = reinterpret_cast<uintptr_t>(stack);
  g.stack_hi = g.stack_lo + stack_bytes;
}

void thread_stops() { g.active = false; }

void block_barrier_opened() { ++g.bgen; }

void warp_barrier_opened(int warp) { ++g.wgen[warp]; }

void end_launch() {
  g.active = false;
  if (g.races.empty() && g.uninit_reads.empty()) return;
  std::string msg;
  if (!g.uninit_reads.empty()) {
    msg = "deepcore host emulator initcheck: kernel " + std::string(g.kernel) +
          " reads device memory that nothing wrote (" + std::to_string(g.uninit_seen.size()) +
          " distinct reads, first " + std::to_string(g.uninit_reads.size()) + " shown):";
    for (const Race& r : g.uninit_reads) {
      char addr[40];
      std::snprintf(addr, sizeof addr, "0x%lx", static_cast<unsigned long>(r.addr));
      msg += "\n  " + thread_name(r.me) + " " + verb(r.kind) + " global memory at " + addr + " (" + where(r.pc) +
             "): cudaMalloc memory that no kernel, copy, memset or GEMM has written";
    }
    if (g.races.empty()) fatal(msg);
    msg += "\n";
  }
  msg += "deepcore host emulator racecheck: kernel " + std::string(g.kernel) + " has a data race (" +
         std::to_string(g.seen.size()) + " distinct, first " + std::to_string(g.races.size()) + " shown):";
  for (const Race& r : g.races) {
    char addr[40];
    std::snprintf(addr, sizeof addr, "0x%lx", static_cast<unsigned long>(r.addr));
    msg += "\n  " + thread_name(r.me) + " " + verb(r.kind) + " " + (r.shared ? "__shared__" : "global") +
           " memory at " + addr + " (" + where(r.pc) + ")\n    which " + thread_name(r.other) + " " +
           past(r.other.kind) + (r.other.block != r.me.block
                                     ? " in the same launch (blocks are not ordered)"
                                     : " in the same barrier interval (no __syncthreads, or __syncwarp of their "
                                       "warp, between them)");
  }
  fatal(msg);
}

void allocated(const void* p, size_t n) { set_uninit(p, n, true); }

void written(const void* p, size_t n) { set_uninit(p, n, false); }

void host_reads(const void* p, size_t n, const char* who) {
  if (const uintptr_t a = first_uninit(p, n)) {
    char where_[96];
    std::snprintf(where_, sizeof where_, "0x%lx (byte %lu of the %lu it reads there)", static_cast<unsigned long>(a),
                  static_cast<unsigned long>(a - reinterpret_cast<uintptr_t>(p)), static_cast<unsigned long>(n));
    fatal(std::string("deepcore host emulator initcheck: ") + who + " reads device memory that nothing wrote at " +
          where_ + ": cudaMalloc memory that no kernel, copy, memset or GEMM has written");
  }
}

void report_summary() {
  if (!g.launches) return;
  std::fprintf(stderr,
               "deepcore host emulator racecheck: %llu kernel launches checked, %llu memory accesses, "
               "%.0f MiB of shadow, no data race and no read of unwritten device memory\n",
               g.launches, g.accesses, double(g.shadow_pages) * sizeof(Page) / (1 << 20));
}

namespace {
struct SummaryAtExit {
  ~SummaryAtExit() {
    if (std::getenv("DEEPCORE_EMU_RACECHECK_SUMMARY")) report_summary();
  }
} summary_at_exit;
}  // namespace

}  // namespace racecheck
}  // namespace deepcore_emu

// The instrumentation's entry points (GCC and Clang -fsanitize=thread).
using deepcore_emu::racecheck::access;
#define DC_PC reinterpret_cast<uintptr_t>(__builtin_return_address(0))
#define DC_ACCESS(n)                                                                                   \
  extern "C" void __tsan_read##n(void* a) { access(a, n, deepcore_emu::racecheck::kRead, DC_PC); }      \
  extern "C" void __tsan_write##n(void* a) { access(a, n, deepcore_emu::racecheck::kWrite, DC_PC); }    \
  extern "C" void __tsan_unaligned_read##n(void* a) { access(a, n, deepcore_emu::racecheck::kRead, DC_PC); } \
  extern "C" void __tsan_unaligned_write##n(void* a) { access(a, n, deepcore_emu::racecheck::kWrite, DC_PC); }
DC_ACCESS(1)
DC_ACCESS(2)
DC_ACCESS(4)
DC_ACCESS(8)
DC_ACCESS(16)
extern "C" void __tsan_read_range(void* a, unsigned long n) { access(a, n, deepcore_emu::racecheck::kRead, DC_PC); }
extern "C" void __tsan_write_range(void* a, unsigned long n) { access(a, n, deepcore_emu::racecheck::kWrite, DC_PC); }
extern "C" void __tsan_vptr_read(void** p) { access(p, sizeof(void*), deepcore_emu::racecheck::kRead, DC_PC); }
extern "C" void __tsan_vptr_update(void** p, void*) {
  access(p, sizeof(void*), deepcore_emu::racecheck::kWrite, DC_PC);
}
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}

// Atomics: recorded as atomic accesses, then done (the instrumented code
// calls these instead of the atomic instructions). mo: the memory order, as
// __ATOMIC_* numbers; the emulator runs one thread at a time, so the
// strongest order is always right.
// One read-modify-write entry point: name, parameters after the address, and
// the built-in call that does it on `a`.
#define DC_ATOMIC_RMW(bits, R, name, params, call)                                        \
  extern "C" R __tsan_atomic##bits##_##name(volatile atomic_t##bits* a, DC_UNPAREN params) { \
    access(const_cast<atomic_t##bits*>(a), sizeof(*a), deepcore_emu::racecheck::kAtomic, DC_PC); \
    return call;                                                                          \
  }
#define DC_UNPAREN(...) __VA_ARGS__
#define DC_ATOMICS(bits, T)                                                                                    \
  using atomic_t##bits = T;                                                                                      \
  extern "C" T __tsan_atomic##bits##_load(const volatile T* a, int) {                                          \
    access(const_cast<T*>(a), sizeof(T), deepcore_emu::racecheck::kAtomicLoad, DC_PC);                        \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                               \
  }                                                                                                            \
  extern "C" void __tsan_atomic##bits##_store(volatile T* a, T v, int) {                                       \
    access(const_cast<T*>(a), sizeof(T), deepcore_emu::racecheck::kAtomicStore, DC_PC);                       \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                                  \
  }                                                                                                            \
  DC_ATOMIC_RMW(bits, T, exchange, (T v, int), __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST))                    \
  DC_ATOMIC_RMW(bits, T, fetch_add, (T v, int), __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST))                    \
  DC_ATOMIC_RMW(bits, T, fetch_sub, (T v, int), __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST))                    \
  DC_ATOMIC_RMW(bits, T, fetch_and, (T v, int), __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST))                    \
  DC_ATOMIC_RMW(bits, T, fetch_or, (T v, int), __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST))                      \
  DC_ATOMIC_RMW(bits, T, fetch_xor, (T v, int), __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST))                    \
  DC_ATOMIC_RMW(bits, int, compare_exchange_strong, (T* expected, T v, int, int),                              \
                __atomic_compare_exchange_n(a, expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))         \
  DC_ATOMIC_RMW(bits, int, compare_exchange_weak, (T* expected, T v, int, int),                                \
                __atomic_compare_exchange_n(a, expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))         \
  DC_ATOMIC_RMW(bits, T, compare_exchange_val, (T expected, T v, int, int),                                    \
                (__atomic_compare_exchange_n(a, &expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST), expected))
DC_ATOMICS(8, uint8_t)
DC_ATOMICS(16, uint16_t)
DC_ATOMICS(32, uint32_t)
DC_ATOMICS(64, uint64_t)
extern "C" void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
extern "C" void __tsan_atomic_signal_fence(int) {}
