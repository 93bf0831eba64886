#pragma once
// batched_write: awaits Store::run_batched from a coroutine. The work runs in the store's write
// lane (for SQLite: on the writer thread, inside the next group commit), and the coroutine
// resumes on its own executor once the work's writes are durable (or only committed, see
// Store::Durability), without holding a blocking-pool thread for the wait.

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "store/store.h"

namespace ig::jobs {

// `work` returns a StoreResult<T> and only calls `store`. Taken by lvalue reference for the
// same GCC 12 reason as BlockingPool::run: name the lambda before co_await-ing.
template <class F, class R = std::invoke_result_t<F&>>
boost::asio::awaitable<R> batched_write(
    store::Store& store, F& work,
    store::Store::Durability when = store::Store::Durability::kDurable) {
  co_return co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(R)>(
      [&store, &work, when](auto handler) {
        using Handler = decltype(handler);
        struct State {
          explicit State(Handler h)
              : handler(std::move(h)),
                guard(boost::asio::make_work_guard(boost::asio::get_associated_executor(handler))) {
          }
          Handler handler;
          boost::asio::executor_work_guard<boost::asio::associated_executor_t<Handler>> guard;
          std::optional<R> out;
        };
        auto state = std::make_shared<State>(std::move(handler));
        store.run_batched(
            [state, &work] { state->out.emplace(work()); },
            [state](store::StoreResult<void> durable) {
              R result = !durable ? R(std::unexpected(durable.error()))
                         : state->out
                             ? std::move(*state->out)
                             : R(std::unexpected(store::StoreError{store::StoreErrc::kUnavailable,
                                                                   "batched write did not run"}));
              auto home = state->guard.get_executor();
              boost::asio::post(home, [state, result = std::move(result)]() mutable {
                state->guard.reset();
                std::move(state->handler)(std::move(result));
              });
            },
            when);
      },
      boost::asio::use_awaitable);
}

}  // namespace ig::jobs
