#pragma once
// Store: everything imagegate persists, behind one interface. Callers never see SQL.
//
// Promises every implementation keeps (and store_contract_test checks):
//  - Emails are unique case-insensitively and stored lower-cased.
//  - Each balance change is exactly one ledger row written in the same atomic step as the
//    change, carrying the balance after it.
//  - A user's balance never goes below zero, whatever the concurrency: a reserve or a negative
//    adjustment that would overdraw fails (reserve) or is clamped at zero (adjust).
//  - A hold is resolved (settled or refunded) at most once; a second attempt changes nothing
//    and returns kAlreadyResolved.
//  - A job reaches a final state at most once, and its hold (if any) is resolved in the same
//    atomic step; a job's hold is resolved only that way, never by settle/refund.
//  - All methods are blocking and thread-safe: call them from the blocking pool, never from an
//    IO thread.

#include <cstdint>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "billing/money.h"
#include "jobs/job.h"

namespace ig::store {

enum class StoreErrc {
  kNotFound,
  kConflict,             // unique constraint (e.g. duplicate email)
  kInsufficientCredits,  // reserve larger than the available balance
  kAlreadyResolved,      // settle/refund of a hold that is no longer open
  kInvalidArgument,      // e.g. non-positive reserve, settle above the held amount
  kUnavailable,          // the backend failed (I/O, lock timeout, corruption)
};

struct StoreError {
  StoreErrc code;
  std::string message;
};

template <class T>
using StoreResult = std::expected<T, StoreError>;

struct User {
  std::int64_t id = 0;
  std::string email;  // lower-cased
  std::string password_hash;
  bool is_admin = false;
  bool disabled = false;
  std::int64_t created_at = 0;  // unix seconds
  Micros balance = 0;           // available to spend
  Micros reserved = 0;          // sum of open holds
};

struct NewUser {
  std::string email;
  std::string password_hash;
  bool is_admin = false;
};

struct ApiKey {
  std::int64_t id = 0;
  std::int64_t user_id = 0;
  std::string name;
  std::string prefix;  // "sk-" + first 8 characters, for listing and revoking
  std::string last4;
  std::string hash;  // hex SHA-256 of the whole key
  std::int64_t created_at = 0;
  std::optional<std::int64_t> last_used_at;
  bool disabled = false;
  bool deleted = false;
  // Compatibility profile the key answers in ("" = the deployment's [tasks] profile; else
  // "seed001" or "seed002"). Validated by the caller; the store keeps it as given.
  std::string profile;
};

struct NewApiKey {
  std::int64_t user_id = 0;
  std::string name;
  std::string prefix;
  std::string last4;
  std::string hash;
  std::string profile;
};

// What authentication needs, in one lookup.
struct AuthRecord {
  ApiKey key;
  std::string email;
  bool user_disabled = false;
  bool user_is_admin = false;
};

enum class LedgerKind { kGrant, kAdjust, kReserve, kSettle, kRefund };
std::string_view to_string(LedgerKind kind);

struct LedgerEntry {
  std::int64_t id = 0;
  std::int64_t user_id = 0;
  LedgerKind kind = LedgerKind::kGrant;
  Micros amount = 0;  // signed change to the balance
  Micros balance_after = 0;
  std::optional<std::int64_t> hold_id;
  std::string job_id;
  std::string note;
  std::int64_t created_at = 0;
};

enum class HoldState { kOpen, kSettled, kRefunded };
std::string_view to_string(HoldState state);

struct Hold {
  std::int64_t id = 0;
  std::int64_t user_id = 0;
  Micros amount = 0;   // reserved
  Micros charged = 0;  // final charge once settled; 0 while open or refunded
  std::string job_id;
  HoldState state = HoldState::kOpen;
  std::int64_t created_at = 0;
  std::optional<std::int64_t> resolved_at;
};

struct LedgerCheckReport {
  std::int64_t users_checked = 0;
  std::int64_t ledger_rows_checked = 0;
  std::int64_t holds_checked = 0;
  std::int64_t open_holds = 0;
  std::int64_t jobs_checked = 0;
  std::vector<std::string> violations;  // empty when the ledger is consistent
};

// --- callback deliveries (the webhook outbox) ---
// A job created with a callback_url gets exactly one Delivery, inserted by finish_job in the
// same transaction that finishes the job (so a crash can never lose a callback). Its id is the
// Standard Webhooks `webhook-id`: "msg_" + the job id, fixed across retries and replays.
enum class DeliveryState { kPending, kSucceeded, kFailed };
std::string_view to_string(DeliveryState state);

struct Delivery {
  std::string id;
  std::string job_id;
  std::int64_t user_id = 0;
  std::string url;
  std::string body;  // "" until the first attempt renders it; then never changes
  DeliveryState state = DeliveryState::kPending;
  int attempts = 0;        // attempts made over the delivery's whole life
  int cycle_attempts = 0;  // attempts since it was enqueued or last replayed (retry schedule index)
  std::int64_t next_attempt_at_ms = 0;  // due time while pending (or the end of a claim's lease)
  std::int64_t created_at_ms = 0;
  std::optional<std::int64_t> last_attempt_at_ms;
  int last_status = 0;  // HTTP status of the last attempt; 0 = no response
  std::string last_error;
};

struct DeliveryAttempt {
  std::string delivery_id;
  int number = 0;  // 1-based over the delivery's life
  std::int64_t at_ms = 0;
  std::int64_t duration_ms = 0;
  int status = 0;  // HTTP status; 0 = no response (timeout, refused, blocked address, ...)
  std::string error;
};

// What one attempt found; record_delivery_attempt stores it.
struct DeliveryOutcome {
  std::string body;  // the body sent; saved when the delivery had none yet
  std::int64_t at_ms = 0;
  std::int64_t duration_ms = 0;
  int status = 0;
  std::string error;
  bool success = false;
  // When not successful: the next due time, or nullopt to give up (state failed).
  std::optional<std::int64_t> retry_at_ms;
};

// Largest page list_jobs returns.
inline constexpr int kMaxJobsPage = 1000;
// Most deliveries one claim_due_deliveries call hands out.
inline constexpr int kMaxDeliveryClaim = 1000;

class Store {
 public:
  virtual ~Store() = default;

