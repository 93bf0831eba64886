#pragma once
// JobRunner: the async path of the job engine. An async create call prepares its job (queued,
// credits reserved) and hands it here; the caller answers at once with the task id. Queued jobs
// run in arrival order, at most `max_running` at a time, as coroutines (a queued job costs its
// prepared inputs in memory, never a thread).
//
// Promises: a job is claimed with a compare-and-set queued -> running, so a cancel that won the
// race (queued -> canceled) is never run; once claimed, ImagePipeline::execute finishes it
// exactly once (settle or refund). Thread-safe: submit() may be called from any IO thread.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>

#include "http/blocking_pool.h"
#include "jobs/image_pipeline.h"
#include "store/store.h"

namespace ig::jobs {

class JobRunner {
 public:
  JobRunner(ImagePipeline& pipeline, store::Store& store, BlockingPool& pool,
            std::size_t max_running);

  // Queues a prepared job (created queued, reservation held). Returns at once; the job runs on
  // `executor`.
  void submit(boost::asio::any_io_executor executor, PreparedImageJob job);

  std::size_t queued() const;
  std::size_t running() const;

 private:
  struct Entry {
    boost::asio::any_io_executor executor;
    std::shared_ptr<PreparedImageJob> job;
  };
  boost::asio::awaitable<void> run(std::shared_ptr<PreparedImageJob> job);
  void start(Entry entry);
  void done();

  ImagePipeline& pipeline_;
  store::Store& store_;
  BlockingPool& pool_;
  const std::size_t max_running_;
  mutable std::mutex mu_;
  std::deque<Entry> queue_;  // guarded by mu_
  std::size_t running_ = 0;  // guarded by mu_
};

}  // namespace ig::jobs
