#include "accounts/authenticator.h"

#include "accounts/api_key.h"

namespace ig::accounts {
namespace {

Error invalid_key(std::string message) {
  return Error{ErrorCode::kInvalidApiKey, std::move(message)};
}

}  // namespace

Authenticator::Authenticator(store::Store& store, BlockingPool& pool, const Clock& clock,
                             AuthSettings settings)
    : store_(store), pool_(pool), clock_(clock), settings_(settings) {}

std::optional<Result<Principal>> Authenticator::lookup_cached(const std::string& hash) {
  std::shared_lock lock(cache_mu_);
  auto it = cache_.find(hash);
  if (it == cache_.end()) return std::nullopt;
  const Entry& e = it->second;
  const std::int64_t age = clock_.now_ms() - e.loaded_at_ms;
  const int ttl = e.principal ? settings_.cache_ttl_ms : settings_.negative_ttl_ms;
  if (age >= ttl || e.version != version_.load()) return std::nullopt;
  if (!e.principal) return std::unexpected(invalid_key("Invalid API key."));
  return *e.principal;
}

boost::asio::awaitable<Result<Principal>> Authenticator::authenticate(
    std::string_view authorization) {
  auto key = parse_bearer(authorization);
  if (!key) co_return std::unexpected(key.error());
  std::string hash = hash_api_key(*key);

  if (auto cached = lookup_cached(hash)) {
    if (*cached) record_use((*cached)->key_id);
    co_return std::move(*cached);
  }

  const std::int64_t version_before = version_.load();
  auto lookup = [this, &hash] { return store_.find_auth_by_key_hash(hash); };
  auto record = co_await pool_.run(lookup);

  Entry entry;
  entry.loaded_at_ms = clock_.now_ms();
  entry.version = version_before;
  Result<Principal> result = std::unexpected(invalid_key("Invalid API key."));
  if (record) {
    if (record->key.deleted) {
      result = std::unexpected(invalid_key("This API key has been revoked."));
    } else if (record->key.disabled) {
      result = std::unexpected(invalid_key("This API key is disabled."));
    } else if (record->user_disabled) {
      result = std::unexpected(invalid_key("The account that owns this API key is disabled."));
    } else {
      Principal p{record->key.user_id, record->key.id, record->key.prefix, record->email,
                  record->user_is_admin, record->key.profile};
      entry.principal = p;
      result = std::move(p);
    }
  } else if (record.error().code != store::StoreErrc::kNotFound) {
    // Do not cache a store outage as "bad key".
    co_return std::unexpected(Error{ErrorCode::kUnavailable, "Authentication store unavailable."});
  }
  {
    std::unique_lock lock(cache_mu_);
    if (cache_.size() >= settings_.max_cache_entries) cache_.clear();
    cache_[hash] = entry;
  }
  if (result) record_use(result->key_id);
  co_return result;
}

void Authenticator::invalidate_all() {
  std::unique_lock lock(cache_mu_);
  cache_.clear();
}

void Authenticator::poll_revocations() {
  auto v = store_.auth_version();
  if (!v) return;
  const std::int64_t old = version_.exchange(*v);
  if (old != *v) invalidate_all();
}

void Authenticator::record_use(std::int64_t key_id) {
  const std::int64_t now = clock_.now_s();
  std::lock_guard lock(used_mu_);
  auto& stamp = last_used_[key_id];
  if (stamp < now) stamp = now;
}

void Authenticator::flush_last_used() {
  std::vector<std::pair<std::int64_t, std::int64_t>> batch;
  {
    std::lock_guard lock(used_mu_);
    batch.assign(last_used_.begin(), last_used_.end());
    last_used_.clear();
  }
  if (batch.empty()) return;
  if (!store_.touch_api_keys(batch)) {
    std::lock_guard lock(used_mu_);
    for (auto& [id, ts] : batch) {
      auto& stamp = last_used_[id];
      if (stamp < ts) stamp = ts;
    }
  }
}

std::size_t Authenticator::cache_size() const {
  std::shared_lock lock(cache_mu_);
  return cache_.size();
}

}  // namespace ig::accounts