  // Cheap round trip proving the backend answers (for /readyz).
  virtual StoreResult<void> ping() = 0;

  // --- users ---
  virtual StoreResult<User> create_user(const NewUser& user) = 0;  // kConflict on duplicate
  virtual StoreResult<User> find_user(std::int64_t user_id) = 0;
  virtual StoreResult<User> find_user_by_email(std::string_view email) = 0;  // any case
  virtual StoreResult<std::vector<User>> list_users() = 0;                   // by id
  virtual StoreResult<std::int64_t> count_users() = 0;
  // Disabling a user bumps auth_version().
  virtual StoreResult<void> set_user_disabled(std::int64_t user_id, bool disabled) = 0;

  // --- API keys ---
  virtual StoreResult<ApiKey> create_api_key(const NewApiKey& key) = 0;  // kConflict on hash
  virtual StoreResult<std::vector<ApiKey>> list_api_keys(std::int64_t user_id) = 0;  // not deleted
  virtual StoreResult<std::vector<ApiKey>> find_api_keys_by_prefix(std::string_view prefix) = 0;
  // Marks the key deleted (it never authenticates again) and bumps auth_version().
  virtual StoreResult<void> revoke_api_key(std::int64_t key_id) = 0;
  // kNotFound for an unknown hash. Deleted keys are returned with deleted=true.
  virtual StoreResult<AuthRecord> find_auth_by_key_hash(std::string_view hash) = 0;
  // Batched last_used_at updates: (key_id, unix seconds). Never moves a timestamp backwards.
  virtual StoreResult<void> touch_api_keys(
      const std::vector<std::pair<std::int64_t, std::int64_t>>& key_last_used) = 0;
  // A value that changes whenever any writer (this process or another) committed anything since
  // the last call. Unlike every other method it is cheap and does no disk I/O, so it may be
  // called from an IO thread: caches of store rows key on it. An implementation may return a
  // new value more often than needed (never less).
  virtual StoreResult<std::int64_t> change_counter() = 0;
  // Monotonic counter that changes whenever a key is revoked or a user disabled, so an auth
  // cache can notice revocations made by another process.
  virtual StoreResult<std::int64_t> auth_version() = 0;

