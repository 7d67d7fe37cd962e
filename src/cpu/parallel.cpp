// deepcore's fork-join thread pool (see parallel.h for why it replaces OpenMP).
//
// One job at a time: the caller publishes (task, ctx) and a ticket
// (generation << 16 | nt), workers 1..nt-1 run task(ctx, t, nt), the caller
// runs t = 0 and then waits until `remaining` reaches 0.
//
// Waiting. An idle worker does not spin: it sleeps on a futex until the next
// job, so its core is free for OpenBLAS's threads, which run the GEMMs
// between our kernels. The caller, waiting for the workers to finish their
// share, spins for at most kCallerSpin (the shares are equal, so they finish
// together, and a sleeping caller would pay a wake-up) and then sleeps too.
// A job wakes the workers only when some sleep (sleepers > 0). Measured on
// the 2-core VM with the 784-300-100-10 MLP at batch 32, whose Nesterov-SGD
// update of 266k parameters is the one parallel kernel of a step (us per
// dense_forward 32x784x300 + update, median of 7 runs of 1000):
//     idle workers sleep at once             243-257  (OpenMP, OMP_WAIT_POLICY=PASSIVE: 240-256)
//       with global_clipnorm (two passes)    320      (OpenMP: 313-317)
//     idle workers spin 5 us, then sleep     243-255; with global_clipnorm 342-344
//     idle workers spin 20 us                278-289; with global_clipnorm 385-393
//     spin 5 us, then sched_yield 50 us      312-358
//     spin 1 ms                              a training epoch 4x slower
// Waking a sleeping worker costs ~100 us on this VM (the update alone: 145 us
// with a sleeping caller, 70-85 us with kCallerSpin, 40 us with a spinning
// worker), yet any spinning or yielding costs more, because the GEMM's
// OpenBLAS threads then wait for a core.
//
// The pool is created at the first parallel call and never destroyed: its
// workers sleep at exit, and no static destructor joins threads while the
// interpreter shuts down. After fork() the child has no workers; an atfork
// handler drops the parent's pool (leaked, never touched again) so that the
// child starts a fresh one.
#include "cpu/parallel.h"

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#include <condition_variable>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace deepcore {
namespace {

constexpr int kMaxThreads = 4096;
// The caller's spin while the workers finish their share (see the top of this file).
constexpr auto kCallerSpin = std::chrono::microseconds(200);

// ------------------------------------------------------------ waiting
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or until `budget` has passed; true if done().
template <class Done>
bool spin_until(Done done, std::chrono::nanoseconds budget) {
  if (done()) return true;
  if (budget.count() <= 0) return false;
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      cpu_relax();
      if (done()) return true;
    }
    if (std::chrono::steady_clock::now() - start > budget) return false;
  }
}

// Sleeps while *word == expected (it may also return spuriously), and wakes
// every sleeper on word: a futex on Linux, a mutex and condition variable
// elsewhere (the sleeper checks the word under the mutex, the waker changes
// it before taking the mutex, so no wake-up is lost).
#if defined(__linux__)
void sleep_while_equal(std::atomic<uint32_t>& word, uint32_t expected) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "a futex is a plain 32-bit word");
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}
void wake_all(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}
#else
std::mutex g_park_mutex;
std::condition_variable g_park_cv;
void sleep_while_equal(std::atomic<uint32_t>& word, uint32_t expected) {
  std::unique_lock<std::mutex> lk(g_park_mutex);
  if (word.load(std::memory_order_seq_cst) == expected) g_park_cv.wait(lk);
}
void wake_all(std::atomic<uint32_t>&) {
  { std::lock_guard<std::mutex> lk(g_park_mutex); }
  g_park_cv.notify_all();
}
#endif

// ------------------------------------------------------------ thread count
int default_num_threads() {
  // OMP_NUM_THREADS, when set to a positive integer (its first entry if a
  // list): the usual knob for "threads per process", set for instance by
  // joblib in its workers. Read only.
  if (const char* s = std::getenv("OMP_NUM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (end != s && v >= 1 && (*end == '\0' || *end == ',')) return int(std::min<long>(v, kMaxThreads));
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n >= 1) return std::min(n, kMaxThreads);
  }
#endif
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? int(std::min<unsigned>(hc, kMaxThreads)) : 1;
}

std::atomic<int> g_num_threads{0};  // 0: not yet read (default_num_threads at first use)

thread_local bool t_in_job = false;  // this thread is running a task of the pool

