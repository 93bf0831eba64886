#include "api/account_api.h"

#include <boost/json.hpp>

#include "api/request_auth.h"
#include "core/json.h"

namespace ig::api {

namespace json = boost::json;
using boost::asio::awaitable;

std::string public_user_id(std::int64_t id) { return "user_" + std::to_string(id); }

AccountApi::AccountApi(store::Store& store, BlockingPool& pool, accounts::Authenticator& auth,
                       AccountApiSettings settings)
    : store_(store), pool_(pool), auth_(auth), settings_(std::move(settings)) {
  json::array data;
  for (const auto& m : settings_.models) {
    json::object model{
        {"id", m.id}, {"object", "model"}, {"created", m.created}, {"owned_by", m.owned_by}};
    model_bodies_.emplace(m.id, to_json_text(model));
    data.push_back(std::move(model));
  }
  models_body_ = to_json_text(json::object{{"object", "list"}, {"data", std::move(data)}});
}

void AccountApi::register_routes(http::Router& router) {
  router.add("GET", "/v1/me", [this](http::Request& r) { return me(r); });
  router.add("GET", "/v1/credits", [this](http::Request& r) { return credits(r); });
  router.add("GET", "/v1/models", [this](http::Request& r) { return models(r); });
  router.add("GET", "/v1/models/{id}", [this](http::Request& r) { return model(r); });
  router.add("GET", "/healthz", [this](http::Request& r) { return healthz(r); });
  router.add("GET", "/readyz", [this](http::Request& r) { return readyz(r); });
}

awaitable<Result<std::pair<accounts::Principal, store::User>>> AccountApi::load_user(
    http::Request& req) {
  auto principal = co_await authenticate_request(auth_, req);
  if (!principal) co_return std::unexpected(principal.error());
  const std::int64_t user_id = principal->user_id;
  // The version is read before the row: a commit in between leaves the entry stale, never wrong.
  auto version = store_.change_counter();
  if (version) {
    if (auto hit = cached_user(user_id, *version)) {
      co_return std::make_pair(std::move(*principal), std::move(*hit));
    }
  }
  auto load = [this, user_id] { return store_.find_user(user_id); };
  auto user = co_await pool_.run(load);
  if (user && version) remember_user(*user, *version);
  if (!user) {
    if (user.error().code == store::StoreErrc::kNotFound) {
      co_return std::unexpected(Error{ErrorCode::kInvalidApiKey, "Invalid API key."});
    }
    co_return std::unexpected(Error{ErrorCode::kUnavailable, "Store unavailable."});
  }
  co_return std::make_pair(std::move(*principal), std::move(*user));
}

std::optional<store::User> AccountApi::cached_user(std::int64_t user_id, std::int64_t version) {
  std::lock_guard lock(users_mu_);
  auto it = users_.find(user_id);
  if (it == users_.end() || it->second.version != version) return std::nullopt;
  return it->second.user;
}

void AccountApi::remember_user(const store::User& user, std::int64_t version) {
  std::lock_guard lock(users_mu_);
  if (users_.size() >= 100'000) users_.clear();
  users_[user.id] = CachedUser{version, user};
}

awaitable<http::Response> AccountApi::me(http::Request& req) {
  auto loaded = co_await load_user(req);
  if (!loaded) co_return http::Response::error(loaded.error());
  const auto& [principal, user] = *loaded;
  auto res = http::Response::json(200, to_json_text(json::object{{"id", public_user_id(user.id)},
                                                                 {"email", user.email},
                                                                 {"credits", credits_json(user.balance)}}));
  res.key_prefix = principal.key_prefix;
  co_return res;
}

awaitable<http::Response> AccountApi::credits(http::Request& req) {
  auto loaded = co_await load_user(req);
  if (!loaded) co_return http::Response::error(loaded.error());
  const auto& [principal, user] = *loaded;
  auto res = http::Response::json(200, to_json_text(json::object{
                                           {"credits", credits_json(user.balance)},
                                           {"reserved", credits_json(user.reserved)}}));
  res.key_prefix = principal.key_prefix;
  co_return res;
}

awaitable<http::Response> AccountApi::models(http::Request& req) {
  auto principal = co_await authenticate_request(auth_, req);
  if (!principal) co_return http::Response::error(principal.error());
  auto res = http::Response::json(200, models_body_);
  res.key_prefix = principal->key_prefix;
  co_return res;
}

// OpenAI's `models.retrieve`: one entry of the list, aliases included.
awaitable<http::Response> AccountApi::model(http::Request& req) {
  auto principal = co_await authenticate_request(auth_, req);
  if (!principal) co_return http::Response::error(principal.error());
  auto found = model_bodies_.find(std::string(req.param("id").value_or("")));
  if (found == model_bodies_.end()) {
    const Error unknown{
        ErrorCode::kModelNotFound,
        "The model '" + std::string(req.param("id").value_or("")) + "' does not exist.", "model"};
    auto res = http::Response::error(unknown);
    res.key_prefix = principal->key_prefix;
    co_return res;
  }
  auto res = http::Response::json(200, found->second);
  res.key_prefix = principal->key_prefix;
  co_return res;
}

awaitable<http::Response> AccountApi::healthz(http::Request&) {
  co_return http::Response::json(200, R"({"status":"ok"})");
}

awaitable<http::Response> AccountApi::readyz(http::Request&) {
  auto probe = [this] { return store_.ping(); };
  auto ping = co_await pool_.run(probe);
  if (!ping) {
    co_return http::Response::json(
        503, to_json_text(json::object{{"status", "unavailable"}, {"store", ping.error().message}}));
  }
  co_return http::Response::json(200, R"({"status":"ready","store":"ok"})");
}

}  // namespace ig::api