  // --- credit ledger ---
  // Adds a positive amount (kind grant). A negative amount adjusts down (kind adjust), clamped
  // so the balance stops at zero; the returned row shows what was actually applied.
  // A zero amount is kInvalidArgument.
  virtual StoreResult<LedgerEntry> grant(std::int64_t user_id, Micros amount,
                                         std::string_view note) = 0;
  // Moves `amount` (> 0) from the balance into a new open hold.
  virtual StoreResult<Hold> reserve(std::int64_t user_id, Micros amount,
                                    std::string_view job_id) = 0;
  // Charges `actual` (0 <= actual <= held) and returns the rest to the balance.
  // kConflict when the hold belongs to a job (finish_job resolves it).
  virtual StoreResult<Hold> settle(std::int64_t hold_id, Micros actual) = 0;
  // Returns the whole held amount to the balance. kConflict when the hold belongs to a job.
  virtual StoreResult<Hold> refund(std::int64_t hold_id, std::string_view note) = 0;
  virtual StoreResult<Hold> find_hold(std::int64_t hold_id) = 0;
  virtual StoreResult<std::vector<Hold>> list_open_holds() = 0;
  // Newest first.
  virtual StoreResult<std::vector<LedgerEntry>> list_ledger(std::int64_t user_id, int limit) = 0;
  // --- jobs ---
  // Inserts a queued job and, when job.reserve > 0, moves that amount from the user's balance
  // into a hold tied to the job: one transaction. kInsufficientCredits writes nothing;
  // kConflict on a duplicate id (whatever the balance); kNotFound for an unknown user;
  // kInvalidArgument for an empty id or a negative reserve.
  virtual StoreResult<jobs::Job> create_job(const jobs::NewJob& job) = 0;
  virtual StoreResult<jobs::Job> find_job(std::string_view job_id) = 0;
  // Compare-and-set between non-final states (e.g. queued -> running). kConflict when the
  // current status is not `from`; kInvalidArgument when `to` is final (use finish_job).
  virtual StoreResult<jobs::Job> transition_job(std::string_view job_id, jobs::JobStatus from,
                                                jobs::JobStatus to,
                                                const jobs::JobUpdate& update) = 0;
  // Moves a non-final job to finish.status and resolves its hold in the same transaction (and,
  // when the job has a callback_url, inserts its pending Delivery due at once):
  // kSucceeded settles finish.charge (<= reserved, else kInvalidArgument), every other final
  // state refunds the whole hold (finish.charge is ignored). Exactly one caller wins a race; the
  // others get kAlreadyResolved and change nothing. An empty finish.note becomes
  // "job <id> succeeded: charged <credits>" / "refund: job <id> <status>[: <error_code>]".
  virtual StoreResult<jobs::Job> finish_job(std::string_view job_id,
                                            const jobs::JobFinish& finish) = 0;
  // Jobs in queued or running state, oldest first (startup recovery, sweeps).
  virtual StoreResult<std::vector<jobs::Job>> list_unfinished_jobs() = 0;
  // A user's jobs, newest first; `after_id` continues a previous page (exclusive; kNotFound
  // unless it names one of this user's jobs); `status` filters when set.
  // 1 <= limit <= kMaxJobsPage, else kInvalidArgument.
  virtual StoreResult<std::vector<jobs::Job>> list_jobs(std::int64_t user_id,
                                                        std::optional<jobs::JobStatus> status,
                                                        int limit,
                                                        std::optional<std::string> after_id) = 0;
  // Succeeded jobs that finished before `finished_before_ms` and still have their results
  // (results_expired_at_ms unset), oldest finish first, at most `limit` (1..kMaxJobsPage, else
  // kInvalidArgument). The retention sweep's work list.
  virtual StoreResult<std::vector<jobs::Job>> list_jobs_with_results(
      std::int64_t finished_before_ms, int limit) = 0;
  // Records that a succeeded job's result files are gone. Idempotent (a second call keeps the
  // first time); kNotFound for an unknown job, kConflict for a job that did not succeed.
  virtual StoreResult<void> mark_results_expired(std::string_view job_id, std::int64_t at_ms) = 0;

