// Shared by pi2lab's native kernels: the thread pool and the FFN activations.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <sched.h>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace pi2lab {

enum Kind : int32_t { kSilu = 0, kRelu = 1, kDrelu = 2, kFatrelu = 3 };

// Waits a moment without giving up the core.
inline void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until ready() or `micros` pass; returns ready().
template <class Ready>
bool SpinFor(Ready ready, int micros) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(micros);
  for (int i = 0;; ++i) {
    if (ready()) return true;
    if (i % 64 == 63 && std::chrono::steady_clock::now() > until) return ready();
    Pause();
  }
}

// A fixed pool: the calling thread runs share 0, workers shares 1..n-1.
//
// Decode calls the kernels back to back, a few hundred microseconds apart or less, and waking
// a sleeping thread took ~0.1 ms here, as long as a small product itself. So a worker spins for
// a while after each job (and the caller while it waits for the others) before sleeping on a
// condition variable.
class Pool {
 public:
  explicit Pool(int n) : n_(std::max(n, 1)) {
    for (int i = 1; i < n_; ++i) workers_.emplace_back([this, i] { Loop(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return n_; }

  // Runs fn(share) for share in [0, shares), shares <= size(); returns when all are done.
  // XLA may run independent kernels at once from several threads: a call that finds the pool
  // busy runs its shares on its own thread.
  void Run(int shares, const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> busy(run_, std::try_to_lock);
    if (shares <= 1 || !busy.owns_lock()) {
      for (int i = 0; i < shares; ++i) fn(i);
      return;
    }
    job_ = &fn;
    shares_ = shares;
    // every worker acknowledges every job (those past `shares` without running it), so none
    // can still be reading job_ and shares_ when the next Run writes them
    pending_.store(n_ - 1);
    generation_.fetch_add(1);  // publishes the job (sequentially consistent, see Loop)
    if (sleeping_.load() > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      wake_.notify_all();
    }
    fn(0);
    if (!SpinFor([this] { return pending_.load() == 0; }, kSpinMicros)) {
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, [this] { return pending_.load() == 0; });
    }
  }

 private:
  static constexpr int kSpinMicros = 200;

  void Loop(int i) {
    uint64_t seen = 0;
    for (;;) {
      if (!SpinFor([&] { return generation_.load() != seen; }, kSpinMicros)) {
        std::unique_lock<std::mutex> lock(mu_);
        // either Run sees this count and notifies under the lock, or this sees its generation
        sleeping_.fetch_add(1);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
        sleeping_.fetch_sub(1);
      }
      seen = generation_.load();
      if (stop_) return;
      if (i < shares_) (*job_)(i);
      if (pending_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(mu_);
        done_.notify_one();
      }
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex mu_, run_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  int shares_ = 0;
  std::atomic<int> pending_{0}, sleeping_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
};

// The cores this process may run on, or PI2LAB_NATIVE_THREADS when set.
inline int CpuCount() {
  if (const char* env = std::getenv("PI2LAB_NATIVE_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(CPU_COUNT(&set), 1);
  return std::max<int>(std::thread::hardware_concurrency(), 1);
}

inline Pool& GlobalPool() {
  static Pool pool(CpuCount());
  return pool;
}

// out [d] = the sum of the shares' partial outputs parts [shares, d].
inline void SumShares(const float* parts, int shares, int64_t d, float* out) {
  std::memcpy(out, parts, d * sizeof(float));
  for (int s = 1; s < shares; ++s) {
    for (int64_t j = 0; j < d; ++j) out[j] += parts[s * d + j];
  }
}

inline float Activate(float g, float u, int32_t kind, float threshold) {
  switch (kind) {
    case kSilu:
      return g / (1.0f + std::exp(-g)) * u;
    case kRelu:
      return g > 0.0f ? g * u : 0.0f;
    case kDrelu:
      return (g > 0.0f && u > 0.0f) ? g * u : 0.0f;
    default:
      return g > threshold ? g * u : 0.0f;
  }
}

}  // namespace pi2lab
