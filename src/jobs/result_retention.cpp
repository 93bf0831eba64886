#include "jobs/result_retention.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>

namespace ig::jobs {

namespace asio = boost::asio;

ResultRetention::ResultRetention(store::Store& store, blobs::BlobStore& blobs, BlockingPool& pool,
                                 const Clock& clock, RetentionSettings settings)
    : store_(store), blobs_(blobs), pool_(pool), clock_(clock), settings_(settings) {}

bool ResultRetention::remove_files(const std::string& job_id, const std::string& result_json) {
  bool all_gone = true;
  for (const std::string& blob_id : result_blob_ids(result_json)) {
    if (blob_id.empty()) continue;
    auto removed = blobs_.remove(blob_id);
    if (!removed && removed.error().code != ErrorCode::kNotFound) {
      spdlog::warn("result retention: job {}: deleting {} failed: {}; will retry", job_id, blob_id,
                   removed.error().message);
      all_gone = false;
    }
  }
  return all_gone;
}

int ResultRetention::sweep_once() {
  if (!enabled()) return 0;
  const std::int64_t now = clock_.now_ms();
  const std::int64_t cutoff = now - settings_.retention_ms;
  int marked = 0;
  int looked_at = 0;
  while (looked_at < settings_.max_jobs_per_pass) {
    const int limit = std::min(200, settings_.max_jobs_per_pass - looked_at);
    auto jobs = store_.list_jobs_with_results(cutoff, limit);
    if (!jobs) {
      spdlog::warn("result retention: listing jobs failed: {}", jobs.error().message);
      break;
    }
    int progress = 0;
    for (const Job& job : *jobs) {
      ++looked_at;
      if (!remove_files(job.id, job.result_json)) continue;
      auto done = store_.mark_results_expired(job.id, clock_.now_ms());
      if (!done) {
        spdlog::warn("result retention: job {}: {}", job.id, done.error().message);
        continue;
      }
      ++marked;
      ++progress;
    }
    // A short page is the end of the list; a page with no progress (every file refused) would
    // only be listed again.
    if (std::cmp_less(jobs->size(), limit) || progress == 0) break;
  }
  if (marked > 0) spdlog::info("result retention: deleted the results of {} jobs", marked);
  return marked;
}

asio::awaitable<void> ResultRetention::run(std::shared_ptr<std::atomic<bool>> stopping) {
  if (!enabled()) co_return;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  auto pass = [this] { return sweep_once(); };
  while (!*stopping) {
    const int marked = co_await pool_.run(pass);
    // A full pass means a backlog (retention just enabled on an old database): go on soon
    // rather than one bounded pass per interval.
    const bool backlog = marked >= settings_.max_jobs_per_pass;
    timer.expires_after(std::chrono::milliseconds(
        backlog ? std::min<std::int64_t>(settings_.sweep_interval_ms, 1'000)
                : settings_.sweep_interval_ms));
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

}  // namespace ig::jobs