  // --- webhooks ---
  // The user's webhook signing secret. When the user has none yet, `candidate` is stored and
  // returned (racing callers all get the one that was stored first). kNotFound: unknown user;
  // kInvalidArgument: empty candidate (an empty secret would sign nothing).
  virtual StoreResult<std::string> webhook_secret(std::int64_t user_id,
                                                  std::string_view candidate) = 0;
  // Replaces the user's secret (rotation). kNotFound: unknown user; kInvalidArgument: empty.
  virtual StoreResult<void> set_webhook_secret(std::int64_t user_id, std::string_view secret) = 0;
  // Claims up to `limit` pending deliveries due at `now_ms` (earliest due first) by moving their
  // next_attempt_at_ms to now_ms + lease_ms, so a concurrent or later claim skips them until the
  // lease ends (a crashed attempt is retried then). The returned rows show the lease end.
  // 1 <= limit <= kMaxDeliveryClaim and lease_ms > 0, else kInvalidArgument.
  virtual StoreResult<std::vector<Delivery>> claim_due_deliveries(std::int64_t now_ms,
                                                                  std::int64_t lease_ms,
                                                                  int limit) = 0;
  // Appends an attempt (number = attempts + 1), counts it, saves the body if none was saved,
  // and moves the delivery to succeeded, failed (no retry_at_ms) or pending at retry_at_ms.
  // kNotFound: unknown delivery. kConflict: the delivery is not pending.
  virtual StoreResult<Delivery> record_delivery_attempt(std::string_view delivery_id,
                                                        const DeliveryOutcome& outcome) = 0;
  // A job's deliveries, oldest first (today at most one); empty for an unknown job.
  virtual StoreResult<std::vector<Delivery>> list_deliveries(std::string_view job_id) = 0;
  // A delivery's attempts, oldest first. kNotFound: unknown delivery.
  virtual StoreResult<std::vector<DeliveryAttempt>> list_delivery_attempts(
      std::string_view delivery_id) = 0;
  // Makes a delivery pending and due at now_ms again, with a fresh retry schedule
  // (cycle_attempts = 0); its id and body do not change. kNotFound: unknown delivery.
  virtual StoreResult<Delivery> replay_delivery(std::string_view delivery_id,
                                                std::int64_t now_ms) = 0;

  // Verifies, over all data: balance == sum of the user's ledger rows; reserved == sum of open
  // holds; no balance negative; every hold resolved at most once and consistent with its rows;
  // a job's hold is open exactly while the job is unfinished, and a succeeded job's charge
  // equals its hold's charge.
  virtual StoreResult<LedgerCheckReport> check_ledger() = 0;

  // --- the batched write lane (the request path's writes, without a blocking-pool thread) ---
  using BatchedWork = std::function<void()>;
  using BatchedDone = std::function<void(StoreResult<void>)>;
  // When run_batched calls `done`:
  //  - kDurable: once every write `work` made is durable (survives a crash or power loss);
  //  - kCommitted: once they are committed and visible to every reader, maybe before they are
  //    durable. Only for writes nobody outside this process learns of before a later durable
  //    write covers them (a store makes its writes durable in commit order): a sync job's
  //    reservation, whose caller hears back only after the job's durable finish. A crash in
  //    between loses both, or restart recovery settles the job.
  enum class Durability { kDurable, kCommitted };
  // Runs `work`, which calls this store's methods, where its writes are cheapest to make
  // durable, then `done` as `when` says. `done` gets an error when they could not be committed
  // or made durable; `work`'s own results then do not hold. `work` may run more than once (a
  // busy retry) and must only call this store; neither may block on anything else, and either
  // may run on any thread. SqliteStore runs `work` on its writer thread inside the next group
  // commit; the default runs both at once on the calling thread.
  virtual void run_batched(BatchedWork work, BatchedDone done, Durability when) {
    (void)when;
    work();
    done({});
  }
};

}  // namespace ig::store
