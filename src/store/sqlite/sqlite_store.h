#pragma once
// SqliteStore: the production Store on one SQLite file (WAL mode).
//
// Promises, beyond store.h:
//  - Every balance change runs as one BEGIN IMMEDIATE transaction on one connection, so the
//    no-overdraft and resolve-at-most-once rules hold across threads *and* across processes
//    sharing the file (server + CLI). SQLITE_BUSY beyond the busy timeout is retried a bounded
//    number of times, then reported as kUnavailable.
//  - The schema is versioned; open() applies missing migrations exactly once, safely even when
//    two processes open the same file at the same moment.
//  - Every write of this process goes through one writer thread that group-commits whatever
//    is queued (see run_batched). With synchronous_full (the default) a write returns only
//    after a flusher thread has fdatasync'ed the WAL past its COMMIT, so it survives power
//    loss; the writer commits the next batch meanwhile. Other connections may read a commit
//    up to one device flush before it is durable. With NORMAL writes survive a crash of the
//    process, and a power loss can roll back the last commits but never leaves the ledger
//    inconsistent.
//  - No SQL leaves this folder; no exception leaves this class.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "jobs/job.h"
#include "store/store.h"

namespace ig::store {

namespace detail {
class SqlitePool;
}  // namespace detail

struct SqliteSettings {
  std::string path;  // database file; missing parent directories are created
  int busy_timeout_ms = 5000;
  int pool_size = 4;
  bool synchronous_full = true;  // false: synchronous=NORMAL (one fsync per checkpoint, not commit)
  // Keep the partial index that list_jobs_with_results walks (created at open, dropped when
  // false). Only a deployment with result retention lists those jobs; the others spare every
  // finish an index insert. Without it the listing is still right, by a scan of the jobs.
  bool index_kept_results = false;
};

class SqliteBlobStore;

class SqliteStore final : public Store {
 public:
  static StoreResult<std::unique_ptr<SqliteStore>> open(const SqliteSettings& settings,
                                                        const Clock& clock);
  // Version of the newest migration compiled into this binary.
  static std::int64_t latest_schema_version();

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

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
  StoreResult<std::int64_t> change_counter() override;

  StoreResult<LedgerEntry> grant(std::int64_t user_id, Micros amount,
                                 std::string_view note) override;
  StoreResult<Hold> reserve(std::int64_t user_id, Micros amount, std::string_view job_id) override;
  StoreResult<Hold> settle(std::int64_t hold_id, Micros actual) override;
  StoreResult<Hold> refund(std::int64_t hold_id, std::string_view note) override;
  StoreResult<Hold> find_hold(std::int64_t hold_id) override;
  StoreResult<std::vector<Hold>> list_open_holds() override;
  StoreResult<std::vector<LedgerEntry>> list_ledger(std::int64_t user_id, int limit) override;
  StoreResult<LedgerCheckReport> check_ledger() override;
  void run_batched(BatchedWork work, BatchedDone done, Durability when) override;

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
  friend class SqliteBlobStore;
  struct BlobRow {
    std::string id;
    std::string content_type;
    std::int64_t size = 0;
    std::string etag;
    std::int64_t created_at = 0;
  };
  StoreResult<void> blob_insert(const BlobRow& row, std::string_view data);
  StoreResult<BlobRow> blob_find(std::string_view id);  // kNotFound if absent
  struct BlobSlice {
    std::int64_t size = 0;  // of the whole blob
    std::string bytes;      // `length` bytes from `offset`, fewer at the end
  };
  // One read for the size and the bytes; kNotFound if absent.
  StoreResult<BlobSlice> blob_read(std::string_view id, std::int64_t offset, std::int64_t length);
  StoreResult<bool> blob_delete(std::string_view id);  // false if absent

  SqliteStore(std::unique_ptr<detail::SqlitePool> pool, const Clock& clock);

  std::unique_ptr<detail::SqlitePool> pool_;  // connections, statement caches, writer lock
  const Clock& clock_;
};

}  // namespace ig::store
