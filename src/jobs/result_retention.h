#pragma once
// ResultRetention: deletes the result files of succeeded jobs once they are older than the
// configured retention, so a long-running deployment's disk stops growing with every image.
//
// Promises:
//  - Only results go: the job row, its charge and its ledger rows stay; the job is marked
//    (results_expired_at_ms) and its image URLs answer 410 from then on.
//  - Files are deleted before the job is marked, so a crash between the two leaves a job the
//    next pass finishes, never a file nothing points to.
//  - A file that cannot be deleted (a disk error) leaves its job unmarked, to be tried again by
//    the next pass; the error is logged.
//  - retention_ms == 0 keeps every result forever (the default): nothing runs.

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "blobs/blob_store.h"
#include "core/clock.h"
#include "http/blocking_pool.h"
#include "store/store.h"

namespace ig::jobs {

struct RetentionSettings {
  std::int64_t retention_ms = 0;  // results older than this (since the job finished) go; 0: never
  std::int64_t sweep_interval_ms = 60'000;
  int max_jobs_per_pass = 1'000;  // bounds one pass's time on the blocking pool
};

class ResultRetention {
 public:
  ResultRetention(store::Store& store, blobs::BlobStore& blobs, BlockingPool& pool,
                  const Clock& clock, RetentionSettings settings);

  bool enabled() const { return settings_.retention_ms > 0; }

  // One pass, blocking: expires the results of up to max_jobs_per_pass jobs that finished more
  // than retention_ms ago. Returns how many jobs it marked.
  int sweep_once();

  // Runs sweep_once every sweep_interval_ms on the pool until *stopping (no-op when disabled);
  // after a pass that hit max_jobs_per_pass, the next one follows within a second.
  boost::asio::awaitable<void> run(std::shared_ptr<std::atomic<bool>> stopping);

 private:
  // Deletes the job's files; false (logged) when one of them could not be deleted.
  bool remove_files(const std::string& job_id, const std::string& result_json);

  store::Store& store_;
  blobs::BlobStore& blobs_;
  BlockingPool& pool_;
  const Clock& clock_;
  RetentionSettings settings_;
};

}  // namespace ig::jobs
