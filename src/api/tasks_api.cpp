#include "api/tasks_api.h"

#include <boost/json.hpp>

#include "api/request_auth.h"
#include "api/task_views.h"
#include "core/json.h"

namespace ig::api {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;

namespace {

constexpr std::size_t kMaxTaskIdLength = 64;
constexpr int kDefaultPage = 20;
constexpr int kMaxPage = 100;

Error task_not_found() { return Error{ErrorCode::kTaskNotFound, "No task with this id."}; }

http::Response keyed(http::Response r, const accounts::Principal& p) {
  r.key_prefix = p.key_prefix;
  return r;
}

// The dialect a job's own replies use: a task dialect, or the generic one for sync jobs.
std::string_view reply_dialect(const jobs::Job& job) {
  if (job.dialect == kDialectSeed001 || job.dialect == kDialectSeed002) return job.dialect;
  return kDialectTasks;
}

}  // namespace

TasksApi::TasksApi(store::Store& store, BlockingPool& pool, accounts::Authenticator& auth,
                   BaseUrl base_url)
    : store_(store), pool_(pool), auth_(auth), base_url_(std::move(base_url)) {}

void TasksApi::register_routes(http::Router& router) {
  router.add("GET", "/v1/tasks/{id}",
             [this](http::Request& r) { return get(r, std::string(kDialectTasks), "path"); });
  router.add("GET", "/v1/images/tasks/{id}",
             [this](http::Request& r) { return get(r, std::string(kDialectSeed002), "path"); });
  router.add("GET", "/v1/images/generations",
             [this](http::Request& r) { return get(r, std::string(kDialectSeed001), "query"); });
  router.add("POST", "/v1/tasks/{id}/cancel", [this](http::Request& r) { return cancel(r); });
  router.add("GET", "/v1/tasks", [this](http::Request& r) { return list(r); });
}

awaitable<http::Response> TasksApi::get(http::Request& req, std::string dialect,
                                        std::string id_source) {
  auto principal = co_await authenticate_request(auth_, req);
  if (!principal) co_return http::Response::error(principal.error());
  std::string id;
  if (id_source == "query") {
    auto q = req.query_param("task_id");
    if (!q || q->empty()) {
      co_return keyed(http::Response::error(
                          Error::invalid("'task_id' is required (GET with ?task_id=ID)", "task_id")),
                      *principal);
    }
    id = std::move(*q);
  } else {
    id = std::string(req.param("id").value_or(""));
  }
  if (id.empty() || id.size() > kMaxTaskIdLength) {
    co_return keyed(http::Response::error(task_not_found()), *principal);
  }
  auto load = [this, &id] { return store_.find_job(id); };
  auto job = co_await pool_.run(load);
  if (!job || job->user_id != principal->user_id) {
    co_return keyed(http::Response::error(task_not_found()), *principal);
  }
  const std::vector<std::string> urls = job_image_urls(*job, base_url_(req));
  co_return keyed(http::Response::json(200, to_json_text(render_task(*job, dialect, urls))),
                  *principal);
}

awaitable<http::Response> TasksApi::cancel(http::Request& req) {
  auto principal = co_await authenticate_request(auth_, req);
  if (!principal) co_return http::Response::error(principal.error());
  const std::string id(req.param("id").value_or(""));
  if (id.empty() || id.size() > kMaxTaskIdLength) {
    co_return keyed(http::Response::error(task_not_found()), *principal);
  }
  auto load = [this, &id] { return store_.find_job(id); };
  auto job = co_await pool_.run(load);
  if (!job || job->user_id != principal->user_id) {
    co_return keyed(http::Response::error(task_not_found()), *principal);
  }
  jobs::JobFinish finish;
  finish.status = jobs::JobStatus::kCanceled;
  finish.error_code = "canceled";
  finish.error_message = "The task was canceled by its owner.";
  finish.note = "refund: job " + id + " canceled by its owner";
  finish.only_from = jobs::JobStatus::kQueued;
  auto cancel_job = [this, &id, &finish] { return store_.finish_job(id, finish); };
  auto canceled = co_await pool_.run(cancel_job);
  if (!canceled) {
    if (canceled.error().code == store::StoreErrc::kConflict ||
        canceled.error().code == store::StoreErrc::kAlreadyResolved) {
      auto now = co_await pool_.run(load);
      const std::string state = now ? std::string(jobs::to_string(now->status)) : "finished";
      co_return keyed(
          http::Response::error(Error{ErrorCode::kConflict,
                                      "Only a queued task can be canceled; this one is " + state +
                                          "."}),
          *principal);
    }
    co_return keyed(http::Response::error(Error{ErrorCode::kUnavailable, canceled.error().message}),
                    *principal);
  }
  const std::vector<std::string> urls;
  co_return keyed(
      http::Response::json(200, to_json_text(render_task(*canceled, reply_dialect(*canceled), urls))),
      *principal);
}

awaitable<http::Response> TasksApi::list(http::Request& req) {
  auto principal = co_await authenticate_request(auth_, req);
  if (!principal) co_return http::Response::error(principal.error());
  std::optional<jobs::JobStatus> status;
  if (auto s = req.query_param("status"); s && !s->empty()) {
    status = parse_task_status(*s);
    if (!status) {
      co_return keyed(http::Response::error(Error::invalid(
                          "'status' must be one of pending, processing, completed, succeeded, "
                          "failed, canceled, expired",
                          "status")),
                      *principal);
    }
  }
  int limit = kDefaultPage;
  if (auto l = req.query_param("limit"); l && !l->empty()) {
    if (l->size() > 3 || l->find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(*l) < 1 || std::stoi(*l) > kMaxPage) {
      co_return keyed(http::Response::error(Error::invalid(
                          "'limit' must be an integer from 1 to " + std::to_string(kMaxPage),
                          "limit")),
                      *principal);
    }
    limit = std::stoi(*l);
  }
  std::optional<std::string> after;
  if (auto a = req.query_param("after"); a && !a->empty()) {
    if (a->size() > kMaxTaskIdLength) {
      co_return keyed(http::Response::error(Error::invalid("'after' is not a task id", "after")),
                      *principal);
    }
    after = std::move(*a);
  }
  const std::int64_t user_id = principal->user_id;
  const int fetch = limit + 1;
  auto load = [this, user_id, &status, fetch, &after] {
    return store_.list_jobs(user_id, status, fetch, after);
  };
  auto jobs = co_await pool_.run(load);
  if (!jobs) {
    if (jobs.error().code == store::StoreErrc::kNotFound) {
      co_return keyed(
          http::Response::error(Error::invalid("'after' does not name one of your tasks", "after")),
          *principal);
    }
    co_return keyed(http::Response::error(Error{ErrorCode::kUnavailable, jobs.error().message}),
                    *principal);
  }
  const bool has_more = jobs->size() > static_cast<std::size_t>(limit);
  if (has_more) jobs->resize(static_cast<std::size_t>(limit));
  const std::string base = base_url_(req);
  json::array data;
  for (const auto& job : *jobs) {
    data.push_back(render_task(job, kDialectTasks, job_image_urls(job, base)));
  }
  json::object reply{{"object", "list"}, {"data", std::move(data)}, {"has_more", has_more}};
  if (!jobs->empty()) {
    reply["first_id"] = jobs->front().id;
    reply["last_id"] = jobs->back().id;
  }
  co_return keyed(http::Response::json(200, to_json_text(reply)), *principal);
}

}  // namespace ig::api
