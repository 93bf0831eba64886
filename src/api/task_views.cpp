#include "api/task_views.h"

#include <boost/json.hpp>

#include "billing/money.h"
#include "core/json.h"

namespace ig::api {
namespace json = boost::json;

namespace {

std::int64_t seconds(std::int64_t ms) { return ms / 1000; }

// seed 003 has no canceled state: a canceled task reads as failed with code "canceled".
std::string_view seed003_status(jobs::JobStatus s) {
  switch (s) {
    case jobs::JobStatus::kQueued:
      return "pending";
    case jobs::JobStatus::kRunning:
      return "processing";
    case jobs::JobStatus::kSucceeded:
      return "completed";
    default:
      return "failed";
  }
}

std::string_view seed002_status(jobs::JobStatus s) {
  switch (s) {
    case jobs::JobStatus::kQueued:
      return "pending";
    case jobs::JobStatus::kRunning:
      return "processing";
    case jobs::JobStatus::kSucceeded:
      return "succeeded";
    case jobs::JobStatus::kCanceled:
      return "canceled";
    default:
      return "failed";
  }
}

json::object error_of(const jobs::Job& job) {
  std::string code = job.error_code;
  std::string message = job.error_message;
  if (code.empty()) code = job.status == jobs::JobStatus::kCanceled ? "canceled" : "internal_error";
  if (message.empty()) {
    message = job.status == jobs::JobStatus::kCanceled ? "The task was canceled."
              : job.status == jobs::JobStatus::kExpired ? "The task expired."
                                                         : "Generation failed";
  }
  return json::object{{"code", code}, {"message", message}};
}

bool failed_like(jobs::JobStatus s) {
  return s == jobs::JobStatus::kFailed || s == jobs::JobStatus::kCanceled ||
         s == jobs::JobStatus::kExpired;
}

json::object seed003_task(const jobs::Job& job, const std::vector<std::string>& urls) {
  json::object o{{"id", job.id},
                 {"status", seed003_status(job.status)},
                 {"model", job.model},
                 {"created_at", seconds(job.created_at_ms)}};
  if (job.finished_at_ms) o["completed_at"] = seconds(*job.finished_at_ms);
  if (job.status == jobs::JobStatus::kSucceeded) {
    json::array list;
    for (const auto& u : urls) list.emplace_back(u);
    const std::int64_t start = job.started_at_ms.value_or(job.created_at_ms);
    const std::int64_t cost_s = job.finished_at_ms ? (*job.finished_at_ms - start + 999) / 1000 : 0;
    o["output"] = json::object{{"urls", std::move(list)},
                               {"metadata", json::object{{"model", job.model}, {"costTime", cost_s}}}};
  }
  if (failed_like(job.status)) o["error"] = error_of(job);
  return o;
}

json::object seed002_task(const jobs::Job& job, const std::vector<std::string>& urls) {
  // Credits: the reservation while it runs, then what was actually charged.
  const Micros credits = jobs::is_final(job.status) ? job.charged : job.reserved;
  json::array data;
  for (const auto& u : urls) data.push_back(json::object{{"url", u}});
  json::object o{{"id", job.id},
                 {"object", "image.generation"},
                 {"created", seconds(job.created_at_ms)},
                 {"model", job.model},
                 {"status", seed002_status(job.status)},
                 {"credits", credits_json(credits)},
                 {"data", std::move(data)}};
  if (failed_like(job.status)) o["error"] = error_of(job);
  return o;
}

}  // namespace

std::vector<std::string> job_image_urls(const jobs::Job& job, std::string_view base) {
  std::vector<std::string> urls;
  if (job.status != jobs::JobStatus::kSucceeded) return urls;
  boost::system::error_code ec;
  json::value result = json::parse(job.result_json, ec);
  if (ec || !result.is_object()) return urls;
  const json::value* images = result.get_object().if_contains("images");
  if (images == nullptr || !images->is_array()) return urls;
  const std::size_t n = images->get_array().size();
  for (std::size_t i = 0; i < n; ++i) {
    std::string url = std::string(base) + "/api/jobs/" + job.id + "/image";
    if (n > 1) url += "?index=" + std::to_string(i);
    urls.push_back(std::move(url));
  }
  return urls;
}

json::object render_task_created(const jobs::Job& job, std::string_view dialect) {
  if (dialect == kDialectSeed002) return seed002_task(job, {});
  json::object data{{"taskId", job.id}};
  if (dialect == kDialectSeed001) return json::object{{"code", 200}, {"data", std::move(data)}};
  return json::object{{"code", 200}, {"msg", "success"}, {"data", std::move(data)}};
}

json::object render_task(const jobs::Job& job, std::string_view dialect,
                         const std::vector<std::string>& urls) {
  if (dialect == kDialectSeed002) return seed002_task(job, urls);
  if (dialect == kDialectSeed001) {
    // seed 001 only says "poll until completed"; its replies are wrapped in {code, data}.
    json::object task = seed003_task(job, urls);
    task["taskId"] = job.id;
    return json::object{{"code", 200}, {"msg", "success"}, {"data", std::move(task)}};
  }
  return seed003_task(job, urls);
}

std::optional<jobs::JobStatus> parse_task_status(std::string_view name) {
  if (name == "pending" || name == "queued") return jobs::JobStatus::kQueued;
  if (name == "processing" || name == "running" || name == "in_progress") {
    return jobs::JobStatus::kRunning;
  }
  if (name == "completed" || name == "succeeded") return jobs::JobStatus::kSucceeded;
  if (name == "failed") return jobs::JobStatus::kFailed;
  if (name == "canceled" || name == "cancelled") return jobs::JobStatus::kCanceled;
  if (name == "expired") return jobs::JobStatus::kExpired;
  return std::nullopt;
}

std::string_view task_dialect(const jobs::Job& job) {
  if (job.dialect == kDialectSeed001 || job.dialect == kDialectSeed002) return job.dialect;
  return kDialectTasks;
}

std::string render_callback_body(const jobs::Job& job, std::string_view base) {
  return to_json_text(render_task(job, task_dialect(job), job_image_urls(job, base)));
}

}  // namespace ig::api
