#include "jobs/job_runner.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

namespace ig::jobs {
namespace asio = boost::asio;

namespace {

// Sync jobs are created in the "openai" dialect; every async dialect names a task contract.
bool is_async_job(const Job& job) { return job.dialect != "openai"; }

std::string seconds_text(std::int64_t ms) { return std::to_string(ms / 1000) + " s"; }

}  // namespace

JobRunner::JobRunner(ImagePipeline& pipeline, store::Store& store, BlockingPool& pool,
                     const Clock& clock, JobRunnerSettings settings)
    : pipeline_(pipeline), store_(store), pool_(pool), clock_(clock), settings_(settings) {
  if (settings_.max_running == 0) settings_.max_running = 1;
}

void JobRunner::submit(asio::any_io_executor executor, PreparedImageJob job) {
  enqueue(Entry{std::move(executor), std::make_shared<PreparedImageJob>(std::move(job)), false});
}

void JobRunner::enqueue(Entry entry) {
  {
    std::lock_guard lock(mu_);
    // Once stopping, a job stays queued in the store; the next start runs it.
    if (stopping_) return;
    if (running_ >= settings_.max_running) {
      queue_.push_back(std::move(entry));
      return;
    }
    ++running_;
  }
  start(std::move(entry));
}

void JobRunner::start(Entry entry) {
  asio::co_spawn(entry.executor, run(std::move(entry.job), entry.claimed), asio::detached);
}

void JobRunner::done() {
  Entry next;
  {
    std::lock_guard lock(mu_);
    if (queue_.empty() || stopping_) {
      --running_;
      return;
    }
    next = std::move(queue_.front());
    queue_.pop_front();
  }
  start(std::move(next));
}

asio::awaitable<void> JobRunner::run(std::shared_ptr<PreparedImageJob> job, bool claimed) {
  const std::string job_id = job->job_id;
  bool ran = claimed;
  if (!claimed) {
    JobUpdate start;
    start.mark_started = true;
    auto claim = [this, &job_id, &start] {
      return store_.transition_job(job_id, JobStatus::kQueued, JobStatus::kRunning, start);
    };
    auto result = co_await pool_.run(claim);
    ran = result.has_value();
    if (!result && result.error().code != store::StoreErrc::kConflict) {
      spdlog::warn("job {} could not be claimed: {}", job_id, result.error().message);
    }
  }
  if (ran) {
    auto outcome = co_await pipeline_.execute(*job, nullptr);
    if (!outcome) spdlog::info("job {} failed: {}", job_id, outcome.error().message);
    finished();
  }
  job.reset();
  done();
}

RecoveryReport JobRunner::recover(asio::any_io_executor executor) {
  RecoveryReport report;
  auto jobs = store_.list_unfinished_jobs();
  if (!jobs) {
    spdlog::error("recovery: cannot list unfinished jobs: {}", jobs.error().message);
    return report;
  }
  const std::int64_t now = clock_.now_ms();
  for (const Job& job : *jobs) {
    auto give_up = [&](std::string_view code, const std::string& reason) {
      if (pipeline_.abandon(job, code, reason)) ++report.failed;
      spdlog::warn("recovery: job {} failed and refunded: {}", job.id, reason);
    };
    if (!is_async_job(job)) {
      give_up("internal_error",
              "imagegate restarted while this synchronous job was running and its caller is "
              "gone; refunded");
      continue;
    }
    if (job.created_at_ms + pipeline_.settings().async_deadline_ms <= now) {
      give_up("timeout", "the task did not finish within " +
                             seconds_text(pipeline_.settings().async_deadline_ms) + "; refunded");
      continue;
    }
    auto prepared = pipeline_.restore(job);
    if (!prepared) {
      give_up("internal_error",
              "the task could not be resumed after a restart (" + prepared.error().message +
                  "); refunded");
      continue;
    }
    Entry entry{executor, std::make_shared<PreparedImageJob>(std::move(*prepared)), false};
    if (job.status == JobStatus::kQueued) {
      ++report.requeued;
      enqueue(std::move(entry));
      continue;
    }
    providers::ImageProvider* provider = pipeline_.provider(job.channel);
    if (!job.upstream_task_id.empty()) {
      if (provider == nullptr) {
        give_up("upstream_error", "channel '" + job.channel + "' accepted the task as " +
                                      job.upstream_task_id +
                                      " but is no longer configured; outcome unknown, refunded");
        continue;
      }
      entry.job->task.resume_upstream_task_id = job.upstream_task_id;
      entry.job->resume_channel = job.channel;
      entry.claimed = true;
      ++report.resumed;
      enqueue(std::move(entry));
      continue;
    }
    if (job.attempts == 0 || (provider != nullptr && provider->resubmit_safe())) {
      JobUpdate update;
      auto back = store_.transition_job(job.id, JobStatus::kRunning, JobStatus::kQueued, update);
      if (!back) {
        spdlog::warn("recovery: job {} could not be requeued: {}", job.id, back.error().message);
        continue;
      }
      ++report.requeued;
      enqueue(std::move(entry));
      continue;
    }
    give_up("upstream_error",
            "imagegate restarted while channel '" + job.channel +
                "' was processing the task and that upstream cannot be asked about it; its "
                "outcome is unknown, so it was failed and refunded");
  }
  if (report.failed > 0) finished();
  return report;
}

int JobRunner::sweep_once() {
  auto jobs = store_.list_unfinished_jobs();
  if (!jobs) {
    spdlog::warn("timeout sweep: {}", jobs.error().message);
    return 0;
  }
  const std::int64_t now = clock_.now_ms();
  const std::int64_t deadline = pipeline_.settings().async_deadline_ms;
  int failed = 0;
  for (const Job& job : *jobs) {
    if (!is_async_job(job) || job.created_at_ms + deadline > now) continue;
    if (pipeline_.abandon(job, "timeout",
                          "the task did not finish within " + seconds_text(deadline) +
                              "; refunded")) {
      ++failed;
      spdlog::info("timeout sweep: job {} failed and refunded", job.id);
    }
  }
  if (failed > 0) finished();
  return failed;
}

void JobRunner::start_sweeper(asio::any_io_executor executor) {
  asio::co_spawn(executor, sweeper(), asio::detached);
}

asio::awaitable<void> JobRunner::sweeper() {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  auto pass = [this] { return sweep_once(); };
  while (!stopping_) {
    timer.expires_after(std::chrono::milliseconds(settings_.sweep_interval_ms));
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (stopping_) break;
    (void)co_await pool_.run(pass);
  }
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
