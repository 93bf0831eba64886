#pragma once
// Account dialect: GET /v1/me, /v1/credits, /v1/models (and their /api/v1 twins), plus the
// unauthenticated probes /healthz and /readyz.

#include <cstdint>
#include <string>
#include <vector>

#include "accounts/authenticator.h"
#include "http/blocking_pool.h"
#include "http/router.h"
#include "store/store.h"

namespace ig::api {

struct ModelInfo {
  std::string id;
  std::string owned_by = "imagegate";
  std::int64_t created = 0;  // unix seconds
};

struct AccountApiSettings {
  std::vector<ModelInfo> models;
};

class AccountApi {
 public:
  AccountApi(store::Store& store, BlockingPool& pool, accounts::Authenticator& auth,
             AccountApiSettings settings);
  void register_routes(http::Router& router);

 private:
  boost::asio::awaitable<http::Response> me(http::Request& req);
  boost::asio::awaitable<http::Response> credits(http::Request& req);
  boost::asio::awaitable<http::Response> models(http::Request& req);
  boost::asio::awaitable<http::Response> healthz(http::Request& req);
  boost::asio::awaitable<http::Response> readyz(http::Request& req);
  // Authenticates and loads the caller's user row.
  boost::asio::awaitable<Result<std::pair<accounts::Principal, store::User>>> load_user(
      http::Request& req);

  store::Store& store_;
  BlockingPool& pool_;
  accounts::Authenticator& auth_;
  AccountApiSettings settings_;
  std::string models_body_;  // rendered once: the catalog is fixed for the process lifetime
};

// Renders a user id the way every dialect shows it ("user_42").
std::string public_user_id(std::int64_t id);

}  // namespace ig::api
