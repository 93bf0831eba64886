#include "jobs/channel_limiter.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace ig::jobs {
namespace asio = boost::asio;

ChannelLimiter::ChannelLimiter(const std::map<std::string, int>& limits) {
  for (const auto& [channel, limit] : limits) {
    if (limit > 0) gates_[channel].limit = static_cast<std::size_t>(limit);
  }
}

ChannelLimiter::Slot& ChannelLimiter::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    reset();
    limiter_ = other.limiter_;
    channel_ = std::move(other.channel_);
    other.limiter_ = nullptr;
  }
  return *this;
}

void ChannelLimiter::Slot::reset() {
  if (limiter_ != nullptr) limiter_->release(channel_);
  limiter_ = nullptr;
}

asio::awaitable<ChannelLimiter::Slot> ChannelLimiter::acquire(std::string channel) {
  std::shared_ptr<Doorbell> doorbell;
  {
    std::lock_guard lock(mu_);
    auto it = gates_.find(channel);
    if (it == gates_.end()) co_return Slot{};  // unlimited
    Gate& gate = it->second;
    if (gate.in_use < gate.limit && gate.waiters.empty()) {
      ++gate.in_use;
      co_return Slot(this, std::move(channel));
    }
    doorbell = std::make_shared<Doorbell>(co_await asio::this_coro::executor, 1);
    gate.waiters.push_back(doorbell);
  }
  // release() hands its slot over by ringing: in_use already counts this caller.
  (void)co_await doorbell->async_receive(asio::as_tuple(asio::use_awaitable));
  co_return Slot(this, std::move(channel));
}

void ChannelLimiter::release(const std::string& channel) {
  std::shared_ptr<Doorbell> next;
  {
    std::lock_guard lock(mu_);
    auto it = gates_.find(channel);
    if (it == gates_.end()) return;
    Gate& gate = it->second;
    if (gate.waiters.empty()) {
      if (gate.in_use > 0) --gate.in_use;
      return;
    }
    next = std::move(gate.waiters.front());
    gate.waiters.pop_front();
  }
  next->try_send(boost::system::error_code{});
}

std::size_t ChannelLimiter::in_use(std::string_view channel) const {
  std::lock_guard lock(mu_);
  auto it = gates_.find(channel);
  return it == gates_.end() ? 0 : it->second.in_use;
}

std::size_t ChannelLimiter::waiting(std::string_view channel) const {
  std::lock_guard lock(mu_);
  auto it = gates_.find(channel);
  return it == gates_.end() ? 0 : it->second.waiters.size();
}

}  // namespace ig::jobs
