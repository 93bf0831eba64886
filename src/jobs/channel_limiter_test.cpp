#include "jobs/channel_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <vector>

namespace ig::jobs {
namespace {

namespace asio = boost::asio;

struct Tally {
  std::atomic<int> now{0};
  std::atomic<int> peak{0};
  std::atomic<int> done{0};
  std::mutex mu;
  std::vector<int> order;  // who got a slot, in order
};

asio::awaitable<void> hold(ChannelLimiter& limiter, std::string channel, int id, Tally& tally) {
  ChannelLimiter::Slot slot = co_await limiter.acquire(channel);
  {
    std::lock_guard lock(tally.mu);
    tally.order.push_back(id);
  }
  const int now = ++tally.now;
  int peak = tally.peak.load();
  while (now > peak && !tally.peak.compare_exchange_weak(peak, now)) {
  }
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(std::chrono::milliseconds(5));
  co_await timer.async_wait(asio::use_awaitable);
  --tally.now;
  ++tally.done;
}

TEST(ChannelLimiter, BoundsAChannelAndServesWaitersInArrivalOrder) {
  ChannelLimiter limiter({{"kie", 2}});
  asio::io_context ioc;
  Tally tally;
  for (int i = 0; i < 6; ++i) asio::co_spawn(ioc, hold(limiter, "kie", i, tally), asio::detached);
  ioc.run();
  EXPECT_EQ(tally.done, 6);
  EXPECT_EQ(tally.peak, 2);
  EXPECT_EQ(tally.order, (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(limiter.in_use("kie"), 0u);
  EXPECT_EQ(limiter.waiting("kie"), 0u);
}

TEST(ChannelLimiter, UnlimitedChannelsNeverWait) {
  ChannelLimiter limiter({{"kie", 1}, {"free", 0}});
  asio::io_context ioc;
  Tally tally;
  for (int i = 0; i < 5; ++i) asio::co_spawn(ioc, hold(limiter, "local", i, tally), asio::detached);
  for (int i = 0; i < 5; ++i) asio::co_spawn(ioc, hold(limiter, "free", i, tally), asio::detached);
  ioc.run();
  EXPECT_EQ(tally.done, 10);
  EXPECT_EQ(tally.peak, 10);
  EXPECT_EQ(limiter.in_use("local"), 0u);
}

TEST(ChannelLimiter, CountsSlotsAndWaiters) {
  ChannelLimiter limiter({{"kie", 1}});
  asio::io_context ioc;
  std::optional<ChannelLimiter::Slot> first;
  asio::co_spawn(
      ioc,
      [](ChannelLimiter& l, std::optional<ChannelLimiter::Slot>& out) -> asio::awaitable<void> {
        out = co_await l.acquire("kie");
      }(limiter, first),
      asio::detached);
  ioc.poll();  // poll, not run: a waiting coroutine keeps the io_context busy
  EXPECT_EQ(limiter.in_use("kie"), 1u);
  Tally tally;
  asio::co_spawn(ioc, hold(limiter, "kie", 7, tally), asio::detached);
  ioc.restart();  // the first poll ran out of work, which stops an io_context
  ioc.poll();
  EXPECT_EQ(limiter.waiting("kie"), 1u);
  EXPECT_EQ(tally.done, 0);
  first.reset();  // hands the slot to the waiter
  ioc.run();
  EXPECT_EQ(tally.done, 1);
  EXPECT_EQ(limiter.in_use("kie"), 0u);
}

TEST(ChannelLimiter, HoldsItsBoundAcrossThreads) {
  ChannelLimiter limiter({{"kie", 3}});
  asio::thread_pool pool(4);
  Tally tally;
  for (int i = 0; i < 200; ++i) asio::co_spawn(pool, hold(limiter, "kie", i, tally), asio::detached);
  pool.join();
  EXPECT_EQ(tally.done, 200);
  EXPECT_LE(tally.peak, 3);
  EXPECT_EQ(limiter.in_use("kie"), 0u);
}

}  // namespace
}  // namespace ig::jobs
