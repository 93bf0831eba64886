#pragma once
// ChannelLimiter: at most N generations in flight per provider channel (the operator's limit
// for that upstream; 0 or absent = unlimited), across sync and async jobs. A caller over the
// limit waits as a suspended coroutine (never a thread), first come first served; a released
// slot goes straight to the oldest waiter. Thread-safe.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace ig::jobs {

class ChannelLimiter {
 public:
  // channel -> limit; channels not listed (or listed with <= 0) are unlimited.
  explicit ChannelLimiter(const std::map<std::string, int>& limits);
  ChannelLimiter(const ChannelLimiter&) = delete;
  ChannelLimiter& operator=(const ChannelLimiter&) = delete;

  // Holds one slot of a channel until destroyed (or moved from). Must not outlive the limiter.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept : limiter_(other.limiter_), channel_(std::move(other.channel_)) {
      other.limiter_ = nullptr;
    }
    Slot& operator=(Slot&& other) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { reset(); }
    void reset();

   private:
    friend class ChannelLimiter;
    Slot(ChannelLimiter* limiter, std::string channel)
        : limiter_(limiter), channel_(std::move(channel)) {}
    ChannelLimiter* limiter_ = nullptr;
    std::string channel_;
  };

  // Waits for a slot of `channel` (returns at once for an unlimited channel or a free slot).
  boost::asio::awaitable<Slot> acquire(std::string channel);

  std::size_t in_use(std::string_view channel) const;
  std::size_t waiting(std::string_view channel) const;

 private:
  using Doorbell =
      boost::asio::experimental::concurrent_channel<void(boost::system::error_code)>;
  struct Gate {
    std::size_t limit = 0;
    std::size_t in_use = 0;
    std::deque<std::shared_ptr<Doorbell>> waiters;  // oldest first
  };
  void release(const std::string& channel);

  mutable std::mutex mu_;
  std::map<std::string, Gate, std::less<>> gates_;  // limited channels only; guarded by mu_
};

}  // namespace ig::jobs
