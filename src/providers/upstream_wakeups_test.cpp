#include "providers/upstream_wakeups.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace ig::providers {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// Runs one wait on a fresh io_context; returns (woken, elapsed).
std::pair<bool, SteadyClock::duration> wait_once(UpstreamWakeups::Waiter& waiter,
                                                 asio::io_context& ioc,
                                                 std::chrono::milliseconds timeout) {
  const auto start = SteadyClock::now();
  auto future = asio::co_spawn(ioc, waiter.wait_for(timeout), asio::use_future);
  ioc.restart();
  ioc.run();
  return {future.get(), SteadyClock::now() - start};
}

TEST(UpstreamWakeupsTest, WaitTimesOutWithoutNotify) {
  UpstreamWakeups wakeups;
  asio::io_context ioc;
  auto waiter = wakeups.register_waiter("job-1", ioc.get_executor());
  auto [woken, elapsed] = wait_once(*waiter, ioc, 30ms);
  EXPECT_FALSE(woken);
  EXPECT_GE(elapsed, 30ms);
  EXPECT_LT(elapsed, 5s);
}

TEST(UpstreamWakeupsTest, NotifyWakesALongWaitEarly) {
  UpstreamWakeups wakeups;
  asio::io_context ioc;
  auto waiter = wakeups.register_waiter("job-1", ioc.get_executor());
  // The notify comes from the same context, after the wait has started.
  asio::steady_timer later(ioc);
  later.expires_after(20ms);
  std::atomic<bool> notified{false};
  later.async_wait([&](const boost::system::error_code&) { notified = wakeups.notify("job-1"); });
  auto [woken, elapsed] = wait_once(*waiter, ioc, 60s);
  EXPECT_TRUE(woken);
  EXPECT_TRUE(notified);
  EXPECT_GE(elapsed, 20ms);
  EXPECT_LT(elapsed, 10s);
}

TEST(UpstreamWakeupsTest, NotifyFromAnotherThreadWakesTheWait) {
  UpstreamWakeups wakeups;
  asio::io_context ioc;
  auto waiter = wakeups.register_waiter("job-1", ioc.get_executor());
  std::thread notifier([&] {
    std::this_thread::sleep_for(30ms);
    EXPECT_TRUE(wakeups.notify("job-1"));
  });
  auto [woken, elapsed] = wait_once(*waiter, ioc, 60s);
  notifier.join();
  EXPECT_TRUE(woken);
  EXPECT_LT(elapsed, 10s);
}

TEST(UpstreamWakeupsTest, NotifyBeforeTheWaitIsNotLost) {
  UpstreamWakeups wakeups;
  asio::io_context ioc;
  auto waiter = wakeups.register_waiter("job-1", ioc.get_executor());
  EXPECT_TRUE(wakeups.notify("job-1"));
  EXPECT_TRUE(wakeups.notify("job-1"));  // collapses with the first
  auto [woken, elapsed] = wait_once(*waiter, ioc, 60s);
  EXPECT_TRUE(woken);
  EXPECT_LT(elapsed, 10s);
  // Consumed: the next wait runs its full time.
  auto [again, elapsed2] = wait_once(*waiter, ioc, 20ms);
  EXPECT_FALSE(again);
  EXPECT_GE(elapsed2, 20ms);
}

TEST(UpstreamWakeupsTest, NotifyBetweenWaitsIsNotLost) {
  UpstreamWakeups wakeups;
  asio::io_context ioc;
  auto waiter = wakeups.register_waiter("job-1", ioc.get_executor());
  EXPECT_FALSE(wait_once(*waiter, ioc, 5ms).first);  // leaves a cancelled/expired timer behind
  EXPECT_TRUE(wakeups.notify("job-1"));
  EXPECT_TRUE(wait_once(*waiter, ioc, 60s).first);
}

TEST(UpstreamWakeupsTest, UnknownIdIsANoOp) {
  UpstreamWakeups wakeups;
  asio::io_context ioc;
  EXPECT_FALSE(wakeups.notify("nobody"));
  EXPECT_EQ(wakeups.waiter_count(), 0u);
  {
    auto waiter = wakeups.register_waiter("job-1", ioc.get_executor());
    EXPECT_EQ(waiter->job_id(), "job-1");
    EXPECT_EQ(wakeups.waiter_count(), 1u);
    EXPECT_FALSE(wakeups.notify("job-2"));
    EXPECT_FALSE(wakeups.notify("job-"));
    EXPECT_FALSE(wait_once(*waiter, ioc, 5ms).first);
  }
  // Unregistered by the destructor.
  EXPECT_EQ(wakeups.waiter_count(), 0u);
  EXPECT_FALSE(wakeups.notify("job-1"));
  ioc.restart();
  ioc.run();  // nothing left behind that touches the destroyed waiter
}

