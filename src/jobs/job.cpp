#include "jobs/job.h"

#include <boost/json.hpp>

namespace ig::jobs {

std::string_view to_string(JobStatus status) {
  switch (status) {
    case JobStatus::kQueued:
      return "queued";
    case JobStatus::kRunning:
      return "running";
    case JobStatus::kSucceeded:
      return "succeeded";
    case JobStatus::kFailed:
      return "failed";
    case JobStatus::kCanceled:
      return "canceled";
    case JobStatus::kExpired:
      return "expired";
  }
  return "unknown";
}

std::optional<JobStatus> job_status_from_string(std::string_view text) {
  for (JobStatus status : {JobStatus::kQueued, JobStatus::kRunning, JobStatus::kSucceeded,
                           JobStatus::kFailed, JobStatus::kCanceled, JobStatus::kExpired}) {
    if (to_string(status) == text) return status;
  }
  return std::nullopt;
}

std::vector<std::string> result_blob_ids(std::string_view result_json) {
  std::vector<std::string> ids;
  if (result_json.empty()) return ids;
  boost::system::error_code ec;
  boost::json::value result = boost::json::parse(result_json, ec);
  if (ec || !result.is_object()) return ids;
  const boost::json::value* images = result.get_object().if_contains("images");
  if (images == nullptr || !images->is_array()) return ids;
  for (const boost::json::value& entry : images->get_array()) {
    const boost::json::value* blob =
        entry.is_object() ? entry.get_object().if_contains("blob") : nullptr;
    ids.emplace_back(blob != nullptr && blob->is_string() ? blob->get_string() : "");
  }
  return ids;
}

}  // namespace ig::jobs
