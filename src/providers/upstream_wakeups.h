#pragma once
// UpstreamWakeups: lets the HTTP handler that receives an async-task upstream's callback (any
// thread) wake the adapter that polls that upstream for the same job, so the result is fetched
// now instead of at the next poll interval. A wakeup is only a hint: the adapter still polls.
//
// Promises:
//  - notify() is thread-safe, never blocks on a waiter and never runs waiter code inline; on an
//    unknown job id it is a no-op returning false.
//  - Waiter::wait_for never blocks a thread (the coroutine suspends on its executor).
//  - A notify is never lost: one that arrives while nobody waits makes the next wait_for
//    return true at once (several such notifies collapse into one).
//  - A job id registered more than once: notify wakes every waiter registered under it.
//  - A Waiter unregisters itself when destroyed (RAII); it must not outlive the registry.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace ig::providers {

class UpstreamWakeups {
 public:
  struct State;  // one registered waiter (private to the .cpp)

  // One registration: lives as long as the adapter waits for the job. Owned by one coroutine;
  // wait_for calls must not overlap.
  class Waiter {
   public:
    Waiter(const Waiter&) = delete;
    Waiter& operator=(const Waiter&) = delete;
    ~Waiter();

    // Suspends until `timeout` passes (false) or a notify for this job arrives (true). Returns
    // true at once if a notify arrived since the previous wait ended. Cancelling the awaiting
    // coroutine ends the wait early (returns whether a notify was pending).
    boost::asio::awaitable<bool> wait_for(std::chrono::milliseconds timeout);

    const std::string& job_id() const { return job_id_; }

   private:
    friend class UpstreamWakeups;
    Waiter(UpstreamWakeups& registry, std::string job_id, std::shared_ptr<State> state);

    UpstreamWakeups& registry_;
    std::string job_id_;
    std::shared_ptr<State> state_;
  };

  UpstreamWakeups() = default;
  UpstreamWakeups(const UpstreamWakeups&) = delete;
  UpstreamWakeups& operator=(const UpstreamWakeups&) = delete;

  // Registers a waiter for `job_id` whose waits run on `executor` (the waiting coroutine's).
  std::unique_ptr<Waiter> register_waiter(std::string job_id,
                                          boost::asio::any_io_executor executor);

  // Wakes every waiter registered under `job_id`; false when there is none. Any thread.
  bool notify(std::string_view job_id);

  // Registered waiters (all job ids). For tests and metrics.
  std::size_t waiter_count() const;

 private:
  void unregister(const std::string& job_id, const State* state);

  mutable std::mutex mutex_;
  // Raw pointers: each entry is removed (under mutex_) by its Waiter's destructor before the
  // state can die, so notify never extends a state's life onto the notifying thread.
  std::multimap<std::string, State*, std::less<>> waiters_;
};

}  // namespace ig::providers