TEST(UpstreamWakeupsTest, SameIdRegisteredTwiceWakesBoth) {
  UpstreamWakeups wakeups;
  asio::io_context ioc;
  auto first = wakeups.register_waiter("job-1", ioc.get_executor());
  auto second = wakeups.register_waiter("job-1", ioc.get_executor());
  EXPECT_EQ(wakeups.waiter_count(), 2u);
  EXPECT_TRUE(wakeups.notify("job-1"));
  EXPECT_TRUE(wait_once(*first, ioc, 60s).first);
  EXPECT_TRUE(wait_once(*second, ioc, 60s).first);
  first.reset();
  EXPECT_EQ(wakeups.waiter_count(), 1u);
  EXPECT_TRUE(wakeups.notify("job-1"));
  EXPECT_TRUE(wait_once(*second, ioc, 60s).first);
}

TEST(UpstreamWakeupsTest, ZeroTimeoutOnlyChecksForANotify) {
  UpstreamWakeups wakeups;
  asio::io_context ioc;
  auto waiter = wakeups.register_waiter("job-1", ioc.get_executor());
  EXPECT_FALSE(wait_once(*waiter, ioc, 0ms).first);
  wakeups.notify("job-1");
  EXPECT_TRUE(wait_once(*waiter, ioc, 0ms).first);
}

// Many waiters looping short and long waits on a two-thread io_context, while other threads
// notify them (and unknown ids) and register/unregister unrelated waiters. Every waiter must
// see its wakeups and finish; sanitizers catch races on the timers and the registry.
asio::awaitable<void> wait_until_woken(UpstreamWakeups* wakeups, std::string job_id, int rounds,
                                       std::atomic<int>* woken_total, std::atomic<int>* finished) {
  asio::any_io_executor executor = co_await asio::this_coro::executor;
  std::unique_ptr<UpstreamWakeups::Waiter> waiter = wakeups->register_waiter(job_id, executor);
  int woken = 0;
  int turn = 0;
  while (woken < rounds) {
    // Alternate very short waits (timers expiring while notifies arrive) and long ones.
    const std::chrono::milliseconds timeout = (turn++ % 2 == 0) ? 1ms : 60s;
    if (co_await waiter->wait_for(timeout)) ++woken;
  }
  *woken_total += woken;
  ++*finished;
}

TEST(UpstreamWakeupsTest, ThreadSafetySmoke) {
  constexpr int kWaiters = 16;
  constexpr int kRounds = 200;
  UpstreamWakeups wakeups;
  asio::io_context ioc(2);
  std::atomic<int> woken_total{0};
  std::atomic<int> finished{0};
  for (int i = 0; i < kWaiters; ++i) {
    asio::co_spawn(
        ioc,
        wait_until_woken(&wakeups, "job-" + std::to_string(i), kRounds, &woken_total, &finished),
        asio::detached);
  }
  auto work = asio::make_work_guard(ioc);
  std::vector<std::thread> io_threads;
  for (int i = 0; i < 2; ++i) io_threads.emplace_back([&] { ioc.run(); });

  std::atomic<bool> stop{false};
  std::vector<std::thread> notifiers;
  for (int t = 0; t < 2; ++t) {
    notifiers.emplace_back([&, t] {
      while (!stop) {
        for (int i = 0; i < kWaiters; ++i) wakeups.notify("job-" + std::to_string(i));
        wakeups.notify("unknown-" + std::to_string(t));
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }
  std::thread churn([&] {
    while (!stop) {
      auto extra = wakeups.register_waiter("job-0", ioc.get_executor());
      std::this_thread::yield();
    }
  });

  const auto deadline = SteadyClock::now() + 30s;
  while (finished < kWaiters && SteadyClock::now() < deadline) std::this_thread::sleep_for(5ms);
  stop = true;
  for (auto& t : notifiers) t.join();
  churn.join();
  work.reset();
  for (auto& t : io_threads) t.join();

  EXPECT_EQ(finished.load(), kWaiters);
  EXPECT_EQ(woken_total.load(), kWaiters * kRounds);
  EXPECT_EQ(wakeups.waiter_count(), 0u);
}

}  // namespace
}  // namespace ig::providers