// ------------------------------------------------------------ the pool
class Pool {
 public:
  // Runs the job; 2 <= nt <= kMaxThreads. Returns false if the pool is busy
  // (another thread's job): the caller then runs it alone.
  bool run(int nt, void (*task)(void*, int, int), void* ctx) {
    std::unique_lock<std::mutex> job_lock(job_mutex_, std::try_to_lock);
    if (!job_lock.owns_lock()) return false;
    while (int(workers_.size()) < nt - 1) start_worker();
    task_ = task, ctx_ = ctx, error_ = nullptr;
    remaining_.store(uint32_t(nt - 1), std::memory_order_relaxed);
    ticket_.store((++generation_ << 16) | uint64_t(nt), std::memory_order_seq_cst);  // publishes the job
    wake_word_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) wake_all(wake_word_);
    execute(0, nt);
    // Wait for workers 1..nt-1.
    if (!spin_until([&] { return remaining_.load(std::memory_order_acquire) == 0; }, kCallerSpin)) {
      caller_waiting_.store(true, std::memory_order_seq_cst);
      for (uint32_t r; (r = remaining_.load(std::memory_order_seq_cst)) != 0;) sleep_while_equal(remaining_, r);
      caller_waiting_.store(false, std::memory_order_relaxed);
    }
    if (error_) std::rethrow_exception(error_);
    return true;
  }

  // Stops the workers beyond `keep`, waiting for a running job to finish.
  void shrink(int keep) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    if (int(workers_.size()) <= keep) return;
    for (size_t i = size_t(keep); i < workers_.size(); ++i) workers_[i]->stop.store(true, std::memory_order_seq_cst);
    wake_word_.fetch_add(1, std::memory_order_seq_cst);
    wake_all(wake_word_);
    for (size_t i = size_t(keep); i < workers_.size(); ++i) workers_[i]->thread.join();
    workers_.resize(size_t(keep));
  }

 private:
  struct Worker {
    std::thread thread;
    std::atomic<bool> stop{false};
  };

  void execute(int t, int nt) {
    t_in_job = true;
    try {
      task_(ctx_, t, nt);
    } catch (...) {
      std::lock_guard<std::mutex> lk(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
    t_in_job = false;
  }

  void worker_main(int index, Worker* self, uint64_t seen) {
    for (;;) {
      uint64_t ticket = seen;
      auto next = [&] {
        ticket = ticket_.load(std::memory_order_seq_cst);
        return ticket != seen || self->stop.load(std::memory_order_seq_cst);
      };
      if (!next()) {  // no spinning: see the top of this file
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        for (;;) {
          const uint32_t word = wake_word_.load(std::memory_order_seq_cst);
          if (next()) break;
          sleep_while_equal(wake_word_, word);
        }
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      if (self->stop.load(std::memory_order_acquire)) return;
      seen = ticket;
      const int nt = int(ticket & 0xFFFF);
      if (index >= nt) continue;  // not part of this job (the caller does not wait for it)
      execute(index, nt);
      if (remaining_.fetch_sub(1, std::memory_order_seq_cst) == 1 && caller_waiting_.load(std::memory_order_seq_cst))
        wake_all(remaining_);
    }
  }

  void start_worker() {
    auto w = std::make_unique<Worker>();
    const int index = int(workers_.size()) + 1;
    const uint64_t seen = ticket_.load(std::memory_order_relaxed);
#if defined(__linux__)
    // Workers block all asynchronous signals: Python's handlers run on the
    // main thread, and a signal must not interrupt a worker.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    struct RestoreMask {
      sigset_t* mask;
      ~RestoreMask() { pthread_sigmask(SIG_SETMASK, mask, nullptr); }  // also when std::thread throws
    } restore{&old};
#endif
    w->thread = std::thread([this, index, self = w.get(), seen] {
#if defined(__linux__)
      pthread_setname_np(pthread_self(), "deepcore-pool");  // in /proc/<pid>/task/*/comm and top -H
#endif
      worker_main(index, self, seen);
    });
    workers_.push_back(std::move(w));
  }

  std::mutex job_mutex_;  // one job at a time; guards workers_
  std::vector<std::unique_ptr<Worker>> workers_;
  void (*task_)(void*, int, int) = nullptr;
  void* ctx_ = nullptr;
  uint64_t generation_ = 0;
  std::atomic<uint64_t> ticket_{0};       // generation << 16 | nt of the last job
  std::atomic<uint32_t> wake_word_{0};    // changes with every job (and stop): the workers' futex
  std::atomic<uint32_t> remaining_{0};    // workers still running the job: the caller's futex
  std::atomic<int> sleepers_{0};          // workers asleep (or about to be) on wake_word_
  std::atomic<bool> caller_waiting_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_create;

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  std::lock_guard<std::mutex> lk(g_pool_create);
  p = g_pool.load(std::memory_order_relaxed);
  if (!p) {
#if defined(__linux__)
    static const bool registered = [] {
      // In a forked child the parent's workers do not exist: forget the pool
      // (its memory is left as it is) and let the child create its own.
      pthread_atfork(nullptr, nullptr, [] { g_pool.store(nullptr, std::memory_order_relaxed); });
      return true;
    }();
    (void)registered;
#endif
    p = new Pool();  // never deleted, see the top of this file
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

}  // namespace

int pool_num_threads() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    int expected = 0;
    g_num_threads.compare_exchange_strong(expected, default_num_threads());
    n = g_num_threads.load(std::memory_order_relaxed);
  }
  return n;
}

void pool_set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads)
    throw InvalidInput("set_num_threads: expected n >= 1 (and at most " + std::to_string(kMaxThreads) + "), got " +
                       std::to_string(n));
  g_num_threads.store(n, std::memory_order_relaxed);
  if (Pool* p = g_pool.load(std::memory_order_acquire)) p->shrink(n - 1);
}

namespace detail {

void pool_run(int nt, void (*task)(void*, int, int), void* ctx) {
  nt = std::min(nt, pool_num_threads());
  if (nt >= 2 && !t_in_job && pool().run(nt, task, ctx)) return;
  task(ctx, 0, 1);  // alone: nested, busy, or one thread; nt = 1 gives this call all the work
}

}  // namespace detail
}  // namespace deepcore
