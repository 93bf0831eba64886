#pragma once
// Task endpoints over the one job model, each a dialect of task_views.h:
//   GET  /v1/tasks/{id}                    seed 003 (generic: reads any job of the caller)
//   GET  /v1/images/tasks/{id}             seed 002 (/api/v1/images/tasks/{id})
//   GET  /v1/images/generations?task_id=   seed 001 (/api/v1/images/generations?task_id=)
//   POST /v1/tasks/{id}/cancel             queued -> canceled, refunded; 409 once it started
//   GET  /v1/tasks?status=&limit=&after=   the caller's tasks, newest first, cursor-paginated
//   GET  /v1/tasks/{id}/deliveries         the task's callback deliveries with every attempt
//   POST /v1/tasks/{id}/deliveries/{delivery_id}/replay   send the callback again (same id)
// Unknown ids and other users' ids are the same 404 task_not_found.

#include <boost/asio/awaitable.hpp>
#include <expected>
#include <functional>
#include <string>
#include <vector>

#include "accounts/authenticator.h"
#include "core/clock.h"
#include "http/blocking_pool.h"
#include "http/router.h"
#include "store/store.h"

namespace ig::api {

class TasksApi {
 public:
  // `base_url` renders result URLs (see ImagesApi); it must outlive the API.
  using BaseUrl = std::function<std::string(const http::Request&)>;
  // `wake_deliveries` (may be empty) tells the webhook dispatcher that a delivery became due.
  TasksApi(store::Store& store, BlockingPool& pool, accounts::Authenticator& auth,
           const Clock& clock, BaseUrl base_url, std::function<void()> wake_deliveries = {});
  void register_routes(http::Router& router);

 private:
  boost::asio::awaitable<http::Response> get(http::Request& req, std::string dialect,
                                             std::string id_source);
  boost::asio::awaitable<http::Response> cancel(http::Request& req);
  boost::asio::awaitable<http::Response> list(http::Request& req);
  boost::asio::awaitable<http::Response> deliveries(http::Request& req);
  boost::asio::awaitable<http::Response> replay(http::Request& req);
  // The caller's job named by the {id} path parameter, or the error reply to send.
  boost::asio::awaitable<std::expected<jobs::Job, http::Response>> own_job(
      http::Request& req, const accounts::Principal& principal);

  store::Store& store_;
  BlockingPool& pool_;
  accounts::Authenticator& auth_;
  const Clock& clock_;
  BaseUrl base_url_;
  std::function<void()> wake_deliveries_;
};

}  // namespace ig::api
