#pragma once

#include <atomic>
// MemoryStore: an in-process Store fake for unit tests. It keeps every promise of store.h with
// exactly the semantics of SqliteStore (store_contract_test runs the same suite against both),
// but holds everything in memory behind one mutex and persists nothing.

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "jobs/job.h"
#include "store/store.h"

namespace ig::store {

class MemoryStore : public Store {
 private:
  std::atomic<std::int64_t> change_calls_{0};

 public:
 public:
  explicit MemoryStore(const Clock& clock);

  StoreResult<void> ping() override;

  StoreResult<User> create_user(const NewUser& user) override;
  StoreResult<User> find_user(std::int64_t user_id) override;
  StoreResult<User> find_user_by_email(std::string_view email) override;
  StoreResult<std::vector<User>> list_users() override;
  StoreResult<std::int64_t> count_users() override;
  StoreResult<void> set_user_disabled(std::int64_t user_id, bool disabled) override;

  StoreResult<ApiKey> create_api_key(const NewApiKey& key) override;
  StoreResult<std::vector<ApiKey>> list_api_keys(std::int64_t user_id) override;
  StoreResult<std::vector<ApiKey>> find_api_keys_by_prefix(std::string_view prefix) override;
  StoreResult<void> revoke_api_key(std::int64_t key_id) override;
  StoreResult<AuthRecord> find_auth_by_key_hash(std::string_view hash) override;
  StoreResult<void> touch_api_keys(
      const std::vector<std::pair<std::int64_t, std::int64_t>>& key_last_used) override;
  StoreResult<std::int64_t> auth_version() override;
  // Conservative: a new value on every call, so caches keyed on it never serve stale data.
  StoreResult<std::int64_t> change_counter() override { return ++change_calls_; }

  StoreResult<LedgerEntry> grant(std::int64_t user_id, Micros amount,
                                 std::string_view note) override;
  StoreResult<Hold> reserve(std::int64_t user_id, Micros amount, std::string_view job_id) override;
  StoreResult<Hold> settle(std::int64_t hold_id, Micros actual) override;
  StoreResult<Hold> refund(std::int64_t hold_id, std::string_view note) override;
  StoreResult<Hold> find_hold(std::int64_t hold_id) override;
  StoreResult<std::vector<Hold>> list_open_holds() override;
  StoreResult<std::vector<LedgerEntry>> list_ledger(std::int64_t user_id, int limit) override;
  StoreResult<LedgerCheckReport> check_ledger() override;

  StoreResult<jobs::Job> create_job(const jobs::NewJob& job) override;
  StoreResult<jobs::Job> find_job(std::string_view job_id) override;
  StoreResult<jobs::Job> transition_job(std::string_view job_id, jobs::JobStatus from,
                                        jobs::JobStatus to, const jobs::JobUpdate& update) override;
  StoreResult<jobs::Job> finish_job(std::string_view job_id,
                                    const jobs::JobFinish& finish) override;
  StoreResult<std::vector<jobs::Job>> list_unfinished_jobs() override;
  StoreResult<std::vector<jobs::Job>> list_jobs(std::int64_t user_id,
                                                std::optional<jobs::JobStatus> status, int limit,
                                                std::optional<std::string> after_id) override;
  StoreResult<std::vector<jobs::Job>> list_jobs_with_results(std::int64_t finished_before_ms,
                                                             int limit) override;
  StoreResult<void> mark_results_expired(std::string_view job_id, std::int64_t at_ms) override;

  StoreResult<std::string> webhook_secret(std::int64_t user_id,
                                          std::string_view candidate) override;
  StoreResult<void> set_webhook_secret(std::int64_t user_id, std::string_view secret) override;
  StoreResult<std::vector<Delivery>> claim_due_deliveries(std::int64_t now_ms,
                                                          std::int64_t lease_ms,
                                                          int limit) override;
  StoreResult<Delivery> record_delivery_attempt(std::string_view delivery_id,
                                                const DeliveryOutcome& outcome) override;
  StoreResult<std::vector<Delivery>> list_deliveries(std::string_view job_id) override;
  StoreResult<std::vector<DeliveryAttempt>> list_delivery_attempts(
      std::string_view delivery_id) override;
  StoreResult<Delivery> replay_delivery(std::string_view delivery_id, std::int64_t now_ms) override;

 private:
  // All helpers below expect mu_ to be held.
  User* user_locked(std::int64_t user_id);
  Hold* hold_locked(std::int64_t hold_id);
  LedgerEntry& append_locked(std::int64_t user_id, LedgerKind kind, Micros amount,
                             Micros balance_after, std::optional<std::int64_t> hold_id,
                             std::string_view job_id, std::string_view note);
  StoreResult<Hold> reserve_locked(std::int64_t user_id, Micros amount, std::string_view job_id);
  StoreResult<Hold*> open_hold_locked(std::int64_t hold_id);
  Hold& resolve_locked(Hold& hold, HoldState to, Micros charge, std::string_view note);
  StoreResult<void> refuse_job_hold_locked(std::int64_t hold_id) const;

  struct JobRow {
    jobs::Job job;
    std::int64_t seq = 0;  // insertion order, like SQLite's rowid: breaks created_at ties
  };

  struct DeliveryRow {
    Delivery delivery;
    std::int64_t seq = 0;  // insertion order, like SQLite's rowid: breaks due-time ties
    std::vector<DeliveryAttempt> attempts;  // by number
  };

  const Clock& clock_;
  std::mutex mu_;
  std::map<std::int64_t, User> users_;            // by id
  std::map<std::string, std::int64_t> by_email_;  // lower-cased email -> id
  std::map<std::int64_t, ApiKey> keys_;           // by id
  std::map<std::string, std::int64_t> by_hash_;   // key hash -> id
  std::map<std::int64_t, Hold> holds_;            // by id
  std::vector<LedgerEntry> ledger_;               // append-only, ids 1..n in order
  std::map<std::string, JobRow, std::less<>> jobs_;  // by id
  std::map<std::int64_t, std::string> job_of_hold_;  // hold id -> the job it belongs to
  std::map<std::int64_t, std::string> webhook_secrets_;         // by user id
  std::map<std::string, DeliveryRow, std::less<>> deliveries_;  // by delivery id
  std::int64_t next_user_id_ = 1;
  std::int64_t next_key_id_ = 1;
  std::int64_t next_hold_id_ = 1;
  std::int64_t next_job_seq_ = 1;
  std::int64_t next_delivery_seq_ = 1;
  std::int64_t auth_version_ = 0;
};

}  // namespace ig::store
