#include "jobs/job_runner.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <spdlog/spdlog.h>

namespace ig::jobs {
namespace asio = boost::asio;

JobRunner::JobRunner(ImagePipeline& pipeline, store::Store& store, BlockingPool& pool,
                     std::size_t max_running)
    : pipeline_(pipeline), store_(store), pool_(pool), max_running_(max_running == 0 ? 1 : max_running) {}

void JobRunner::submit(asio::any_io_executor executor, PreparedImageJob job) {
  Entry entry{std::move(executor), std::make_shared<PreparedImageJob>(std::move(job))};
  {
    std::lock_guard lock(mu_);
    if (running_ >= max_running_) {
      queue_.push_back(std::move(entry));
      return;
    }
    ++running_;
  }
  start(std::move(entry));
}

void JobRunner::start(Entry entry) {
  asio::co_spawn(entry.executor, run(std::move(entry.job)), asio::detached);
}

void JobRunner::done() {
  Entry next;
  {
    std::lock_guard lock(mu_);
    if (queue_.empty()) {
      --running_;
      return;
    }
    next = std::move(queue_.front());
    queue_.pop_front();
  }
  start(std::move(next));
}

asio::awaitable<void> JobRunner::run(std::shared_ptr<PreparedImageJob> job) {
  const std::string job_id = job->job_id;
  JobUpdate start;
  start.mark_started = true;
  auto claim = [this, &job_id, &start] {
    return store_.transition_job(job_id, JobStatus::kQueued, JobStatus::kRunning, start);
  };
  auto claimed = co_await pool_.run(claim);
  if (claimed) {
    auto outcome = co_await pipeline_.execute(*job, nullptr);
    if (!outcome) spdlog::info("job {} failed: {}", job_id, outcome.error().message);
  } else if (claimed.error().code != store::StoreErrc::kConflict) {
    spdlog::warn("job {} could not be claimed: {}", job_id, claimed.error().message);
  }
  job.reset();
  done();
}

std::size_t JobRunner::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

std::size_t JobRunner::running() const {
  std::lock_guard lock(mu_);
  return running_;
}

}  // namespace ig::jobs
