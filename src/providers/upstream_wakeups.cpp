#include "providers/upstream_wakeups.h"

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdint>
#include <tuple>
#include <utility>

namespace ig::providers {

namespace asio = boost::asio;

// How a wait works without touching the timer from another thread: the timer is used only by
// the waiting coroutine (arm, cancel). Both wake sources (notify on any thread, the timer's
// completion on the executor) first set an atomic saying what happened, then ring a
// concurrent_channel doorbell (thread-safe, capacity 1). The coroutine waits on the doorbell
// and then reads the atomics. A ring that finds the doorbell full is not lost: the ring already
// in it is received after the atomic was set, so the check after that receive sees it. Stale
// rings (an earlier wait's timer, a notify already consumed) only cause another loop turn.
struct UpstreamWakeups::State {
  using Doorbell = asio::experimental::concurrent_channel<void(boost::system::error_code)>;

  explicit State(const asio::any_io_executor& executor) : timer(executor), doorbell(executor, 1) {}

  void ring() { doorbell.try_send(boost::system::error_code{}); }

  std::atomic<bool> pending{false};     // a notify arrived and was not consumed yet
  std::atomic<std::uint64_t> fired{0};  // generation of the last timer that expired
  std::uint64_t generation = 0;         // waiting coroutine only
  asio::steady_timer timer;             // waiting coroutine only
  Doorbell doorbell;
};

UpstreamWakeups::Waiter::Waiter(UpstreamWakeups& registry, std::string job_id,
                                std::shared_ptr<State> state)
    : registry_(registry), job_id_(std::move(job_id)), state_(std::move(state)) {}

UpstreamWakeups::Waiter::~Waiter() {
  registry_.unregister(job_id_, state_.get());
  state_->timer.cancel();
}

asio::awaitable<bool> UpstreamWakeups::Waiter::wait_for(std::chrono::milliseconds timeout) {
  static constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);
  State& state = *state_;
  if (state.pending.exchange(false)) co_return true;
  if (timeout.count() <= 0) co_return false;

  const std::uint64_t generation = ++state.generation;
  state.timer.expires_after(timeout);
  // Weak: a completion still queued when the waiter is gone must not touch (or keep) the state.
  std::weak_ptr<State> weak = state_;
  state.timer.async_wait([weak, generation](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled: the wait already ended
    if (std::shared_ptr<State> alive = weak.lock()) {
      alive->fired.store(generation);
      alive->ring();
    }
  });

  while (true) {
    std::tuple<boost::system::error_code> rung = co_await state.doorbell.async_receive(kNoThrow);
    if (state.pending.exchange(false)) {
      state.timer.cancel();
      co_return true;
    }
    if (state.fired.load() == generation) co_return false;
    if (std::get<0>(rung)) {  // the coroutine was cancelled
      state.timer.cancel();
      co_return false;
    }
  }
}

std::unique_ptr<UpstreamWakeups::Waiter> UpstreamWakeups::register_waiter(
    std::string job_id, asio::any_io_executor executor) {
  auto state = std::make_shared<State>(executor);
  {
    std::lock_guard lock(mutex_);
    waiters_.emplace(job_id, state.get());
  }
  return std::unique_ptr<Waiter>(new Waiter(*this, std::move(job_id), std::move(state)));
}

bool UpstreamWakeups::notify(std::string_view job_id) {
  std::lock_guard lock(mutex_);
  auto [first, last] = waiters_.equal_range(job_id);
  if (first == last) return false;
  for (auto it = first; it != last; ++it) {
    it->second->pending.store(true);
    it->second->ring();  // posts the waiting coroutine's resumption; never runs it inline
  }
  return true;
}

std::size_t UpstreamWakeups::waiter_count() const {
  std::lock_guard lock(mutex_);
  return waiters_.size();
}

void UpstreamWakeups::unregister(const std::string& job_id, const State* state) {
  std::lock_guard lock(mutex_);
  auto [first, last] = waiters_.equal_range(job_id);
  for (auto it = first; it != last; ++it) {
    if (it->second == state) {
      waiters_.erase(it);
      return;
    }
  }
}

}  // namespace ig::providers
