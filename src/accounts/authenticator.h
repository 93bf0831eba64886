#pragma once
// Authenticator: turns an Authorization header into a Principal.
// Promises: no store access on a cache hit; a key revoked or a user disabled (by this process
// or by the CLI on the same database) stops authenticating within revocation_poll_ms plus one
// lookup; last_used_at is recorded in memory and written in batches, never per request.

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "core/clock.h"
#include "core/error.h"
#include "http/blocking_pool.h"
#include "store/store.h"

namespace ig::accounts {

struct AuthSettings {
  int cache_ttl_ms = 30'000;          // a positive entry is re-read after this long anyway
  int negative_ttl_ms = 2'000;        // unknown keys are remembered briefly (flood protection)
  int revocation_poll_ms = 250;       // how often the store's auth_version is compared
  int last_used_flush_ms = 10'000;    // batch period for last_used_at writes
  std::size_t max_cache_entries = 100'000;
};

struct Principal {
  std::int64_t user_id = 0;
  std::int64_t key_id = 0;
  std::string key_prefix;
  std::string email;
  bool is_admin = false;
  std::string profile;  // the key's compatibility profile ("" = the deployment's)
};

class Authenticator {
 public:
  Authenticator(store::Store& store, BlockingPool& pool, const Clock& clock,
                AuthSettings settings);

  // Validates "Bearer sk-..." and returns who is calling, or kInvalidApiKey.
  boost::asio::awaitable<Result<Principal>> authenticate(std::string_view authorization);

  // Drops every cached entry (called after a local revoke and when auth_version moves).
  void invalidate_all();

  // Maintenance to run on a timer: polls auth_version (blocking: call on the pool).
  void poll_revocations();
  // Writes pending last_used_at stamps (blocking: call on the pool).
  void flush_last_used();

  const AuthSettings& settings() const { return settings_; }
  std::size_t cache_size() const;

 private:
  struct Entry {
    std::optional<Principal> principal;  // nullopt: known-bad key (negative entry)
    std::int64_t loaded_at_ms = 0;
    std::int64_t version = 0;
  };
  std::optional<Result<Principal>> lookup_cached(const std::string& hash);
  void record_use(std::int64_t key_id);

  store::Store& store_;
  BlockingPool& pool_;
  const Clock& clock_;
  AuthSettings settings_;

  mutable std::shared_mutex cache_mu_;
  std::unordered_map<std::string, Entry> cache_;
  std::atomic<std::int64_t> version_{-1};

  std::mutex used_mu_;
  std::unordered_map<std::int64_t, std::int64_t> last_used_;  // key id -> unix seconds
};

}  // namespace ig::accounts
