#include "jobs/job.h"

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

}  // namespace ig::jobs
