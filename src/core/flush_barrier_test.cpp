#include "core/flush_barrier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <latch>
#include <thread>
#include <vector>

namespace ig {
namespace {

// Every caller's flush covers what it wrote before calling: the flush that answers a caller
// started after the caller's write.
TEST(FlushBarrierTest, EveryCallerIsCoveredByAFlushThatStartedAfterItsCall) {
  std::atomic<int> written{0};
  std::atomic<int> flushes{0};
  std::atomic<int> durable{0};  // what the last finished flush saw
  FlushBarrier barrier([&]() -> Result<void> {
    ++flushes;
    const int seen = written.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    int prev = durable.load();
    while (prev < seen && !durable.compare_exchange_weak(prev, seen)) {
    }
    return {};
  });
  constexpr int kThreads = 16, kRounds = 20;
  std::latch start(kThreads);
  std::atomic<int> violations{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int r = 0; r < kRounds; ++r) {
        const int mine = ++written;
        ASSERT_TRUE(barrier.flush());
        if (durable.load() < mine) ++violations;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(violations.load(), 0);
  // 320 calls; coalescing makes it far fewer runs than that (one per call without it).
  EXPECT_LT(flushes.load(), kThreads * kRounds / 2) << flushes.load();
}

TEST(FlushBarrierTest, AFailedFlushFailsTheCallersItCoveredAndOnlyThem) {
  std::atomic<int> runs{0};
  FlushBarrier barrier([&]() -> Result<void> {
    if (++runs == 1) return fail(ErrorCode::kInternal, "disk on fire");
    return {};
  });
  auto first = barrier.flush();
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().message, "disk on fire");
  EXPECT_TRUE(barrier.flush());
  EXPECT_EQ(runs.load(), 2);
}

}  // namespace
}  // namespace ig
