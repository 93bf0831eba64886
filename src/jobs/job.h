#pragma once
// The one job model. Every generation (image or video, sync or async, whatever API dialect
// received it) is a Job row. A job moves queued -> running -> one final state, exactly once;
// the final move resolves its credit hold in the same store transaction.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "billing/money.h"

namespace ig::jobs {

enum class JobStatus { kQueued, kRunning, kSucceeded, kFailed, kCanceled, kExpired };

inline bool is_final(JobStatus s) {
  return s == JobStatus::kSucceeded || s == JobStatus::kFailed || s == JobStatus::kCanceled ||
         s == JobStatus::kExpired;
}
std::string_view to_string(JobStatus status);
std::optional<JobStatus> job_status_from_string(std::string_view text);

// The blob id of each image a finished job's result_json lists ({"images":[{"blob":"..."},...]}),
// by index; "" for an entry without one. Malformed or empty JSON lists none.
std::vector<std::string> result_blob_ids(std::string_view result_json);

struct Job {
  std::string id;  // public, unguessable ("img_" + 8 base62 of the time + 24 random base62)
  std::int64_t user_id = 0;
  std::int64_t key_id = 0;
  std::string kind;     // "image.generation", "image.edit" (later "video.generation", ...)
  std::string model;    // canonical model id
  std::string dialect;  // API dialect that created it; replies and callbacks render in it
  std::string params_json;  // normalized request parameters
  std::string callback_url;
  JobStatus status = JobStatus::kQueued;
  std::optional<std::int64_t> hold_id;  // absent for free jobs
  Micros reserved = 0;
  Micros charged = 0;
  std::string channel;           // provider channel that ran (or last tried) it
  std::string upstream_task_id;  // for async upstreams: set once the upstream accepted work
  int attempts = 0;
  std::string result_json;  // outputs (blob ids, sizes, usage)
  std::string error_code;   // OpenAI error code on failure
  std::string error_message;
  std::int64_t created_at_ms = 0;
  std::int64_t updated_at_ms = 0;
  std::optional<std::int64_t> started_at_ms;
  std::optional<std::int64_t> finished_at_ms;
  // When the retention sweep deleted this succeeded job's result files (the row stays).
  std::optional<std::int64_t> results_expired_at_ms;
};

struct NewJob {
  std::string id;
  std::int64_t user_id = 0;
  std::int64_t key_id = 0;
  std::string kind;
  std::string model;
  std::string dialect;
  std::string params_json;
  std::string callback_url;
  Micros reserve = 0;  // moved from the balance into the job's hold; 0 = free job, no hold
  // Created already running (started now): a sync job, whose caller is its worker. Saves the
  // queued -> running commit on the hot path.
  bool start_running = false;
};

// Fields a non-final transition may set (unset = unchanged).
struct JobUpdate {
  std::optional<std::string> channel;
  std::optional<std::string> upstream_task_id;
  bool mark_started = false;     // started_at_ms = now (if not yet set)
  bool increment_attempts = false;
};

struct JobFinish {
  JobStatus status = JobStatus::kSucceeded;  // must be final
  Micros charge = 0;  // succeeded only: 0 <= charge <= reserved; the rest is returned
  std::string result_json;
  std::string error_code;
  std::string error_message;
  std::string note;  // ledger note for the settle/refund row
  std::optional<std::string> channel;
  // Finish only from this state (cancel: only while queued); otherwise kConflict.
  std::optional<JobStatus> only_from;
};

}  // namespace ig::jobs
