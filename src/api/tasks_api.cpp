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

json::value optional_seconds(const std::optional<std::int64_t>& ms) {
  if (!ms) return nullptr;
  return *ms / 1000;
}

json::object delivery_json(const store::Delivery& d,
                           const std::vector<store::DeliveryAttempt>& attempts) {
  json::array history;
  for (const auto& a : attempts) {
    json::object item{{"number", a.number},
                      {"at", a.at_ms / 1000},
                      {"duration_ms", a.duration_ms},
                      {"response_status", a.status == 0 ? json::value(nullptr) : json::value(a.status)},
                      {"error", a.error.empty() ? json::value(nullptr) : json::value(a.error)}};
    history.push_back(std::move(item));
  }
  const bool pending = d.state == store::DeliveryState::kPending;
  return json::object{
      {"id", d.id},
      {"object", "webhook_delivery"},
      {"task_id", d.job_id},
      {"url", d.url},
      {"status", std::string(store::to_string(d.state))},
      {"attempts", d.attempts},
      {"created_at", d.created_at_ms / 1000},
      {"last_attempt_at", optional_seconds(d.last_attempt_at_ms)},
      {"next_attempt_at", pending ? json::value(d.next_attempt_at_ms / 1000) : json::value(nullptr)},
      {"last_response_status", d.last_status == 0 ? json::value(nullptr) : json::value(d.last_status)},
      {"last_error", d.last_error.empty() ? json::value(nullptr) : json::value(d.last_error)},
      {"history", std::move(history)}};
}

}  // namespace

TasksApi::TasksApi(store::Store& store, BlockingPool& pool, accounts::Authenticator& auth,
                   const Clock& clock, BaseUrl base_url,
                   std::function<void()> wake_deliveries)
    : store_(store),
      pool_(pool),
      auth_(auth),
      clock_(clock),
      base_url_(std::move(base_url)),
      wake_deliveries_(std::move(wake_deliveries)) {}

void TasksApi::register_routes(http::Router& router) {
  router.add("GET", "/v1/tasks/{id}",
             [this](http::Request& r) { return get(r, std::string(kDialectTasks), "path"); });
  router.add("GET", "/v1/images/tasks/{id}",
             [this](http::Request& r) { return get(r, std::string(kDialectSeed002), "path"); });
  router.add("GET", "/v1/images/generations",
             [this](http::Request& r) { return get(r, std::string(kDialectSeed001), "query"); });
  router.add("POST", "/v1/tasks/{id}/cancel", [this](http::Request& r) { return cancel(r); });
  router.add("GET", "/v1/tasks", [this](http::Request& r) { return list(r); });
  router.add("GET", "/v1/tasks/{id}/deliveries",
             [this](http::Request& r) { return deliveries(r); });
  router.add("POST", "/v1/tasks/{id}/deliveries/{delivery}/replay",
             [this](http::Request& r) { return replay(r); });
}

awaitable<std::expected<jobs::Job, http::Response>> TasksApi::own_job(
    http::Request& req, const accounts::Principal& principal) {
  const std::string id(req.param("id").value_or(""));
  if (id.empty() || id.size() > kMaxTaskIdLength) {
    co_return std::unexpected(keyed(http::Response::error(task_not_found()), principal));
  }
  auto load = [this, &id] { return store_.find_job(id); };
  auto job = co_await pool_.run(load);
  if (!job || job->user_id != principal.user_id) {
    co_return std::unexpected(keyed(http::Response::error(task_not_found()), principal));
  }
  co_return std::move(*job);
}

awaitable<http::Response> TasksApi::deliveries(http::Request& req) {
  auto principal = co_await authenticate_request(auth_, req);
  if (!principal) co_return http::Response::error(principal.error());
  auto job = co_await own_job(req, *principal);
  if (!job) co_return std::move(job.error());
  const std::string job_id = job->id;
  json::array data;
  std::string failure;
  auto load = [this, &job_id, &data, &failure]() -> int {
    auto list = store_.list_deliveries(job_id);
    if (!list) {
      failure = list.error().message;
      return 0;
    }
    for (const auto& d : *list) {
      auto attempts = store_.list_delivery_attempts(d.id);
      data.push_back(delivery_json(d, attempts ? *attempts : std::vector<store::DeliveryAttempt>{}));
    }
    return 0;
  };
  (void)co_await pool_.run(load);
  if (!failure.empty()) {
    co_return keyed(http::Response::error(Error{ErrorCode::kUnavailable, failure}), *principal);
  }
  json::object reply{{"object", "list"}, {"data", std::move(data)}};
  co_return keyed(http::Response::json(200, to_json_text(reply)), *principal);
}

awaitable<http::Response> TasksApi::replay(http::Request& req) {
  auto principal = co_await authenticate_request(auth_, req);
  if (!principal) co_return http::Response::error(principal.error());
  auto job = co_await own_job(req, *principal);
  if (!job) co_return std::move(job.error());
  const std::string job_id = job->id;
  const std::string delivery_id(req.param("delivery").value_or(""));
  std::optional<store::Delivery> replayed;
  std::vector<store::DeliveryAttempt> attempts;
  std::string failure;
  auto run = [this, &job_id, &delivery_id, &replayed, &attempts, &failure]() -> int {
    auto list = store_.list_deliveries(job_id);
    if (!list) {
      failure = list.error().message;
      return 0;
    }
    for (const auto& d : *list) {
      if (d.id != delivery_id) continue;
      auto r = store_.replay_delivery(d.id, clock_.now_ms());
      if (!r) {
        failure = r.error().message;
        return 0;
      }
      replayed = std::move(*r);
      if (auto h = store_.list_delivery_attempts(delivery_id)) attempts = std::move(*h);
    }
    return 0;
  };
  (void)co_await pool_.run(run);
  if (!failure.empty()) {
    co_return keyed(http::Response::error(Error{ErrorCode::kUnavailable, failure}), *principal);
  }
  if (!replayed) {
    co_return keyed(http::Response::error(Error{ErrorCode::kNotFound,
                                                "This task has no delivery with that id."}),
                    *principal);
  }
  if (wake_deliveries_) wake_deliveries_();
  co_return keyed(http::Response::json(202, to_json_text(delivery_json(*replayed, attempts))),
                  *principal);
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
  if (wake_deliveries_) wake_deliveries_();
  const std::vector<std::string> urls;
  co_return keyed(
      http::Response::json(200, to_json_text(render_task(*canceled, task_dialect(*canceled), urls))),
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
