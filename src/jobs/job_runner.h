#pragma once
// JobRunner: the async path of the job engine. An async create call prepares its job (queued,
// credits reserved, inputs persisted) and hands it here; the caller answers at once with the
// task id. Queued jobs run in arrival order, at most `max_running` at a time, as coroutines (a
// queued job costs its prepared inputs in memory, never a thread).
//
// Promises:
//  - A queued job is claimed with a compare-and-set queued -> running, so a cancel that won the
//    race (queued -> canceled) is never run; once claimed, ImagePipeline::execute finishes it
//    exactly once (settle or refund).
//  - recover() (startup) resumes every unfinished async job: one an async upstream accepted
//    keeps waiting on its upstream task id and is never resubmitted; one that never reached an
//    upstream (or only a resubmit-safe one, like `local`) is requeued; one whose outcome cannot
//    be known is failed and refunded with the reason written down. Sync jobs (their caller is
//    gone) are failed and refunded.
//  - The timeout sweep fails and refunds async jobs older than the deadline. A job that
//    finishes after that is reconciled by finish_job's compare-and-set: the refund stands, it is
//    never charged or refunded twice.
// Thread-safe: submit() may be called from any IO thread.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include "core/clock.h"
#include "http/blocking_pool.h"
#include "jobs/image_pipeline.h"
#include "store/store.h"

namespace ig::jobs {

struct JobRunnerSettings {
  std::size_t max_running = 256;
  std::int64_t sweep_interval_ms = 5'000;
};

struct RecoveryReport {
  int requeued = 0;  // queued again (never reached an upstream, or a resubmit-safe one)
  int resumed = 0;   // waiting again on the upstream task that had accepted them
  int failed = 0;    // failed and refunded (sync, past the deadline, or outcome unknown)
};

class JobRunner {
 public:
  JobRunner(ImagePipeline& pipeline, store::Store& store, BlockingPool& pool, const Clock& clock,
            JobRunnerSettings settings);

  // Called (from any thread) after an async job reached a final state here: the webhook
  // dispatcher's wake-up. Set before the first submit.
  void set_on_finished(std::function<void()> on_finished) { on_finished_ = std::move(on_finished); }

  // Queues a prepared job (created queued, reservation held). Returns at once; the job runs on
  // `executor`.
  void submit(boost::asio::any_io_executor executor, PreparedImageJob job);

  // Startup recovery of the jobs a previous process left unfinished (see above). Blocking: call
  // it before serving, or on the pool.
  RecoveryReport recover(boost::asio::any_io_executor executor);

  // One pass of the timeout sweep: returns how many jobs it failed. Blocking.
  int sweep_once();
  // Runs sweep_once every sweep_interval_ms on the pool until stop().
  void start_sweeper(boost::asio::any_io_executor executor);
  // Starts no more jobs (queued ones stay queued in the store for the next start); running ones
  // go on, and running() says when they are done.
  void stop() { stopping_ = true; }

  std::size_t queued() const;
  std::size_t running() const;

 private:
  struct Entry {
    boost::asio::any_io_executor executor;
    std::shared_ptr<PreparedImageJob> job;
    bool claimed = false;  // already running (resumed after a restart): skip the claim
  };
  void enqueue(Entry entry);
  boost::asio::awaitable<void> run(std::shared_ptr<PreparedImageJob> job, bool claimed);
  boost::asio::awaitable<void> sweeper();
  void start(Entry entry);
  void done();
  void finished() const {
    if (on_finished_) on_finished_();
  }

  ImagePipeline& pipeline_;
  store::Store& store_;
  BlockingPool& pool_;
  const Clock& clock_;
  JobRunnerSettings settings_;
  std::function<void()> on_finished_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::deque<Entry> queue_;  // guarded by mu_
  std::size_t running_ = 0;  // guarded by mu_
};

}  // namespace ig::jobs
