#pragma once
// FlushBarrier: coalesces a costly durability step (fsync, syncfs, a commit) across threads.
//
// Promise: flush() returns only after one run of the flush function that *started after*
// flush() was called has finished, and returns that run's result. While one run is under way,
// callers queue; the next run covers all of them at once, so N concurrent callers cost about
// two runs, not N. Blocking; call it from the blocking pool only.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <utility>

#include "core/error.h"

namespace ig {

class FlushBarrier {
 public:
  explicit FlushBarrier(std::function<Result<void>()> flush) : flush_(std::move(flush)) {}
  FlushBarrier(const FlushBarrier&) = delete;
  FlushBarrier& operator=(const FlushBarrier&) = delete;

  Result<void> flush() {
    std::unique_lock lock(mu_);
    const std::uint64_t ticket = ++requested_;
    while (completed_ < ticket) {
      if (running_) {
        cv_.wait(lock);
        continue;
      }
      running_ = true;
      const std::uint64_t covers = requested_;
      lock.unlock();
      Result<void> result = flush_();
      lock.lock();
      running_ = false;
      if (!result) {
        failures_.push_back(Failure{completed_ + 1, covers, result.error()});
        if (failures_.size() > kMaxRememberedFailures) failures_.pop_front();
      }
      completed_ = covers;
      cv_.notify_all();
    }
    for (const Failure& f : failures_) {
      if (ticket >= f.first && ticket <= f.last) return std::unexpected(f.error);
    }
    return {};
  }

 private:
  struct Failure {
    std::uint64_t first, last;  // the tickets that run covered
    Error error;
  };
  // A waiter reads its verdict right after waking; older failures only matter to waiters that
  // were not scheduled for this many flushes.
  static constexpr std::size_t kMaxRememberedFailures = 256;

  std::function<Result<void>()> flush_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t requested_ = 0;  // tickets handed out
  std::uint64_t completed_ = 0;  // every ticket up to this one is covered by a finished run
  bool running_ = false;
  std::deque<Failure> failures_;
};

}  // namespace ig
