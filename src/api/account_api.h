#pragma once
// Account dialect: GET /v1/me, /v1/credits, /v1/models (and their /api/v1 twins), plus the
// unauthenticated probes /healthz and /readyz.

#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
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
  boost::asio::awaitable<http::Response> model(http::Request& req);
  boost::asio::awaitable<http::Response> healthz(http::Request& req);
  boost::asio::awaitable<http::Response> readyz(http::Request& req);
  // Authenticates and loads the caller's user row.
  boost::asio::awaitable<Result<std::pair<accounts::Principal, store::User>>> load_user(
      http::Request& req);

  // User rows keyed on the store's change counter: a hit needs no pool hop, and any commit by
  // anyone (a grant from the CLI included) makes every entry stale at once.
  struct CachedUser {
    std::int64_t version = 0;
    store::User user;
  };
  std::optional<store::User> cached_user(std::int64_t user_id, std::int64_t version);
  void remember_user(const store::User& user, std::int64_t version);

  store::Store& store_;
  BlockingPool& pool_;
  accounts::Authenticator& auth_;
  AccountApiSettings settings_;
  std::mutex users_mu_;
  std::unordered_map<std::int64_t, CachedUser> users_;
  std::string models_body_;  // rendered once: the catalog is fixed for the process lifetime
  std::unordered_map<std::string, std::string> model_bodies_;  // id -> one entry, rendered
};

// Renders a user id the way every dialect shows it ("user_42").
std::string public_user_id(std::int64_t id);

}  // namespace ig::api
