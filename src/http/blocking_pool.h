#pragma once
// BlockingPool: a fixed set of threads for work that blocks (SQLite, argon2, image encoding).
// IO-thread coroutines `co_await pool.run(fn)`: fn runs on a pool thread and the coroutine
// resumes on its own executor, so IO threads never block. The thread count is the bound; the
// queue length is observable (pending()) so callers can shed load before it grows.

#include <atomic>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <type_traits>

namespace ig {

class BlockingPool {
 public:
  explicit BlockingPool(std::size_t threads) : pool_(threads), threads_(threads) {}
  ~BlockingPool() { stop(); }
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // Runs fn() on a pool thread. R must be default-constructible (Result<...> types are).
  //
  // `fn` is taken by lvalue reference on purpose: GCC 12 destroys the captures of a lambda
  // created inside a co_await expression twice (a compiler bug), so callers must name the job
  // first (`auto job = [..] {..}; co_await pool.run(job);`), and a temporary does not compile.
  template <class F, class R = std::invoke_result_t<F&>>
  boost::asio::awaitable<R> run(F& fn) {
    co_return co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&,
                                                   void(std::exception_ptr, R)>(
        [this, &fn](auto handler) {
          ++pending_;
          auto work = boost::asio::make_work_guard(boost::asio::get_associated_executor(handler));
          boost::asio::post(pool_, [this, &fn, handler = std::move(handler),
                                    work = std::move(work)]() mutable {
            --pending_;
            std::exception_ptr error;
            R result{};
            try {
              result = fn();
            } catch (...) {
              error = std::current_exception();
            }
            auto home = work.get_executor();
            work.reset();
            boost::asio::post(home, [handler = std::move(handler), error,
                                     result = std::move(result)]() mutable {
              std::move(handler)(error, std::move(result));
            });
          });
        },
        boost::asio::use_awaitable);
  }

  std::size_t pending() const { return pending_.load(std::memory_order_relaxed); }
  std::size_t threads() const { return threads_; }
  void stop() {
    pool_.stop();
    pool_.join();
  }

 private:
  boost::asio::thread_pool pool_;
  std::size_t threads_;
  std::atomic<std::size_t> pending_{0};
};

}  // namespace ig
