// Shared by pi2lab's native kernels: the thread pool and the FFN activations.
#pragma once

#include <algorithm>
#include <atomic>
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

// A fixed pool: the calling thread runs share 0, workers shares 1..n-1.
class Pool {
 public:
  explicit Pool(int n) : n_(std::max(n, 1)) {
    for (int i = 1; i < n_; ++i) workers_.emplace_back([this, i] { Loop(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return n_; }

  // Runs fn(share) for share in [0, shares), shares <= size(); returns when all are done.
  void Run(int shares, const std::function<void(int)>& fn) {
    if (shares <= 1) {
      fn(0);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &fn;
      shares_ = shares;
      pending_ = shares - 1;
      ++generation_;
    }
    wake_.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  void Loop(int i) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
        if (i >= shares_) continue;
        job = job_;
      }
      (*job)(i);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  int shares_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
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
