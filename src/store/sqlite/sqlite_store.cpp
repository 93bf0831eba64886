#include "store/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>

#include "core/thread_name.h"
#include "core/unique_fd.h"
#include "store/sqlite/coalescing_vfs.h"

namespace ig::store {
namespace detail {
class SqliteConnection;
}
namespace {

// Whole-transaction attempts once SQLITE_BUSY outlasted the busy timeout.
constexpr int kMaxTxAttempts = 50;

struct Migration {
  std::int64_t version;
  const char* sql;  // or, when null, `apply` does it
  StoreResult<void> (*apply)(detail::SqliteConnection&) = nullptr;
};

StoreResult<void> rewrite_in_list_checks(detail::SqliteConnection& c);

// Append only: never edit a shipped migration, add a new version instead.
const Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  email TEXT NOT NULL UNIQUE COLLATE NOCASE,
  password_hash TEXT NOT NULL,
  is_admin INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
  disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
  created_at INTEGER NOT NULL,
  balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
  reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0)
) STRICT;

CREATE TABLE api_keys (
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id),
  name TEXT NOT NULL,
  prefix TEXT NOT NULL,
  last4 TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  last_used_at INTEGER,
  disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
  deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
) STRICT;

CREATE TABLE holds (
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id),
  amount INTEGER NOT NULL CHECK (amount > 0),
  charged INTEGER NOT NULL DEFAULT 0 CHECK (charged >= 0 AND charged <= amount),
  job_id TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'settled', 'refunded')),
  created_at INTEGER NOT NULL,
  resolved_at INTEGER
) STRICT;

CREATE TABLE ledger (
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id),
  kind TEXT NOT NULL CHECK (kind IN ('grant', 'adjust', 'reserve', 'settle', 'refund')),
  amount INTEGER NOT NULL,
  balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
  hold_id INTEGER REFERENCES holds(id),
  job_id TEXT NOT NULL DEFAULT '',
  note TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  CHECK ((kind IN ('reserve', 'settle', 'refund')) = (hold_id IS NOT NULL)),
  CHECK (CASE kind WHEN 'grant' THEN amount > 0
                   WHEN 'adjust' THEN amount <= 0
                   WHEN 'reserve' THEN amount < 0
                   ELSE amount >= 0 END)
) STRICT;

CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) STRICT;

INSERT INTO meta(key, value) VALUES ('auth_version', 0);
)sql"},
    {2, R"sql(
CREATE INDEX api_keys_by_prefix ON api_keys(prefix) WHERE deleted = 0;
CREATE INDEX api_keys_by_user ON api_keys(user_id);
CREATE INDEX holds_open_by_user ON holds(user_id) WHERE state = 'open';
CREATE INDEX ledger_by_user ON ledger(user_id, id);
CREATE INDEX ledger_by_hold ON ledger(hold_id) WHERE hold_id IS NOT NULL;
-- A hold is reserved once and resolved at most once, whatever a caller does.
CREATE UNIQUE INDEX ledger_one_reserve_per_hold ON ledger(hold_id) WHERE kind = 'reserve';
CREATE UNIQUE INDEX ledger_one_resolution_per_hold ON ledger(hold_id)
  WHERE kind IN ('settle', 'refund');
)sql"},
    {3, R"sql(
CREATE TABLE jobs (
  id TEXT NOT NULL PRIMARY KEY CHECK (id <> ''),
  user_id INTEGER NOT NULL REFERENCES users(id),
  key_id INTEGER NOT NULL DEFAULT 0,
  kind TEXT NOT NULL,
  model TEXT NOT NULL,
  dialect TEXT NOT NULL,
  params_json TEXT NOT NULL DEFAULT '',
  callback_url TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'queued'
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'expired')),
  hold_id INTEGER UNIQUE REFERENCES holds(id),
  reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
  charged INTEGER NOT NULL DEFAULT 0 CHECK (charged >= 0 AND charged <= reserved),
  channel TEXT NOT NULL DEFAULT '',
  upstream_task_id TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  result_json TEXT NOT NULL DEFAULT '',
  error_code TEXT NOT NULL DEFAULT '',
  error_message TEXT NOT NULL DEFAULT '',
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL,
  started_at_ms INTEGER,
  finished_at_ms INTEGER,
  -- A job reserves through exactly one hold of its own, or not at all (a free job).
  CHECK ((hold_id IS NULL) = (reserved = 0)),
  CHECK ((status IN ('succeeded', 'failed', 'canceled', 'expired')) = (finished_at_ms IS NOT NULL)),
  CHECK (status = 'succeeded' OR charged = 0)
) STRICT;

-- list_jobs: a user's jobs newest first (rowid, implicitly the last column, breaks ties).
CREATE INDEX jobs_by_user ON jobs(user_id, created_at_ms);
-- list_unfinished_jobs: the few jobs in flight, oldest first.
CREATE INDEX jobs_unfinished ON jobs(created_at_ms) WHERE status IN ('queued', 'running');
)sql"},
    {4, R"sql(
-- '' = the deployment's default profile; keys made before this version answer in it.
ALTER TABLE api_keys ADD COLUMN profile TEXT NOT NULL DEFAULT '';
-- Signs the user's webhooks; NULL until the first callback (or a rotation) needs one.
ALTER TABLE users ADD COLUMN webhook_secret TEXT CHECK (webhook_secret <> '');

-- The callback outbox: finish_job inserts a job's row in the transaction that finishes it.
CREATE TABLE deliveries (
  id TEXT NOT NULL PRIMARY KEY CHECK (id <> ''),
  job_id TEXT NOT NULL REFERENCES jobs(id),
  user_id INTEGER NOT NULL REFERENCES users(id),
  url TEXT NOT NULL CHECK (url <> ''),
  body TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'succeeded', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  cycle_attempts INTEGER NOT NULL DEFAULT 0 CHECK (cycle_attempts BETWEEN 0 AND attempts),
  next_attempt_at_ms INTEGER NOT NULL,
  created_at_ms INTEGER NOT NULL,
  last_attempt_at_ms INTEGER,
  last_status INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  CHECK ((attempts = 0) = (last_attempt_at_ms IS NULL))
) STRICT;

-- claim_due_deliveries: pending rows by due time (rowid breaks ties). Partial, because finished
-- deliveries pile up forever while the pending backlog stays small.
CREATE INDEX deliveries_due ON deliveries(next_attempt_at_ms) WHERE state = 'pending';
-- list_deliveries, and the foreign key check from jobs.
CREATE INDEX deliveries_by_job ON deliveries(job_id);

CREATE TABLE delivery_attempts (
  delivery_id TEXT NOT NULL REFERENCES deliveries(id),
  number INTEGER NOT NULL CHECK (number >= 1),
  at_ms INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  status INTEGER NOT NULL,
  error TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (delivery_id, number)
) STRICT, WITHOUT ROWID;
)sql"},
    {5, R"sql(
-- Small result files (SqliteBlobStore): one row instead of one file, written by the same
-- group commit as the jobs. `data` is last so reading the metadata skips its overflow pages.
CREATE TABLE blobs (
  id TEXT NOT NULL PRIMARY KEY CHECK (id <> ''),
  content_type TEXT NOT NULL,
  size INTEGER NOT NULL CHECK (size >= 0),
  etag TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  data BLOB NOT NULL
) STRICT;
)sql"},
    // CHECK (x IN ('a', 'b', 'c')) makes SQLite build an ephemeral index of the list on every
    // INSERT or UPDATE that checks it: five per created job. The same CHECKs as OR chains.
    {6, nullptr, rewrite_in_list_checks},
    {7, R"sql(
-- Result retention: when the sweep deleted a succeeded job's result files. The sweep's index
-- (kKeptResultsIndex) exists only while retention is configured.
ALTER TABLE jobs ADD COLUMN results_expired_at_ms INTEGER;
)sql"},
};

#define IG_USER_COLS "id, email, password_hash, is_admin, disabled, created_at, balance, reserved"
#define IG_KEY_COLS \
  "id, user_id, name, prefix, last4, hash, created_at, last_used_at, disabled, deleted, profile"
#define IG_HOLD_COLS "id, user_id, amount, charged, job_id, state, created_at, resolved_at"
#define IG_LEDGER_COLS "id, user_id, kind, amount, balance_after, hold_id, job_id, note, created_at"
#define IG_JOB_COLS                                                                         \
  "id, user_id, key_id, kind, model, dialect, params_json, callback_url, status, hold_id, " \
  "reserved, charged, channel, upstream_task_id, attempts, result_json, error_code, "       \
  "error_message, created_at_ms, updated_at_ms, started_at_ms, finished_at_ms, "            \
  "results_expired_at_ms"
#define IG_DELIVERY_COLS                                                                  \
  "id, job_id, user_id, url, body, state, attempts, cycle_attempts, next_attempt_at_ms, " \
  "created_at_ms, last_attempt_at_ms, last_status, last_error"
#define IG_ATTEMPT_COLS "delivery_id, number, at_ms, duration_ms, status, error"

std::unexpected<StoreError> err(StoreErrc code, std::string message) {
  return std::unexpected(StoreError{code, std::move(message)});
}

std::string lower_ascii(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool is_busy(int rc) {
  int primary = rc & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

StoreErrc code_for(int rc) {
  switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
      return StoreErrc::kConflict;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return StoreErrc::kNotFound;
    case SQLITE_CONSTRAINT_CHECK:
    case SQLITE_CONSTRAINT_NOTNULL:
      return StoreErrc::kInvalidArgument;
    default:
      return StoreErrc::kUnavailable;
  }
}

LedgerKind kind_from(std::string_view text) {
  // The schema's CHECK admits only these five spellings.
  if (text == "adjust") return LedgerKind::kAdjust;
  if (text == "reserve") return LedgerKind::kReserve;
  if (text == "settle") return LedgerKind::kSettle;
  if (text == "refund") return LedgerKind::kRefund;
  return LedgerKind::kGrant;
}

HoldState state_from(std::string_view text) {
  if (text == "settled") return HoldState::kSettled;
  if (text == "refunded") return HoldState::kRefunded;
  return HoldState::kOpen;
}

DeliveryState delivery_state_from(std::string_view text) {
  // The schema's CHECK admits only these three spellings.
  if (text == "succeeded") return DeliveryState::kSucceeded;
  if (text == "failed") return DeliveryState::kFailed;
  return DeliveryState::kPending;
}

jobs::JobStatus job_status_from(std::string_view text) {
  // The schema's CHECK admits only the six spellings job_status_from_string knows.
  return jobs::job_status_from_string(text).value_or(jobs::JobStatus::kQueued);
}

// Binds as a BLOB (a plain string_view binds as TEXT). Not copied (SQLITE_STATIC): the bytes must
// stay valid until the statement has run, so bind and run it in one expression. Results are
// images of up to [store] blob_inline_max_bytes, and a copy of each was a malloc and a memcpy
// on the writer thread, the store's one serial path.
struct BlobParam {
  std::string_view bytes;
};

// A cached prepared statement borrowed for one use; reset and unbound on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* stmt, bool* busy) : db_(db), stmt_(stmt), busy_(busy) {}
  // A statement that failed to prepare: every use reports `error`.
  explicit Stmt(StoreError error) : error_(std::move(error)) {}
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() {
    if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }

  template <class... Args>
  Stmt& bind(const Args&... args) {
    int index = 0;
    (bind_one(++index, args), ...);
    return *this;
  }

  // true: a row is available; false: done.
  StoreResult<bool> step() {
    if (error_) return std::unexpected(*error_);
    if (bind_rc_ != SQLITE_OK) return fail(bind_rc_);
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return fail(rc);
  }

  // Steps to completion, ignoring rows.
  StoreResult<void> run() {
    for (;;) {
      auto row = step();
      if (!row) return std::unexpected(row.error());
      if (!*row) return {};
    }
  }

  // The first row read by `reader`, or nullopt; the statement is run to completion.
  template <class Reader>
  auto one(Reader&& reader) -> StoreResult<std::optional<std::invoke_result_t<Reader&, Stmt&>>> {
    using T = std::invoke_result_t<Reader&, Stmt&>;
    auto row = step();
    if (!row) return std::unexpected(row.error());
    if (!*row) return std::optional<T>();
    std::optional<T> value = reader(*this);
    if (auto rest = run(); !rest) return std::unexpected(rest.error());
    return value;
  }

  template <class Reader>
  auto all(Reader&& reader) -> StoreResult<std::vector<std::invoke_result_t<Reader&, Stmt&>>> {
    std::vector<std::invoke_result_t<Reader&, Stmt&>> out;
    for (;;) {
      auto row = step();
      if (!row) return std::unexpected(row.error());
      if (!*row) return out;
      out.push_back(reader(*this));
    }
  }

  StoreResult<void> each(const std::function<void(Stmt&)>& visit) {
    for (;;) {
      auto row = step();
      if (!row) return std::unexpected(row.error());
      if (!*row) return {};
      visit(*this);
    }
  }

  std::int64_t i64(int col) { return sqlite3_column_int64(stmt_, col); }
  bool flag(int col) { return sqlite3_column_int64(stmt_, col) != 0; }
  std::optional<std::int64_t> opt_i64(int col) {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_int64(stmt_, col);
  }
  std::string bytes(int col) {
    const void* data = sqlite3_column_blob(stmt_, col);
    int size = sqlite3_column_bytes(stmt_, col);
    if (data == nullptr) return {};
    return std::string(static_cast<const char*>(data), static_cast<std::size_t>(size));
  }
  std::string text(int col) {
    const unsigned char* data = sqlite3_column_text(stmt_, col);
    int size = sqlite3_column_bytes(stmt_, col);
    if (data == nullptr) return {};
    return std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(size));
  }

 private:
  template <class T>
  void bind_one(int index, const T& value) {
    if (stmt_ == nullptr) return;
    int rc;
    if constexpr (std::is_same_v<T, bool>) {
      rc = sqlite3_bind_int(stmt_, index, value ? 1 : 0);
    } else if constexpr (std::is_integral_v<T>) {
      rc = sqlite3_bind_int64(stmt_, index, static_cast<sqlite3_int64>(value));
    } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
      rc = sqlite3_bind_null(stmt_, index);
    } else if constexpr (std::is_same_v<T, std::optional<std::int64_t>>) {
      rc = value ? sqlite3_bind_int64(stmt_, index, *value) : sqlite3_bind_null(stmt_, index);
    } else if constexpr (std::is_same_v<T, BlobParam>) {
      rc = sqlite3_bind_blob64(stmt_, index, value.bytes.data(), value.bytes.size(), SQLITE_STATIC);
    } else if constexpr (std::is_same_v<T, std::optional<std::string>>) {
      rc = value ? sqlite3_bind_text64(stmt_, index, value->data(), value->size(), SQLITE_TRANSIENT,
                                       SQLITE_UTF8)
                 : sqlite3_bind_null(stmt_, index);
    } else {
      std::string_view text(value);
      rc = sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT,
                               SQLITE_UTF8);
    }
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  std::unexpected<StoreError> fail(int rc) {
    if (is_busy(rc)) *busy_ = true;
    return err(code_for(rc),
               std::string("sqlite: ") + sqlite3_errmsg(db_) + " [" + sqlite3_errstr(rc) + "]");
  }

  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  bool* busy_ = nullptr;
  int bind_rc_ = SQLITE_OK;
  std::optional<StoreError> error_;
};

}  // namespace

namespace detail {

// One sqlite3 handle, used by one thread at a time, with its prepared statements.
class SqliteConnection {
 public:
  explicit SqliteConnection(sqlite3* db) : db_(db) {}
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;
  ~SqliteConnection() {
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

  static StoreResult<std::unique_ptr<SqliteConnection>> open(const SqliteSettings& settings) {
    // Memory statistics take a global mutex on every SQLite allocation; nothing reads them.
    // Only possible before SQLite initializes; later calls are harmless no-ops (SQLITE_MISUSE).
    static std::once_flag configured;
    std::call_once(configured, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
    sqlite3* db = nullptr;
    int rc = sqlite3_open_v2(settings.path.c_str(), &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             coalescing_vfs_name());
    auto conn = std::make_unique<SqliteConnection>(db);  // owns db even when opening failed
    if (rc != SQLITE_OK) {
      return err(StoreErrc::kUnavailable,
                 "cannot open " + settings.path + ": " +
                     (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, settings.busy_timeout_ms);
    conn->busy_budget = std::chrono::milliseconds(std::max(settings.busy_timeout_ms, 100));
    // WAL lets readers proceed while one writer commits. In WAL mode synchronous=NORMAL only
    // syncs at checkpoints, so a power cut can drop the last commits: a settled charge or a
    // grant the caller was told about would vanish. FULL syncs the WAL on every commit.
    for (int attempt = 1;; ++attempt) {
      conn->busy = false;
      auto mode =
          conn->prepare("PRAGMA journal_mode=WAL").one([](Stmt& row) { return row.text(0); });
      if (mode && *mode == std::optional<std::string>("wal")) break;
      if (!mode && conn->busy && attempt < kMaxTxAttempts) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      if (!mode) return std::unexpected(mode.error());
      return err(StoreErrc::kUnavailable, "cannot switch " + settings.path + " to WAL mode");
    }
    const char* pragmas_sql = settings.synchronous_full
                                  ? "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                                  : "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;";
    if (auto pragmas = conn->exec(pragmas_sql); !pragmas) {
      return std::unexpected(pragmas.error());
    }
    return conn;
  }

  // A cached statement; a preparation error surfaces when the statement is run.
  Stmt prepare(const char* sql) {
    auto it = cache_.find(std::string_view(sql));
    if (it == cache_.end()) {
      sqlite3_stmt* stmt = nullptr;
      int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
      if (rc != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return Stmt(fail(rc, "prepare").error());
      }
      it = cache_.emplace(sql, stmt).first;
    }
    return Stmt(db_, it->second, &busy);
  }

  // Runs one or more statements without parameters (transaction control, pragmas, DDL).
  StoreResult<void> exec(const char* sql) {
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return fail(rc, "exec");
    return {};
  }

  // One statement without parameters through the statement cache: transaction control on the
  // write path, where sqlite3_exec would compile it again every time.
  StoreResult<void> run_cached(const char* single_sql) { return prepare(single_sql).run(); }

  void rollback() {
    if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

  std::int64_t changes() const { return sqlite3_changes64(db_); }
  std::int64_t total_changes() const { return sqlite3_total_changes64(db_); }
  bool in_transaction() const { return sqlite3_get_autocommit(db_) == 0; }
  std::int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
  sqlite3* handle() const { return db_; }

  // Set whenever SQLite answered SQLITE_BUSY/LOCKED since the flag was last cleared.
  bool busy = false;
  // How long a transaction keeps retrying after SQLITE_BUSY, all attempts together: another
  // process holding the database must turn into a prompt error, not 50 full busy timeouts.
  std::chrono::milliseconds busy_budget{5000};
  // After `attempts` busy attempts of a transaction begun at `started`: the error to give up
  // with, or none while attempts and budget remain.
  std::optional<StoreError> busy_give_up(std::chrono::steady_clock::time_point started,
                                         int attempts, const std::string& last_error) const {
    if (attempts < kMaxTxAttempts && std::chrono::steady_clock::now() - started < busy_budget) {
      return std::nullopt;
    }
    return StoreError{StoreErrc::kUnavailable, "database busy (another process holds it) after " +
                                                   std::to_string(attempts) +
                                                   " attempts: " + last_error};
  }

 private:
  std::unexpected<StoreError> fail(int rc, std::string_view what) {
    if (is_busy(rc)) busy = true;
    return err(code_for(rc), "sqlite " + std::string(what) + ": " + sqlite3_errmsg(db_) + " [" +
                                 sqlite3_errstr(rc) + "]");
  }

  sqlite3* db_;
  std::map<std::string, sqlite3_stmt*, std::less<>> cache_;  // keyed by SQL text
};

// The statements of one savepoint name: "w" wraps each write of a group commit, "n" a store
// call made by batched work inside one (see write_tx).
struct SavepointSql {
  const char* begin;
  const char* release;
  const char* rollback_to;
};
inline constexpr SavepointSql kBatchSavepoint{"SAVEPOINT w", "RELEASE w", "ROLLBACK TO w"};
inline constexpr SavepointSql kNestedSavepoint{"SAVEPOINT n", "RELEASE n", "ROLLBACK TO n"};

// Ends the savepoint, keeping or undoing its changes.
inline StoreResult<void> end_savepoint(SqliteConnection& conn, const SavepointSql& sp, bool keep) {
  if (!keep) {
    if (auto undone = conn.run_cached(sp.rollback_to); !undone) return undone;
  }
  return conn.run_cached(sp.release);
}

// Fixed set of connections handed out one caller at a time.
class SqlitePool {
 public:
  class Lease {
   public:
    Lease(SqlitePool& pool, SqliteConnection* conn) : pool_(pool), conn_(conn) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { pool_.give_back(conn_); }
    SqliteConnection& operator*() { return *conn_; }
    SqliteConnection* operator->() { return conn_; }

   private:
    SqlitePool& pool_;
    SqliteConnection* conn_;
  };

  void add(std::unique_ptr<SqliteConnection> conn) {
    std::lock_guard lock(mu_);
    idle_.push_back(conn.get());
    all_.push_back(std::move(conn));
  }

  Lease borrow() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty(); });
    SqliteConnection* conn = idle_.back();
    idle_.pop_back();
    return Lease(*this, conn);
  }

  // One write of the group commit. `body` runs inside the batch's transaction, within its own
  // savepoint, and says whether to keep its changes; `fail` reports that the whole batch did
  // not commit (it overrides what body produced); `durable` is called last, once the batch is
  // on disk or has failed. After `durable` the writer touches nothing the op refers to.
  struct WriteOp {
    std::function<bool(SqliteConnection&)> body;
    std::function<void(const StoreError&)> fail;
    std::function<void()> durable;
    bool savepoint = true;   // false: body keeps its changes whatever it returns
    bool wait_flush = true;  // false: `durable` runs once committed (Durability::kCommitted)
  };

  // Group commit with a pipelined flush. Every write of this process goes to one writer thread,
  // which runs whatever is queued as one BEGIN IMMEDIATE ... COMMIT on its own connection with
  // synchronous=NORMAL (no sync inside COMMIT), then hands the batch to a flusher thread that
  // fdatasyncs the WAL and only then completes the batch's writes. While the flusher waits for
  // the device, the writer already commits the next batch, so the device flush bounds latency,
  // not throughput. The WAL is append-only between checkpoints and a checkpoint syncs what it
  // copies, so a flush that starts after a COMMIT returned covers that COMMIT. Other processes
  // are still excluded by BEGIN IMMEDIATE.
  // `checkpoint_conn` copies the WAL back into the database on its own thread (see wal_hook).
  void start_writer(std::unique_ptr<SqliteConnection> conn,
                    std::unique_ptr<SqliteConnection> checkpoint_conn, std::string db_path,
                    bool flush) {
    writer_conn_ = std::move(conn);
    write_budget_ = writer_conn_->busy_budget;
    checkpoint_conn_ = std::move(checkpoint_conn);
    db_path_ = std::move(db_path);
    flush_ = flush;
    sqlite3_wal_hook(writer_conn_->handle(), &SqlitePool::wal_hook, this);
    writer_ = std::thread([this] { writer_loop(); });
    if (flush_) flusher_ = std::thread([this] { flusher_loop(); });
    checkpointer_ = std::thread([this] { checkpointer_loop(); });
  }

  ~SqlitePool() { stop_writer(); }

  void stop_writer() {
    {
      std::lock_guard lock(queue_mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    queue_cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    {
      std::lock_guard lock(flush_mu_);
      flush_stopping_ = true;
    }
    flush_cv_.notify_all();
    if (flusher_.joinable()) flusher_.join();
    {
      std::lock_guard lock(checkpoint_mu_);
      checkpoint_stopping_ = true;
    }
    checkpoint_cv_.notify_all();
    if (checkpointer_.joinable()) checkpointer_.join();
  }

  // Queues `op`; it completes (fail?, then durable) on the writer or flusher thread.
  void submit(std::unique_ptr<WriteOp> op) {
    {
      std::lock_guard lock(queue_mu_);
      if (!stopping_ && writer_.joinable()) {
        queue_.push_back(std::move(op));
        // The writer waits for a first write, or, while the flusher syncs (it wakes the writer
        // when done), for a full deferred batch: only those wake it.
        if ((queue_.size() == 1 && !flush_busy_) || queue_.size() == kMaxDeferredWrites) {
          queue_cv_.notify_one();
        }
        return;
      }
    }
    op->fail(StoreError{StoreErrc::kUnavailable, "the store is closing"});
    op->durable();
  }

  // Runs `op` and returns once it is durable (or failed). Blocking: pool threads only.
  void write(WriteOp& op) {
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> finished = done->get_future();
    auto owned = std::make_unique<WriteOp>();
    owned->body = [&op](SqliteConnection& c) { return op.body(c); };
    owned->fail = [&op](const StoreError& e) { op.fail(e); };
    owned->durable = [done] { done->set_value(); };
    submit(std::move(owned));
    finished.wait();
  }

  // Empty while the write path works; else why it does not (for /readyz).
  std::string write_health() {
    const std::int64_t started = batch_started_ns_.load();
    const auto now = std::chrono::steady_clock::now();
    if (started != 0) {
      const auto running = now.time_since_epoch() - std::chrono::steady_clock::duration(started);
      if (running > write_budget_) {
        return "a write has been waiting for " +
               std::to_string(
                   std::chrono::duration_cast<std::chrono::milliseconds>(running).count()) +
               " ms (the database is busy)";
      }
    }
    if (!write_failing_.load()) return {};
    std::lock_guard lock(health_mu_);
    // Reported until a batch commits again, or for a while after the last failure: a server
    // taken out of rotation gets no writes that could prove it well again.
    if (now - write_failed_at_ > kWriteFailureShownFor) return {};
    return write_failure_;
  }

  // A connection that never writes and only answers `PRAGMA data_version` (change_counter).
  void set_probe(std::unique_ptr<SqliteConnection> conn) { probe_ = std::move(conn); }
  template <class F>
  auto with_probe(F&& f) {
    std::lock_guard lock(probe_mu_);
    return f(*probe_);
  }

 private:
  void give_back(SqliteConnection* conn) {
    {
      std::lock_guard lock(mu_);
      idle_.push_back(conn);
    }
    cv_.notify_one();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<SqliteConnection>> all_;
  std::vector<SqliteConnection*> idle_;  // guarded by mu_

  std::mutex probe_mu_;
  std::unique_ptr<SqliteConnection> probe_;
  using Batch = std::vector<std::unique_ptr<WriteOp>>;
  // Runs the batch in one transaction; false when it did not commit (every op was failed).
  bool run_batch(const Batch& batch);
  void note_write_failure(std::size_t writes, const std::string& message) {
    spdlog::error("store: a batch of {} writes failed: {}", writes, message);
    std::lock_guard lock(health_mu_);
    write_failure_ = "writes are failing: " + message;
    write_failed_at_ = std::chrono::steady_clock::now();
    write_failing_.store(true);
  }
  void writer_loop();
  void flusher_loop();
  StoreResult<void> flush_wal();
  static void complete(Batch& batch) {
    for (auto& op : batch) {
      op->durable();
      op.reset();
    }
  }

  // Replaces SQLite's auto-checkpoint on the writer connection (same threshold): a checkpoint
  // copies every page of the WAL into the database and syncs both, which is heavy, and the
  // writer thread is the store's one serial path. So the checkpointer thread does it (PASSIVE:
  // the writer goes on meanwhile), and the writer only checkpoints itself when the WAL has
  // grown far past the threshold because the checkpointer cannot keep up, as a bound.
  static int wal_hook(void* self, sqlite3* db, const char*, int pages) {
    if (pages >= kInlineCheckpointPages) {
      sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    } else if (pages >= kCheckpointPages) {
      static_cast<SqlitePool*>(self)->request_checkpoint();
    }
    return SQLITE_OK;
  }
  void request_checkpoint() {
    {
      std::lock_guard lock(checkpoint_mu_);
      if (checkpoint_wanted_) return;
      checkpoint_wanted_ = true;
    }
    checkpoint_cv_.notify_one();
  }
  // Once past the threshold the WAL hook asks after every commit, and each checkpoint syncs the
  // WAL and the database file: under load that was two fsyncs per group commit. So a round runs
  // at most every kCheckpointIntervalMs and copies everything committed since the last one
  // (hot pages once, not once per commit). A round repeats its PASSIVE pass while commits
  // arrived during it, so it ends caught up and the writer can restart the WAL from its start.
  void checkpointer_loop() {
    name_this_thread("ig-db-checkpt");
    for (;;) {
      {
        std::unique_lock lock(checkpoint_mu_);
        checkpoint_cv_.wait(lock, [&] { return checkpoint_stopping_ || checkpoint_wanted_; });
        if (checkpoint_stopping_) return;
        checkpoint_wanted_ = false;
      }
      for (int pass = 0; pass < kMaxCheckpointPasses; ++pass) {
        int log_frames = 0;
        int copied_frames = 0;
        int rc = sqlite3_wal_checkpoint_v2(checkpoint_conn_->handle(), nullptr,
                                           SQLITE_CHECKPOINT_PASSIVE, &log_frames, &copied_frames);
        if (rc != SQLITE_OK || copied_frames >= log_frames) break;
      }
      std::unique_lock lock(checkpoint_mu_);
      checkpoint_cv_.wait_for(lock, std::chrono::milliseconds(kCheckpointIntervalMs),
                              [&] { return checkpoint_stopping_; });
      if (checkpoint_stopping_) return;
    }
  }
  static constexpr int kCheckpointPages = 1000;         // SQLite's default auto-checkpoint
  static constexpr int kInlineCheckpointPages = 16000;  // ~64 MB of WAL
  static constexpr int kCheckpointIntervalMs = 25;
  static constexpr int kMaxCheckpointPasses = 3;

  std::unique_ptr<SqliteConnection> writer_conn_;
  // What /readyz learns of the write path: a batch that failed (until one commits again, at
  // most kWriteFailureShownFor), or one that has been retrying for longer than the busy budget.
  std::atomic<std::int64_t> batch_started_ns_{0};
  std::chrono::milliseconds write_budget_{5000};
  std::atomic<bool> write_failing_{false};  // the writer's per-batch check takes no lock
  std::mutex health_mu_;
  std::string write_failure_;                              // guarded by health_mu_
  std::chrono::steady_clock::time_point write_failed_at_;  // guarded by health_mu_
  static constexpr auto kWriteFailureShownFor = std::chrono::seconds(10);
  std::unique_ptr<SqliteConnection> checkpoint_conn_;
  std::thread checkpointer_;
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool checkpoint_wanted_ = false;    // guarded by checkpoint_mu_
  bool checkpoint_stopping_ = false;  // guarded by checkpoint_mu_
  std::string db_path_;
  bool flush_ = false;
  std::thread writer_;
  std::thread flusher_;
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  Batch queue_;              // guarded by queue_mu_
  bool stopping_ = false;    // guarded by queue_mu_
  bool flush_busy_ = false;  // guarded by queue_mu_: the flusher is in fdatasync
  // A queue this long runs at once even while the flusher is busy: the writer is then the
  // bottleneck, and idling through the sync would only cost throughput.
  static constexpr std::size_t kMaxDeferredWrites = 64;
  std::mutex flush_mu_;
  std::condition_variable flush_cv_;
  Batch flushing_;               // guarded by flush_mu_: committed, waiting for the flush
  bool flush_stopping_ = false;  // guarded by flush_mu_
  UniqueFd wal_fd_;              // flusher thread only
  ino_t wal_inode_ = 0;          // flusher thread only
};

// The writer thread's connection while it runs a batch: store calls made by a batched work
// item on that thread join the batch's transaction instead of queueing behind it.
inline thread_local SqliteConnection* tl_batch_conn = nullptr;
// A batch first runs without savepoints (see run_batch). A write that failed after changing rows
// then cannot be undone alone: it poisons the pass, and the batch runs again with savepoints.
inline thread_local bool tl_batch_optimistic = false;
inline thread_local bool tl_batch_poisoned = false;

// After a write on the batch connection failed: can the batch go on without undoing it? Only
// if the write changed no row and SQLite did not end the transaction under it (which it may do
// on an I/O or out-of-memory error).
inline bool failed_write_left_no_trace(const SqliteConnection& conn, std::int64_t changes_before) {
  return conn.in_transaction() && conn.total_changes() == changes_before;
}

}  // namespace detail

namespace {

using detail::SqliteConnection;
using detail::SqlitePool;

// Runs fn(conn) -> StoreResult<T>, wrapped in `begin` ... COMMIT unless begin is null. Any
// error (or exception) rolls back; the whole attempt repeats while SQLite reports busy.
template <class Fn>
auto run_tx(SqliteConnection& conn, const char* begin, Fn& fn) {
  using R = std::invoke_result_t<Fn&, SqliteConnection&>;
  const auto started = std::chrono::steady_clock::now();
  for (int attempt = 1;; ++attempt) {
    conn.busy = false;
    R result = [&]() -> R {
      if (begin != nullptr) {
        if (auto begun = conn.exec(begin); !begun) return std::unexpected(begun.error());
      }
      R r = [&]() -> R {
        try {
          return fn(conn);
        } catch (const std::exception& e) {  // e.g. bad_alloc: never leave a transaction open
          return err(StoreErrc::kUnavailable, std::string("sqlite store: ") + e.what());
        }
      }();
      if (begin == nullptr) return r;
      if (r) {
        auto committed = conn.exec("COMMIT");
        if (committed) return r;
        r = std::unexpected(committed.error());
      }
      conn.rollback();
      return r;
    }();
    if (result || !conn.busy) return result;
    if (auto give_up = conn.busy_give_up(started, attempt, result.error().message)) {
      return R(std::unexpected(std::move(*give_up)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(attempt, 20)));
  }
}

}  // namespace

namespace detail {

bool SqlitePool::run_batch(const Batch& batch) {
  SqliteConnection& conn = *writer_conn_;
  auto fail_all = [&](const StoreError& e) {
    conn.rollback();
    for (const auto& op : batch) op->fail(e);
    return false;
  };
  // Savepoints make SQLite copy every page a write touches into the sub-journal first (a 4 KB
  // copy and an allocation per page, about a fifth of the writer's time per created job), only
  // to undo a write that fails after changing rows, which is rare. So a batch first runs without
  // them; if some write failed with changes, it is rolled back whole and run again with them.
  // Bodies already run again after SQLITE_BUSY, so they must be repeatable either way.
  bool optimistic = true;
  const auto started = std::chrono::steady_clock::now();
  for (int attempt = 1;; ++attempt) {
    conn.busy = false;
    std::optional<StoreError> error;
    if (auto begun = conn.run_cached("BEGIN IMMEDIATE"); !begun) error = begun.error();
    tl_batch_conn = &conn;
    tl_batch_optimistic = optimistic;
    tl_batch_poisoned = false;
    for (std::size_t i = 0; !error && i < batch.size(); ++i) {
      const WriteOp& op = *batch[i];
      const bool own_savepoint = op.savepoint && !optimistic;
      if (own_savepoint) {
        if (auto saved = conn.run_cached(kBatchSavepoint.begin); !saved) {
          error = saved.error();
          break;
        }
      }
      const std::int64_t changes_before = conn.total_changes();
      const bool keep = op.body(conn);
      if (conn.busy) {
        error = StoreError{StoreErrc::kUnavailable, "database busy inside a write"};
        break;
      }
      if (!conn.in_transaction()) {  // SQLite rolled it back (I/O error, out of memory)
        error = StoreError{StoreErrc::kUnavailable, "the batch's transaction ended in a write"};
        break;
      }
      if (optimistic && op.savepoint && !keep &&
          !failed_write_left_no_trace(conn, changes_before)) {
        tl_batch_poisoned = true;
      }
      if (tl_batch_poisoned) break;
      if (!own_savepoint) continue;
      if (auto ended = end_savepoint(conn, kBatchSavepoint, keep); !ended) error = ended.error();
    }
    tl_batch_conn = nullptr;
    tl_batch_optimistic = false;
    if (!error && tl_batch_poisoned) {
      conn.rollback();
      optimistic = false;
      --attempt;  // not a busy retry
      continue;
    }
    if (!error) {
      auto committed = conn.run_cached("COMMIT");
      if (committed) return true;
      error = committed.error();
    }
    conn.rollback();
    if (!conn.busy) {
      note_write_failure(batch.size(), error->message);
      return fail_all(*error);
    }
    if (auto give_up = conn.busy_give_up(started, attempt, error->message)) {
      note_write_failure(batch.size(), give_up->message);
      return fail_all(*give_up);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(attempt, 20)));
  }
}

void SqlitePool::writer_loop() {
  name_this_thread("ig-db-writer");
  for (;;) {
    Batch batch;
    {
      std::unique_lock lock(queue_mu_);
      // While the flusher syncs, what arrives can only be covered by the next sync anyway:
      // committing it now or just before that sync gives the same latency, and waiting turns
      // many small commits (each rewriting the same hot pages into the WAL) into one.
      queue_cv_.wait(lock, [&] {
        return stopping_ ||
               (!queue_.empty() && (!flush_busy_ || queue_.size() >= kMaxDeferredWrites));
      });
      if (queue_.empty()) return;  // stopping, and everything queued has been written
      batch.swap(queue_);
    }
    batch_started_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count());
    const bool committed = run_batch(batch);
    batch_started_ns_.store(0);
    if (committed && write_failing_.load()) write_failing_.store(false);
    if (!committed || !flush_) {
      complete(batch);
      continue;
    }
    Batch to_flush;
    to_flush.reserve(batch.size());
    for (auto& op : batch) {
      if (op->wait_flush) {
        to_flush.push_back(std::move(op));
      } else {
        op->durable();
        op.reset();
      }
    }
    if (to_flush.empty()) continue;
    std::lock_guard lock(flush_mu_);
    const bool idle = flushing_.empty();
    for (auto& op : to_flush) flushing_.push_back(std::move(op));
    if (idle) flush_cv_.notify_one();
  }
}

void SqlitePool::flusher_loop() {
  name_this_thread("ig-db-flusher");
  for (;;) {
    Batch batch;
    {
      std::unique_lock lock(flush_mu_);
      flush_cv_.wait(lock, [&] { return flush_stopping_ || !flushing_.empty(); });
      if (flushing_.empty()) return;
      batch.swap(flushing_);
    }
    {
      std::lock_guard lock(queue_mu_);
      flush_busy_ = true;
    }
    auto flushed = flush_wal();
    {
      std::lock_guard lock(queue_mu_);
      flush_busy_ = false;
    }
    queue_cv_.notify_one();
    if (!flushed) {
      // The commits are in the file but maybe not on the device, and after a failed fsync
      // Linux may drop the dirty pages: nothing can be promised any more (PostgreSQL panics on
      // this too). Restart recovery settles what was in flight.
      std::fprintf(stderr, "FATAL: cannot make the store durable: %s\n",
                   flushed.error().message.c_str());
      std::abort();
    }
    complete(batch);
  }
}

// fdatasync of the WAL. The WAL is (re)created by SQLite; a new file also needs its directory
// entry flushed, as SQLite does for synchronous=FULL. No WAL file means everything was
// checkpointed into the database file, which the checkpoint synced.
StoreResult<void> SqlitePool::flush_wal() {
  const std::string wal_path = db_path_ + "-wal";
  struct stat st {};
  if (::stat(wal_path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return err(StoreErrc::kUnavailable, "stat " + wal_path + ": " + std::strerror(errno));
  }
  if (!wal_fd_ || st.st_ino != wal_inode_) {
    UniqueFd fd(::open(wal_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return err(StoreErrc::kUnavailable, "open " + wal_path + ": " + std::strerror(errno));
    std::string dir = std::filesystem::path(db_path_).parent_path().string();
    if (dir.empty()) dir = ".";
    UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd || ::fsync(dir_fd.get()) != 0) {
      return err(StoreErrc::kUnavailable, "fsync " + dir + ": " + std::strerror(errno));
    }
    wal_fd_ = std::move(fd);
    wal_inode_ = st.st_ino;
  }
  if (::fdatasync(wal_fd_.get()) != 0) {
    return err(StoreErrc::kUnavailable, "fdatasync " + wal_path + ": " + std::strerror(errno));
  }
  return {};
}

}  // namespace detail

namespace {

template <class Fn>
auto write_tx(SqlitePool& pool, Fn&& fn) {
  using R = std::invoke_result_t<Fn&, SqliteConnection&>;
  if (detail::tl_batch_conn != nullptr) {
    // Called by batched work on the writer thread: joins the running batch (as a nested
    // savepoint when the batch runs with savepoints).
    SqliteConnection& conn = *detail::tl_batch_conn;
    // Outside its transaction a write would commit on its own; in a poisoned pass it is wasted.
    if (!conn.in_transaction() || (detail::tl_batch_optimistic && detail::tl_batch_poisoned)) {
      return R(err(StoreErrc::kUnavailable, "the batch's transaction ended or is being undone"));
    }
    auto call = [&]() -> R {
      try {
        return fn(conn);
      } catch (const std::exception& e) {
        return err(StoreErrc::kUnavailable, std::string("sqlite store: ") + e.what());
      }
    };
    if (detail::tl_batch_optimistic) {
      const std::int64_t changes_before = conn.total_changes();
      R r = call();
      if (!r && !detail::failed_write_left_no_trace(conn, changes_before)) {
        detail::tl_batch_poisoned = true;  // run_batch undoes the pass and runs it again
      }
      return r;
    }
    if (auto saved = conn.run_cached(detail::kNestedSavepoint.begin); !saved) {
      return R(std::unexpected(saved.error()));
    }
    R r = call();
    auto ended = detail::end_savepoint(conn, detail::kNestedSavepoint, r.has_value());
    if (!ended && r) return R(std::unexpected(ended.error()));
    return r;
  }
  std::optional<R> out;
  SqlitePool::WriteOp op;
  op.body = [&](SqliteConnection& conn) {
    try {
      out.emplace(fn(conn));
    } catch (const std::exception& e) {  // e.g. bad_alloc: only this write is rolled back
      out.emplace(err(StoreErrc::kUnavailable, std::string("sqlite store: ") + e.what()));
    }
    return out->has_value();
  };
  op.fail = [&](const StoreError& e) { out.emplace(std::unexpected(e)); };
  pool.write(op);
  return std::move(*out);
}

// `snapshot`: run inside one read transaction so all statements see the same state. On the
// writer thread inside a batch, reads see the batch's own uncommitted writes.
template <class Fn>
auto read_tx(SqlitePool& pool, Fn&& fn, bool snapshot = false) {
  if (detail::tl_batch_conn != nullptr) return run_tx(*detail::tl_batch_conn, nullptr, fn);
  auto conn = pool.borrow();
  return run_tx(*conn, snapshot ? "BEGIN" : nullptr, fn);
}

struct CheckRewrite {
  const char* table;
  const char* from;
  const char* to;
};

// Each `from` is verbatim from migrations 1 and 4; each `to` admits exactly the same rows.
constexpr CheckRewrite kInListChecks[] = {
    {"holds", "CHECK (state IN ('open', 'settled', 'refunded'))",
     "CHECK (state = 'open' OR state = 'settled' OR state = 'refunded')"},
    {"ledger", "CHECK (kind IN ('grant', 'adjust', 'reserve', 'settle', 'refund'))",
     "CHECK (kind = 'grant' OR kind = 'adjust' OR kind = 'reserve' OR kind = 'settle' OR "
     "kind = 'refund')"},
    {"ledger", "CHECK ((kind IN ('reserve', 'settle', 'refund')) = (hold_id IS NOT NULL))",
     "CHECK ((kind = 'reserve' OR kind = 'settle' OR kind = 'refund') = (hold_id IS NOT NULL))"},
    {"jobs",
     "CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'expired'))",
     "CHECK (status = 'queued' OR status = 'running' OR status = 'succeeded' OR "
     "status = 'failed' OR status = 'canceled' OR status = 'expired')"},
    {"jobs",
     "CHECK ((status IN ('succeeded', 'failed', 'canceled', 'expired')) = "
     "(finished_at_ms IS NOT NULL))",
     "CHECK ((status = 'succeeded' OR status = 'failed' OR status = 'canceled' OR "
     "status = 'expired') = (finished_at_ms IS NOT NULL))"},
    {"deliveries", "CHECK (state IN ('pending', 'succeeded', 'failed'))",
     "CHECK (state = 'pending' OR state = 'succeeded' OR state = 'failed')"},
};

// SQLite's documented way to change a constraint that no stored row depends on: edit the
// table's CREATE text in sqlite_schema (writable_schema) and bump schema_version so every
// connection re-reads it. No table is rebuilt, so it is instant at any size. Idempotent: a table
// already rewritten (a file rolled back by hand, as the migration tests do) is left as is.
StoreResult<void> rewrite_in_list_checks(SqliteConnection& c) {
  auto version = c.prepare("PRAGMA schema_version").one([](Stmt& r) { return r.i64(0); });
  if (!version) return std::unexpected(version.error());
  if (auto on = c.exec("PRAGMA writable_schema = ON"); !on) return on;
  auto rewrite = [&]() -> StoreResult<void> {
    for (const CheckRewrite& r : kInListChecks) {
      auto sql = c.prepare("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?")
                     .bind(r.table)
                     .one([](Stmt& r) { return r.text(0); });
      if (!sql) return std::unexpected(sql.error());
      if (!*sql) return err(StoreErrc::kUnavailable, std::string("no table ") + r.table);
      std::string text = std::move(**sql);
      std::size_t at = text.find(r.from);
      if (at == std::string::npos) {
        if (text.find(r.to) != std::string::npos) continue;
        return err(StoreErrc::kUnavailable,
                   std::string("unexpected CHECK in table ") + r.table + ": " + r.from);
      }
      text.replace(at, std::strlen(r.from), r.to);
      auto updated = c.prepare("UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = ?")
                         .bind(text, r.table)
                         .run();
      if (!updated) return updated;
    }
    std::string bump = "PRAGMA schema_version = " + std::to_string(version->value_or(0) + 1);
    return c.exec(bump.c_str());
  };
  auto done = rewrite();
  auto off = c.exec("PRAGMA writable_schema = OFF");
  if (!done) return done;
  return off;
}

// The retention sweep's work list (list_jobs_with_results); finishes append at its right edge.
constexpr const char* kKeptResultsIndex =
    "CREATE INDEX IF NOT EXISTS jobs_results_kept ON jobs(finished_at_ms) "
    "WHERE status = 'succeeded' AND results_expired_at_ms IS NULL";

StoreResult<void> index_kept_results(SqliteConnection& conn, bool wanted) {
  auto body = [&](SqliteConnection& c) -> StoreResult<void> {
    return c.exec(wanted ? kKeptResultsIndex : "DROP INDEX IF EXISTS jobs_results_kept");
  };
  return run_tx(conn, "BEGIN IMMEDIATE", body);
}

StoreResult<void> migrate(SqliteConnection& conn, const Clock& clock) {
  auto body = [&](SqliteConnection& c) -> StoreResult<void> {
    if (auto made = c.exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
                           "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT");
        !made) {
      return made;
    }
    // Re-read under the write lock: another process may have migrated since we looked.
    auto current =
        c.prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").one([](Stmt& r) {
          return r.i64(0);
        });
    if (!current) return std::unexpected(current.error());
    std::int64_t version = current->value_or(0);
    if (version > SqliteStore::latest_schema_version()) {
      return err(StoreErrc::kUnavailable, "database schema version " + std::to_string(version) +
                                              " is newer than this binary's " +
                                              std::to_string(SqliteStore::latest_schema_version()));
    }
    for (const Migration& migration : kMigrations) {
      if (migration.version <= version) continue;
      auto applied = migration.sql != nullptr ? c.exec(migration.sql) : migration.apply(c);
      if (!applied) {
        return err(applied.error().code, "migration " + std::to_string(migration.version) + ": " +
                                             applied.error().message);
      }
      auto recorded = c.prepare("INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)")
                          .bind(migration.version, clock.now_s())
                          .run();
      if (!recorded) return recorded;
    }
    return {};
  };
  return run_tx(conn, "BEGIN IMMEDIATE", body);
}

User read_user(Stmt& r) {
  User u;
  u.id = r.i64(0);
  u.email = r.text(1);
  u.password_hash = r.text(2);
  u.is_admin = r.flag(3);
  u.disabled = r.flag(4);
  u.created_at = r.i64(5);
  u.balance = r.i64(6);
  u.reserved = r.i64(7);
  return u;
}

ApiKey read_key(Stmt& r) {
  ApiKey k;
  k.id = r.i64(0);
  k.user_id = r.i64(1);
  k.name = r.text(2);
  k.prefix = r.text(3);
  k.last4 = r.text(4);
  k.hash = r.text(5);
  k.created_at = r.i64(6);
  k.last_used_at = r.opt_i64(7);
  k.disabled = r.flag(8);
  k.deleted = r.flag(9);
  k.profile = r.text(10);
  return k;
}

Hold read_hold(Stmt& r) {
  Hold h;
  h.id = r.i64(0);
  h.user_id = r.i64(1);
  h.amount = r.i64(2);
  h.charged = r.i64(3);
  h.job_id = r.text(4);
  h.state = state_from(r.text(5));
  h.created_at = r.i64(6);
  h.resolved_at = r.opt_i64(7);
  return h;
}

LedgerEntry read_entry(Stmt& r) {
  LedgerEntry e;
  e.id = r.i64(0);
  e.user_id = r.i64(1);
  e.kind = kind_from(r.text(2));
  e.amount = r.i64(3);
  e.balance_after = r.i64(4);
  e.hold_id = r.opt_i64(5);
  e.job_id = r.text(6);
  e.note = r.text(7);
  e.created_at = r.i64(8);
  return e;
}

jobs::Job read_job(Stmt& r) {
  jobs::Job j;
  j.id = r.text(0);
  j.user_id = r.i64(1);
  j.key_id = r.i64(2);
  j.kind = r.text(3);
  j.model = r.text(4);
  j.dialect = r.text(5);
  j.params_json = r.text(6);
  j.callback_url = r.text(7);
  j.status = job_status_from(r.text(8));
  j.hold_id = r.opt_i64(9);
  j.reserved = r.i64(10);
  j.charged = r.i64(11);
  j.channel = r.text(12);
  j.upstream_task_id = r.text(13);
  j.attempts = static_cast<int>(r.i64(14));
  j.result_json = r.text(15);
  j.error_code = r.text(16);
  j.error_message = r.text(17);
  j.created_at_ms = r.i64(18);
  j.updated_at_ms = r.i64(19);
  j.started_at_ms = r.opt_i64(20);
  j.finished_at_ms = r.opt_i64(21);
  j.results_expired_at_ms = r.opt_i64(22);
  return j;
}

Delivery read_delivery(Stmt& r) {
  Delivery d;
  d.id = r.text(0);
  d.job_id = r.text(1);
  d.user_id = r.i64(2);
  d.url = r.text(3);
  d.body = r.text(4);
  d.state = delivery_state_from(r.text(5));
  d.attempts = static_cast<int>(r.i64(6));
  d.cycle_attempts = static_cast<int>(r.i64(7));
  d.next_attempt_at_ms = r.i64(8);
  d.created_at_ms = r.i64(9);
  d.last_attempt_at_ms = r.opt_i64(10);
  d.last_status = static_cast<int>(r.i64(11));
  d.last_error = r.text(12);
  return d;
}

DeliveryAttempt read_attempt(Stmt& r) {
  DeliveryAttempt a;
  a.delivery_id = r.text(0);
  a.number = static_cast<int>(r.i64(1));
  a.at_ms = r.i64(2);
  a.duration_ms = r.i64(3);
  a.status = static_cast<int>(r.i64(4));
  a.error = r.text(5);
  return a;
}

std::int64_t read_i64(Stmt& r) { return r.i64(0); }
std::string read_text(Stmt& r) { return r.text(0); }

template <class T>
StoreResult<T> found(StoreResult<std::optional<T>> row, std::string_view what, std::int64_t id) {
  if (!row) return std::unexpected(row.error());
  if (!*row) return err(StoreErrc::kNotFound, "no " + std::string(what) + " " + std::to_string(id));
  return std::move(**row);
}

StoreResult<void> bump_auth_version(SqliteConnection& c) {
  return c.prepare("UPDATE meta SET value = value + 1 WHERE key = 'auth_version'").run();
}

StoreResult<Micros> balance_of(SqliteConnection& c, std::int64_t user_id) {
  return found(c.prepare("SELECT balance FROM users WHERE id = ?").bind(user_id).one(read_i64),
               "user", user_id);
}

// The hot inserts build their result from what they wrote and the new rowid: RETURNING would
// make SQLite open an ephemeral table for every statement.
StoreResult<LedgerEntry> append_ledger(SqliteConnection& c, std::int64_t user_id, LedgerKind kind,
                                       Micros amount, Micros balance_after,
                                       std::optional<std::int64_t> hold_id, std::string_view job_id,
                                       std::string_view note, std::int64_t now) {
  auto inserted =
      c.prepare(
           "INSERT INTO ledger(user_id, kind, amount, balance_after, hold_id, job_id, "
           "note, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
          .bind(user_id, to_string(kind), amount, balance_after, hold_id, job_id, note, now)
          .run();
  if (!inserted) return std::unexpected(inserted.error());
  return LedgerEntry{c.last_insert_rowid(), user_id,           kind, amount, balance_after, hold_id,
                     std::string(job_id),   std::string(note), now};
}

StoreResult<Hold> open_hold(SqliteConnection& c, std::int64_t hold_id) {
  auto hold = found(
      c.prepare("SELECT " IG_HOLD_COLS " FROM holds WHERE id = ?").bind(hold_id).one(read_hold),
      "hold", hold_id);
  if (hold && hold->state != HoldState::kOpen) {
    return err(StoreErrc::kAlreadyResolved, "hold " + std::to_string(hold_id) + " already " +
                                                std::string(to_string(hold->state)));
  }
  return hold;
}

// Moves `amount` (> 0) from the user's balance into a new open hold, with its reserve row.
// `balance` is the user's balance as read in this transaction.
StoreResult<Hold> open_new_hold(SqliteConnection& c, std::int64_t user_id, Micros balance,
                                Micros amount, std::string_view job_id, std::int64_t now) {
  if (balance < amount) {
    return err(StoreErrc::kInsufficientCredits, "balance below the amount to reserve");
  }
  Micros after = balance - amount;
  auto updated = c.prepare("UPDATE users SET balance = ?, reserved = reserved + ? WHERE id = ?")
                     .bind(after, amount, user_id)
                     .run();
  if (!updated) return std::unexpected(updated.error());
  auto inserted = c.prepare(
                       "INSERT INTO holds(user_id, amount, job_id, created_at) "
                       "VALUES (?, ?, ?, ?)")
                      .bind(user_id, amount, job_id, now)
                      .run();
  if (!inserted) return std::unexpected(inserted.error());
  Hold hold;
  hold.id = c.last_insert_rowid();
  hold.user_id = user_id;
  hold.amount = amount;
  hold.job_id = std::string(job_id);
  hold.state = HoldState::kOpen;
  hold.created_at = now;
  auto row =
      append_ledger(c, user_id, LedgerKind::kReserve, -amount, after, hold.id, job_id, "", now);
  if (!row) return std::unexpected(row.error());
  return hold;
}

// Resolves an open hold: settles it charging `charge` (0 <= charge <= amount, checked by the
// caller) or refunds it, returns the rest to the balance and writes the one resolution row.
StoreResult<Hold> resolve_hold(SqliteConnection& c, Hold hold, HoldState to, Micros charge,
                               std::string_view note, std::int64_t now) {
  hold.state = to;
  hold.charged = to == HoldState::kSettled ? charge : 0;
  hold.resolved_at = now;
  Micros returned = hold.amount - hold.charged;
  auto closed =
      c.prepare(
           "UPDATE holds SET state = ?, charged = ?, resolved_at = ? "
           "WHERE id = ? AND state = 'open' AND user_id = ? AND amount = ?")
          .bind(to_string(hold.state), hold.charged, now, hold.id, hold.user_id, hold.amount)
          .run();
  if (!closed) return std::unexpected(closed.error());
  if (c.changes() != 1) return err(StoreErrc::kAlreadyResolved, "hold resolved concurrently");
  auto updated = c.prepare(
                      "UPDATE users SET reserved = reserved - ?, balance = balance + ? "
                      "WHERE id = ?")
                     .bind(hold.amount, returned, hold.user_id)
                     .run();
  if (!updated) return std::unexpected(updated.error());
  auto balance = balance_of(c, hold.user_id);  // not RETURNING: see append_ledger
  if (!balance) return std::unexpected(balance.error());
  auto row = append_ledger(c, hold.user_id,
                           to == HoldState::kSettled ? LedgerKind::kSettle : LedgerKind::kRefund,
                           returned, *balance, hold.id, hold.job_id, note, now);
  if (!row) return std::unexpected(row.error());
  return hold;
}

// A job's hold is resolved by finish_job together with the job, never on its own: otherwise the
// job would still run (and later settle) on money already returned.
StoreResult<void> refuse_job_hold(SqliteConnection& c, std::int64_t hold_id) {
  auto job = c.prepare("SELECT id FROM jobs WHERE hold_id = ?").bind(hold_id).one(read_text);
  if (!job) return std::unexpected(job.error());
  if (*job) {
    return err(StoreErrc::kConflict, "hold " + std::to_string(hold_id) + " belongs to job " +
                                         **job + ": resolve it with finish_job");
  }
  return {};
}

StoreResult<jobs::Job> load_job(SqliteConnection& c, std::string_view job_id) {
  auto job = c.prepare("SELECT " IG_JOB_COLS " FROM jobs WHERE id = ?").bind(job_id).one(read_job);
  if (!job) return std::unexpected(job.error());
  if (!*job) return err(StoreErrc::kNotFound, "no job " + std::string(job_id));
  return std::move(**job);
}

std::string finish_note(std::string_view job_id, const jobs::JobFinish& finish, Micros charge) {
  if (!finish.note.empty()) return finish.note;
  std::string note = "job " + std::string(job_id);
  if (finish.status == jobs::JobStatus::kSucceeded) {
    return note + " succeeded: charged " + format_credits(charge);
  }
  note = "refund: " + note + " " + std::string(jobs::to_string(finish.status));
  if (!finish.error_code.empty()) note += ": " + finish.error_code;
  return note;
}

}  // namespace

// --- lifecycle ---

std::int64_t SqliteStore::latest_schema_version() {
  return kMigrations[std::size(kMigrations) - 1].version;
}

SqliteStore::SqliteStore(std::unique_ptr<detail::SqlitePool> pool, const Clock& clock)
    : pool_(std::move(pool)), clock_(clock) {}

SqliteStore::~SqliteStore() = default;

StoreResult<std::unique_ptr<SqliteStore>> SqliteStore::open(const SqliteSettings& settings,
                                                            const Clock& clock) {
  if (settings.path.empty() || settings.path == ":memory:") {
    return err(StoreErrc::kInvalidArgument, "sqlite path must name a file");
  }
  if (settings.pool_size < 1 || settings.busy_timeout_ms < 0) {
    return err(StoreErrc::kInvalidArgument, "sqlite pool_size must be >= 1, busy timeout >= 0");
  }
  try {
    std::filesystem::path parent = std::filesystem::path(settings.path).parent_path();
    if (!parent.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(parent, ec);
      if (ec) {
        return err(StoreErrc::kUnavailable,
                   "cannot create directory " + parent.string() + ": " + ec.message());
      }
    }
    auto pool = std::make_unique<detail::SqlitePool>();
    for (int i = 0; i < settings.pool_size; ++i) {
      auto conn = SqliteConnection::open(settings);
      if (!conn) return std::unexpected(conn.error());
      if (i == 0) {
        if (auto migrated = migrate(**conn, clock); !migrated) {
          return std::unexpected(migrated.error());
        }
        if (auto indexed = index_kept_results(**conn, settings.index_kept_results); !indexed) {
          return std::unexpected(indexed.error());
        }
      }
      pool->add(std::move(*conn));
    }
    auto probe = SqliteConnection::open(settings);
    if (!probe) return std::unexpected(probe.error());
    pool->set_probe(std::move(*probe));
    auto writer = SqliteConnection::open(settings);
    if (!writer) return std::unexpected(writer.error());
    // With synchronous_full the writer's flusher syncs the WAL after each COMMIT instead.
    // Each write in a batch is a savepoint: keeping its sub-journal (and the ephemeral tables of
    // IN-list CHECKs) in memory spares a temp file write per touched page, and a larger cache
    // keeps a batch's dirty pages from spilling into the WAL before COMMIT.
    if (auto normal = (*writer)->exec(
            "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16384;");
        !normal) {
      return std::unexpected(normal.error());
    }
    auto checkpointer = SqliteConnection::open(settings);
    if (!checkpointer) return std::unexpected(checkpointer.error());
    pool->start_writer(std::move(*writer), std::move(*checkpointer), settings.path,
                       settings.synchronous_full);
    return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(pool), clock));
  } catch (const std::exception& e) {
    return err(StoreErrc::kUnavailable, std::string("opening sqlite store: ") + e.what());
  }
}

void SqliteStore::run_batched(BatchedWork work, BatchedDone done, Durability when) {
  auto op = std::make_unique<detail::SqlitePool::WriteOp>();
  op->wait_flush = when == Durability::kDurable;
  auto failure = std::make_shared<std::optional<StoreError>>();
  op->body = [work = std::move(work)](SqliteConnection&) {
    work();
    return true;
  };
  op->savepoint = false;  // each store call in `work` is a savepoint of its own
  op->fail = [failure](const StoreError& e) { *failure = e; };
  op->durable = [failure, done = std::move(done)] {
    if (*failure) {
      done(std::unexpected(**failure));
    } else {
      done({});
    }
  };
  pool_->submit(std::move(op));
}

StoreResult<void> SqliteStore::ping() {
  if (std::string failing = pool_->write_health(); !failing.empty()) {
    return err(StoreErrc::kUnavailable, failing);
  }
  return read_tx(*pool_, [](SqliteConnection& c) -> StoreResult<void> {
    auto one = c.prepare("SELECT 1").one(read_i64);
    if (!one) return std::unexpected(one.error());
    return {};
  });
}

// --- users ---

StoreResult<User> SqliteStore::create_user(const NewUser& user) {
  std::string email = lower_ascii(user.email);
  if (email.empty()) return err(StoreErrc::kInvalidArgument, "email must not be empty");
  std::int64_t now = clock_.now_s();
  auto created = write_tx(*pool_, [&](SqliteConnection& c) {
    return c
        .prepare(
            "INSERT INTO users(email, password_hash, is_admin, created_at) "
            "VALUES (?, ?, ?, ?) RETURNING " IG_USER_COLS)
        .bind(email, user.password_hash, user.is_admin, now)
        .one(read_user);
  });
  if (!created) {
    if (created.error().code == StoreErrc::kConflict) {
      return err(StoreErrc::kConflict, "email already registered");
    }
    return std::unexpected(created.error());
  }
  if (!*created) return err(StoreErrc::kUnavailable, "user insert returned no row");
  return std::move(**created);
}

StoreResult<User> SqliteStore::find_user(std::int64_t user_id) {
  return read_tx(*pool_, [&](SqliteConnection& c) {
    return found(
        c.prepare("SELECT " IG_USER_COLS " FROM users WHERE id = ?").bind(user_id).one(read_user),
        "user", user_id);
  });
}

StoreResult<User> SqliteStore::find_user_by_email(std::string_view email) {
  std::string lowered = lower_ascii(email);
  auto user = read_tx(*pool_, [&](SqliteConnection& c) {
    return c.prepare("SELECT " IG_USER_COLS " FROM users WHERE email = ?")
        .bind(lowered)
        .one(read_user);
  });
  if (!user) return std::unexpected(user.error());
  if (!*user) return err(StoreErrc::kNotFound, "no user with that email");
  return std::move(**user);
}

StoreResult<std::vector<User>> SqliteStore::list_users() {
  return read_tx(*pool_, [](SqliteConnection& c) {
    return c.prepare("SELECT " IG_USER_COLS " FROM users ORDER BY id").all(read_user);
  });
}

StoreResult<std::int64_t> SqliteStore::count_users() {
  return read_tx(*pool_, [](SqliteConnection& c) {
    return found(c.prepare("SELECT COUNT(*) FROM users").one(read_i64), "count", 0);
  });
}

StoreResult<void> SqliteStore::set_user_disabled(std::int64_t user_id, bool disabled) {
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<void> {
    auto updated =
        c.prepare("UPDATE users SET disabled = ? WHERE id = ?").bind(disabled, user_id).run();
    if (!updated) return updated;
    if (c.changes() == 0) return err(StoreErrc::kNotFound, "no user " + std::to_string(user_id));
    return bump_auth_version(c);
  });
}

// --- API keys ---

StoreResult<ApiKey> SqliteStore::create_api_key(const NewApiKey& key) {
  std::int64_t now = clock_.now_s();
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<ApiKey> {
    if (auto owner = balance_of(c, key.user_id); !owner) return std::unexpected(owner.error());
    auto created =
        c.prepare(
             "INSERT INTO api_keys(user_id, name, prefix, last4, hash, created_at, "
             "profile) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING " IG_KEY_COLS)
            .bind(key.user_id, key.name, key.prefix, key.last4, key.hash, now, key.profile)
            .one(read_key);
    if (!created) {
      if (created.error().code == StoreErrc::kConflict) {
        return err(StoreErrc::kConflict, "API key hash already exists");
      }
      return std::unexpected(created.error());
    }
    if (!*created) return err(StoreErrc::kUnavailable, "API key insert returned no row");
    return std::move(**created);
  });
}

StoreResult<std::vector<ApiKey>> SqliteStore::list_api_keys(std::int64_t user_id) {
  return read_tx(*pool_, [&](SqliteConnection& c) {
    return c
        .prepare("SELECT " IG_KEY_COLS
                 " FROM api_keys WHERE user_id = ? AND deleted = 0 "
                 "ORDER BY id")
        .bind(user_id)
        .all(read_key);
  });
}

StoreResult<std::vector<ApiKey>> SqliteStore::find_api_keys_by_prefix(std::string_view prefix) {
  return read_tx(*pool_, [&](SqliteConnection& c) {
    return c
        .prepare("SELECT " IG_KEY_COLS
                 " FROM api_keys WHERE prefix = ? AND deleted = 0 "
                 "ORDER BY id")
        .bind(prefix)
        .all(read_key);
  });
}

StoreResult<void> SqliteStore::revoke_api_key(std::int64_t key_id) {
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<void> {
    auto updated = c.prepare("UPDATE api_keys SET deleted = 1 WHERE id = ?").bind(key_id).run();
    if (!updated) return updated;
    if (c.changes() == 0) return err(StoreErrc::kNotFound, "no API key " + std::to_string(key_id));
    return bump_auth_version(c);
  });
}

StoreResult<AuthRecord> SqliteStore::find_auth_by_key_hash(std::string_view hash) {
  auto record = read_tx(*pool_, [&](SqliteConnection& c) {
    return c
        .prepare(
            "SELECT k.id, k.user_id, k.name, k.prefix, k.last4, k.hash, k.created_at, "
            "k.last_used_at, k.disabled, k.deleted, k.profile, u.email, u.disabled, u.is_admin "
            "FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.hash = ?")
        .bind(hash)
        .one([](Stmt& r) {
          AuthRecord a;
          a.key = read_key(r);
          a.email = r.text(11);
          a.user_disabled = r.flag(12);
          a.user_is_admin = r.flag(13);
          return a;
        });
  });
  if (!record) return std::unexpected(record.error());
  if (!*record) return err(StoreErrc::kNotFound, "no API key with that hash");
  return std::move(**record);
}

StoreResult<void> SqliteStore::touch_api_keys(
    const std::vector<std::pair<std::int64_t, std::int64_t>>& key_last_used) {
  if (key_last_used.empty()) return {};
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<void> {
    for (const auto& [key_id, used_at] : key_last_used) {
      auto touched = c.prepare(
                          "UPDATE api_keys SET last_used_at = "
                          "MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?")
                         .bind(used_at, key_id)
                         .run();
      if (!touched) return touched;
    }
    return {};
  });
}

// PRAGMA data_version on a connection that never writes changes exactly when another connection
// (of this process or any other) committed. It reads the WAL index in shared memory: no disk
// I/O, so it is cheap enough for an IO thread.
StoreResult<std::int64_t> SqliteStore::change_counter() {
  return pool_->with_probe([](SqliteConnection& c) {
    return found(c.prepare("PRAGMA data_version").one(read_i64), "data_version", 0);
  });
}

StoreResult<std::int64_t> SqliteStore::auth_version() {
  return read_tx(*pool_, [](SqliteConnection& c) {
    return found(c.prepare("SELECT value FROM meta WHERE key = 'auth_version'").one(read_i64),
                 "meta auth_version", 0);
  });
}

// --- credit ledger ---

StoreResult<LedgerEntry> SqliteStore::grant(std::int64_t user_id, Micros amount,
                                            std::string_view note) {
  if (amount == 0) return err(StoreErrc::kInvalidArgument, "grant amount must not be zero");
  if (amount > kMaxMicros || amount < -kMaxMicros) {
    return err(StoreErrc::kInvalidArgument, "grant amount too large");
  }
  std::int64_t now = clock_.now_s();
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<LedgerEntry> {
    struct Funds {
      Micros balance;
      Micros reserved;
    };
    auto funds = found(c.prepare("SELECT balance, reserved FROM users WHERE id = ?")
                           .bind(user_id)
                           .one([](Stmt& r) {
                             return Funds{r.i64(0), r.i64(1)};
                           }),
                       "user", user_id);
    if (!funds) return std::unexpected(funds.error());
    Micros applied = amount;
    // Open holds come back on a refund: they count against the maximum too.
    if (amount > 0 && funds->balance + funds->reserved + amount > kMaxMicros) {
      return err(StoreErrc::kInvalidArgument, "balance would exceed the maximum");
    }
    if (amount < 0) applied = std::max(amount, -funds->balance);
    Micros after = funds->balance + applied;
    auto updated =
        c.prepare("UPDATE users SET balance = ? WHERE id = ?").bind(after, user_id).run();
    if (!updated) return std::unexpected(updated.error());
    return append_ledger(c, user_id, amount > 0 ? LedgerKind::kGrant : LedgerKind::kAdjust, applied,
                         after, std::nullopt, "", note, now);
  });
}

StoreResult<Hold> SqliteStore::reserve(std::int64_t user_id, Micros amount,
                                       std::string_view job_id) {
  if (amount <= 0) return err(StoreErrc::kInvalidArgument, "reserve amount must be positive");
  std::int64_t now = clock_.now_s();
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<Hold> {
    auto balance = balance_of(c, user_id);
    if (!balance) return std::unexpected(balance.error());
    return open_new_hold(c, user_id, *balance, amount, job_id, now);
  });
}

StoreResult<Hold> SqliteStore::settle(std::int64_t hold_id, Micros actual) {
  std::int64_t now = clock_.now_s();
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<Hold> {
    auto hold = open_hold(c, hold_id);
    if (!hold) return hold;
    if (auto mine = refuse_job_hold(c, hold_id); !mine) return std::unexpected(mine.error());
    if (actual < 0 || actual > hold->amount) {
      return err(StoreErrc::kInvalidArgument, "settle amount outside 0..held");
    }
    return resolve_hold(c, std::move(*hold), HoldState::kSettled, actual,
                        "charged " + format_credits(actual), now);
  });
}

StoreResult<Hold> SqliteStore::refund(std::int64_t hold_id, std::string_view note) {
  std::int64_t now = clock_.now_s();
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<Hold> {
    auto hold = open_hold(c, hold_id);
    if (!hold) return hold;
    if (auto mine = refuse_job_hold(c, hold_id); !mine) return std::unexpected(mine.error());
    return resolve_hold(c, std::move(*hold), HoldState::kRefunded, 0, note, now);
  });
}

StoreResult<Hold> SqliteStore::find_hold(std::int64_t hold_id) {
  return read_tx(*pool_, [&](SqliteConnection& c) {
    return found(
        c.prepare("SELECT " IG_HOLD_COLS " FROM holds WHERE id = ?").bind(hold_id).one(read_hold),
        "hold", hold_id);
  });
}

StoreResult<std::vector<Hold>> SqliteStore::list_open_holds() {
  return read_tx(*pool_, [](SqliteConnection& c) {
    return c.prepare("SELECT " IG_HOLD_COLS " FROM holds WHERE state = 'open' ORDER BY id")
        .all(read_hold);
  });
}

StoreResult<std::vector<LedgerEntry>> SqliteStore::list_ledger(std::int64_t user_id, int limit) {
  if (limit <= 0) return err(StoreErrc::kInvalidArgument, "limit must be positive");
  return read_tx(
      *pool_,
      [&](SqliteConnection& c) -> StoreResult<std::vector<LedgerEntry>> {
        if (auto user = balance_of(c, user_id); !user) return std::unexpected(user.error());
        return c
            .prepare("SELECT " IG_LEDGER_COLS
                     " FROM ledger WHERE user_id = ? "
                     "ORDER BY id DESC LIMIT ?")
            .bind(user_id, limit)
            .all(read_entry);
      },
      /*snapshot=*/true);
}

StoreResult<LedgerCheckReport> SqliteStore::check_ledger() {
  auto body = [](SqliteConnection& c) -> StoreResult<LedgerCheckReport> {
    LedgerCheckReport report;
    auto violation = [&](std::string line) { report.violations.push_back(std::move(line)); };
    auto n = [](std::int64_t v) { return std::to_string(v); };

    auto counts = c.prepare(
                       "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM ledger), "
                       "(SELECT COUNT(*) FROM holds), "
                       "(SELECT COUNT(*) FROM holds WHERE state = 'open'), "
                       "(SELECT COUNT(*) FROM jobs)")
                      .one([&](Stmt& r) {
                        report.users_checked = r.i64(0);
                        report.ledger_rows_checked = r.i64(1);
                        report.holds_checked = r.i64(2);
                        report.open_holds = r.i64(3);
                        report.jobs_checked = r.i64(4);
                        return 0;
                      });
    if (!counts) return std::unexpected(counts.error());

    // Rows whose balance_after disagrees with the running sum of the user's rows.
    auto rows =
        c.prepare(
             "SELECT id, user_id, balance_after, running FROM ("
             "SELECT id, user_id, balance_after, SUM(amount) OVER "
             "(PARTITION BY user_id ORDER BY id) AS running FROM ledger) "
             "WHERE balance_after <> running ORDER BY id")
            .each([&](Stmt& r) {
              violation("ledger row " + n(r.i64(0)) + " (user " + n(r.i64(1)) +
                        "): balance_after " + n(r.i64(2)) + " != running sum " + n(r.i64(3)));
            });
    if (!rows) return std::unexpected(rows.error());

    auto users =
        c.prepare(
             "SELECT u.id, u.balance, u.reserved, "
             "COALESCE((SELECT SUM(l.amount) FROM ledger l WHERE l.user_id = u.id), 0), "
             "COALESCE((SELECT SUM(h.amount) FROM holds h "
             "WHERE h.user_id = u.id AND h.state = 'open'), 0) "
             "FROM users u ORDER BY u.id")
            .each([&](Stmt& r) {
              std::string who = "user " + n(r.i64(0));
              Micros balance = r.i64(1), reserved = r.i64(2), sum = r.i64(3), held = r.i64(4);
              if (balance < 0) violation(who + ": negative balance " + n(balance));
              if (reserved < 0) violation(who + ": negative reserved " + n(reserved));
              if (balance != sum) {
                violation(who + ": balance " + n(balance) + " != sum of ledger rows " + n(sum));
              }
              if (reserved != held) {
                violation(who + ": reserved " + n(reserved) + " != sum of open holds " + n(held));
              }
            });
    if (!users) return std::unexpected(users.error());

    auto holds =
        c.prepare(
             "SELECT h.id, h.state, h.amount, h.charged, "
             "COUNT(CASE WHEN l.kind = 'reserve' THEN 1 END), "
             "COALESCE(SUM(CASE WHEN l.kind = 'reserve' THEN l.amount END), 0), "
             "COUNT(CASE WHEN l.kind = 'settle' THEN 1 END), "
             "COALESCE(SUM(CASE WHEN l.kind = 'settle' THEN l.amount END), 0), "
             "COUNT(CASE WHEN l.kind = 'refund' THEN 1 END), "
             "COALESCE(SUM(CASE WHEN l.kind = 'refund' THEN l.amount END), 0), "
             "COUNT(CASE WHEN l.user_id <> h.user_id THEN 1 END) "
             "FROM holds h LEFT JOIN ledger l ON l.hold_id = h.id "
             "GROUP BY h.id ORDER BY h.id")
            .each([&](Stmt& r) {
              std::string state = r.text(1);
              HoldState hold_state = state_from(state);
              std::string who = "hold " + n(r.i64(0)) + " (" + state + ")";
              Micros amount = r.i64(2), charged = r.i64(3);
              std::int64_t reserve_rows = r.i64(4), settle_rows = r.i64(6), refund_rows = r.i64(8),
                           foreign_rows = r.i64(10);
              Micros reserve_sum = r.i64(5), settle_sum = r.i64(7), refund_sum = r.i64(9);
              if (reserve_rows != 1 || reserve_sum != -amount) {
                violation(who + ": " + n(reserve_rows) + " reserve rows summing to " +
                          n(reserve_sum) + ", expected one of " + n(-amount));
              }
              std::int64_t resolutions = settle_rows + refund_rows;
              std::int64_t expected = hold_state == HoldState::kOpen ? 0 : 1;
              if (resolutions != expected) {
                violation(who + ": " + n(resolutions) + " settle/refund rows, expected " +
                          n(expected));
              } else if (hold_state == HoldState::kSettled &&
                         (settle_rows != 1 || settle_sum != amount - charged)) {
                violation(who + ": settle row missing or returns " + n(settle_sum) + ", expected " +
                          n(amount - charged));
              } else if (hold_state == HoldState::kRefunded &&
                         (refund_rows != 1 || refund_sum != amount)) {
                violation(who + ": refund row missing or returns " + n(refund_sum) + ", expected " +
                          n(amount));
              }
              if (charged < 0 || charged > amount ||
                  (hold_state != HoldState::kSettled && charged != 0)) {
                violation(who + ": charged " + n(charged) + " inconsistent with amount " +
                          n(amount));
              }
              if (foreign_rows != 0) {
                violation(who + ": " + n(foreign_rows) + " ledger rows belong to another user");
              }
            });
    if (!holds) return std::unexpected(holds.error());

    // A job's hold is open exactly while the job runs; the final state decides how it closed.
    auto job_holds =
        c.prepare(
             "SELECT j.id, j.status, j.user_id, j.reserved, j.charged, j.hold_id, "
             "h.id, h.state, h.user_id, h.amount, h.charged, h.job_id "
             "FROM jobs j LEFT JOIN holds h ON h.id = j.hold_id ORDER BY j.rowid")
            .each([&](Stmt& r) {
              jobs::JobStatus status = job_status_from(r.text(1));
              std::string who = "job " + r.text(0) + " (" + r.text(1) + ")";
              Micros reserved = r.i64(3), charged = r.i64(4);
              if (status != jobs::JobStatus::kSucceeded && charged != 0) {
                violation(who + ": charged " + n(charged) + " without succeeding");
              }
              std::optional<std::int64_t> hold_id = r.opt_i64(5);
              if (!hold_id) {
                if (reserved != 0) violation(who + ": reserved " + n(reserved) + " without a hold");
                if (charged != 0) violation(who + ": charged " + n(charged) + " without a hold");
                return;
              }
              std::string hold = "hold " + n(*hold_id);
              if (!r.opt_i64(6)) {
                violation(who + ": " + hold + " does not exist");
                return;
              }
              std::string state = r.text(7);
              HoldState hold_state = state_from(state);
              if (r.i64(8) != r.i64(2)) {
                violation(who + ": " + hold + " belongs to user " + n(r.i64(8)) + ", not " +
                          n(r.i64(2)));
              }
              if (r.text(11) != r.text(0)) {
                violation(who + ": " + hold + " is tagged with job '" + r.text(11) + "'");
              }
              if (r.i64(9) != reserved) {
                violation(who + ": reserved " + n(reserved) + " != " + hold + " amount " +
                          n(r.i64(9)));
              }
              HoldState expected = !jobs::is_final(status)                 ? HoldState::kOpen
                                   : status == jobs::JobStatus::kSucceeded ? HoldState::kSettled
                                                                           : HoldState::kRefunded;
              if (hold_state != expected) {
                violation(who + ": " + hold + " is " + state + ", expected " +
                          std::string(to_string(expected)));
              } else if (expected == HoldState::kSettled && r.i64(10) != charged) {
                violation(who + ": charged " + n(charged) + " != " + hold + " charged " +
                          n(r.i64(10)));
              }
            });
    if (!job_holds) return std::unexpected(job_holds.error());
    return report;
  };
  return read_tx(*pool_, body, /*snapshot=*/true);
}

// --- jobs ---

StoreResult<jobs::Job> SqliteStore::create_job(const jobs::NewJob& job) {
  if (job.id.empty()) return err(StoreErrc::kInvalidArgument, "job id must not be empty");
  if (job.reserve < 0) return err(StoreErrc::kInvalidArgument, "job reserve must not be negative");
  std::int64_t now_ms = clock_.now_ms();
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<jobs::Job> {
    auto balance = balance_of(c, job.user_id);  // also: the owner exists
    if (!balance) return std::unexpected(balance.error());
    std::optional<std::int64_t> hold_id;
    if (job.reserve > 0) {
      auto hold = open_new_hold(c, job.user_id, *balance, job.reserve, job.id, now_ms / 1000);
      if (!hold) {
        // A duplicate id reports kConflict whatever the balance (the INSERT below reports it
        // when the hold could be opened).
        if (hold.error().code == StoreErrc::kInsufficientCredits) {
          auto existing = c.prepare("SELECT 1 FROM jobs WHERE id = ?").bind(job.id).one(read_i64);
          if (!existing) return std::unexpected(existing.error());
          if (*existing) return err(StoreErrc::kConflict, "job " + job.id + " already exists");
        }
        return std::unexpected(hold.error());
      }
      hold_id = hold->id;
    }
    const jobs::JobStatus status =
        job.start_running ? jobs::JobStatus::kRunning : jobs::JobStatus::kQueued;
    const std::optional<std::int64_t> started =
        job.start_running ? std::optional<std::int64_t>(now_ms) : std::nullopt;
    auto created = c.prepare(
                        "INSERT INTO jobs(id, user_id, key_id, kind, model, dialect, params_json, "
                        "callback_url, hold_id, reserved, created_at_ms, updated_at_ms, status, "
                        "started_at_ms) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                       .bind(job.id, job.user_id, job.key_id, job.kind, job.model, job.dialect,
                             job.params_json, job.callback_url, hold_id, job.reserve, now_ms,
                             now_ms, jobs::to_string(status), started)
                       .run();
    if (!created) {
      if (created.error().code == StoreErrc::kConflict) {
        return err(StoreErrc::kConflict, "job " + job.id + " already exists");
      }
      return std::unexpected(created.error());
    }
    jobs::Job out;
    out.id = job.id;
    out.user_id = job.user_id;
    out.key_id = job.key_id;
    out.kind = job.kind;
    out.model = job.model;
    out.dialect = job.dialect;
    out.params_json = job.params_json;
    out.callback_url = job.callback_url;
    out.status = status;
    out.hold_id = hold_id;
    out.reserved = job.reserve;
    out.created_at_ms = now_ms;
    out.updated_at_ms = now_ms;
    out.started_at_ms = started;
    return out;
  });
}

StoreResult<jobs::Job> SqliteStore::find_job(std::string_view job_id) {
  return read_tx(*pool_, [&](SqliteConnection& c) { return load_job(c, job_id); });
}

StoreResult<jobs::Job> SqliteStore::transition_job(std::string_view job_id, jobs::JobStatus from,
                                                   jobs::JobStatus to,
                                                   const jobs::JobUpdate& update) {
  if (jobs::is_final(to)) {
    return err(StoreErrc::kInvalidArgument, "a job reaches a final state only via finish_job");
  }
  if (jobs::is_final(from)) {
    return err(StoreErrc::kInvalidArgument, "a job in a final state never changes");
  }
  std::int64_t now_ms = clock_.now_ms();
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<jobs::Job> {
    auto moved = c.prepare(
                      "UPDATE jobs SET status = ?, channel = COALESCE(?, channel), "
                      "upstream_task_id = COALESCE(?, upstream_task_id), "
                      "attempts = attempts + ?, "
                      "started_at_ms = CASE WHEN ? THEN COALESCE(started_at_ms, ?) "
                      "ELSE started_at_ms END, "
                      "updated_at_ms = ? WHERE id = ? AND status = ? RETURNING " IG_JOB_COLS)
                     .bind(jobs::to_string(to), update.channel, update.upstream_task_id,
                           update.increment_attempts ? 1 : 0, update.mark_started, now_ms, now_ms,
                           job_id, jobs::to_string(from))
                     .one(read_job);
    if (!moved) return std::unexpected(moved.error());
    if (*moved) return std::move(**moved);
    auto current = load_job(c, job_id);
    if (!current) return current;
    return err(StoreErrc::kConflict, "job " + std::string(job_id) + " is " +
                                         std::string(jobs::to_string(current->status)) + ", not " +
                                         std::string(jobs::to_string(from)));
  });
}

StoreResult<jobs::Job> SqliteStore::finish_job(std::string_view job_id,
                                               const jobs::JobFinish& finish) {
  if (!jobs::is_final(finish.status)) {
    return err(StoreErrc::kInvalidArgument, "finish_job needs a final status");
  }
  if (finish.charge < 0) return err(StoreErrc::kInvalidArgument, "charge must not be negative");
  const bool succeeded = finish.status == jobs::JobStatus::kSucceeded;
  const Micros charge = succeeded ? finish.charge : 0;
  std::int64_t now_ms = clock_.now_ms();
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<jobs::Job> {
    auto job = load_job(c, job_id);
    if (!job) return job;
    if (jobs::is_final(job->status)) {
      return err(StoreErrc::kAlreadyResolved,
                 "job " + job->id + " already " + std::string(jobs::to_string(job->status)));
    }
    if (finish.only_from && job->status != *finish.only_from) {
      return err(StoreErrc::kConflict,
                 "job " + job->id + " is " + std::string(jobs::to_string(job->status)));
    }
    if (charge > job->reserved) {
      return err(StoreErrc::kInvalidArgument,
                 "charge above the job's reserve of " + format_credits(job->reserved));
    }
    if (job->hold_id) {
      // The job's hold was opened with the job, for the job's user and reserve; resolve_hold's
      // UPDATE matches all three and an open state, so no SELECT of the hold is needed first.
      Hold hold;
      hold.id = *job->hold_id;
      hold.user_id = job->user_id;
      hold.amount = job->reserved;
      hold.job_id = job->id;
      auto resolved =
          resolve_hold(c, std::move(hold), succeeded ? HoldState::kSettled : HoldState::kRefunded,
                       charge, finish_note(job->id, finish, charge), now_ms / 1000);
      if (!resolved) {
        if (resolved.error().code != StoreErrc::kAlreadyResolved) {
          return std::unexpected(resolved.error());
        }
        return err(StoreErrc::kUnavailable, "job " + job->id + " is unfinished but its hold " +
                                                std::to_string(*job->hold_id) +
                                                " is not open (or not the job's)");
      }
    }
    auto updated =
        c.prepare(
             "UPDATE jobs SET status = ?, charged = ?, result_json = ?, "
             "error_code = ?, error_message = ?, channel = COALESCE(?, channel), "
             "finished_at_ms = ?, updated_at_ms = ? "
             "WHERE id = ? AND status IN ('queued', 'running')")
            .bind(jobs::to_string(finish.status), charge, finish.result_json, finish.error_code,
                  finish.error_message, finish.channel, now_ms, now_ms, job->id)
            .run();
    if (!updated) return std::unexpected(updated.error());
    if (c.changes() != 1) return err(StoreErrc::kAlreadyResolved, "job finished concurrently");
    // The row as just written, from what was read above (not RETURNING: see append_ledger).
    std::optional<jobs::Job> finished = std::move(*job);
    finished->status = finish.status;
    finished->charged = charge;
    finished->result_json = finish.result_json;
    finished->error_code = finish.error_code;
    finished->error_message = finish.error_message;
    if (finish.channel) finished->channel = *finish.channel;
    finished->finished_at_ms = now_ms;
    finished->updated_at_ms = now_ms;
    if (!finished->callback_url.empty()) {
      // DO NOTHING: a stray row with this id (only a hand edit can make one) must not keep the
      // job, and its hold, from ever finishing.
      auto queued = c.prepare(
                         "INSERT INTO deliveries(id, job_id, user_id, url, next_attempt_at_ms, "
                         "created_at_ms) VALUES ('msg_' || ?1, ?1, ?2, ?3, ?4, ?4) "
                         "ON CONFLICT(id) DO NOTHING")
                        .bind(finished->id, finished->user_id, finished->callback_url, now_ms)
                        .run();
      if (!queued) return std::unexpected(queued.error());
    }
    return std::move(*finished);
  });
}

StoreResult<std::vector<jobs::Job>> SqliteStore::list_unfinished_jobs() {
  return read_tx(*pool_, [](SqliteConnection& c) {
    return c
        .prepare("SELECT " IG_JOB_COLS
                 " FROM jobs WHERE status IN ('queued', 'running') "
                 "ORDER BY created_at_ms, rowid")
        .all(read_job);
  });
}

StoreResult<std::vector<jobs::Job>> SqliteStore::list_jobs(std::int64_t user_id,
                                                           std::optional<jobs::JobStatus> status,
                                                           int limit,
                                                           std::optional<std::string> after_id) {
  if (limit < 1 || limit > kMaxJobsPage) {
    return err(StoreErrc::kInvalidArgument,
               "limit must be within 1.." + std::to_string(kMaxJobsPage));
  }
  std::optional<std::string> status_text;
  if (status) status_text = std::string(jobs::to_string(*status));
  return read_tx(
      *pool_,
      [&](SqliteConnection& c) -> StoreResult<std::vector<jobs::Job>> {
        if (auto user = balance_of(c, user_id); !user) return std::unexpected(user.error());
        if (!after_id) {
          return c
              .prepare("SELECT " IG_JOB_COLS
                       " FROM jobs WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2) "
                       "ORDER BY created_at_ms DESC, rowid DESC LIMIT ?3")
              .bind(user_id, status_text, limit)
              .all(read_job);
        }
        // The cursor is a position: (created_at_ms, rowid) of the job the last page ended on.
        auto cursor =
            c.prepare("SELECT created_at_ms, rowid FROM jobs WHERE id = ? AND user_id = ?")
                .bind(*after_id, user_id)
                .one([](Stmt& r) { return std::pair(r.i64(0), r.i64(1)); });
        if (!cursor) return std::unexpected(cursor.error());
        if (!*cursor) return err(StoreErrc::kNotFound, "no job " + *after_id + " for this user");
        return c
            .prepare("SELECT " IG_JOB_COLS
                     " FROM jobs WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2) "
                     "AND (created_at_ms, rowid) < (?3, ?4) "
                     "ORDER BY created_at_ms DESC, rowid DESC LIMIT ?5")
            .bind(user_id, status_text, (*cursor)->first, (*cursor)->second, limit)
            .all(read_job);
      },
      /*snapshot=*/true);
}

StoreResult<std::vector<jobs::Job>> SqliteStore::list_jobs_with_results(
    std::int64_t finished_before_ms, int limit) {
  if (limit < 1 || limit > kMaxJobsPage) {
    return err(StoreErrc::kInvalidArgument,
               "limit must be within 1.." + std::to_string(kMaxJobsPage));
  }
  return read_tx(*pool_, [&](SqliteConnection& c) {
    // The WHERE repeats the partial index's condition so that SQLite uses it.
    return c
        .prepare("SELECT " IG_JOB_COLS
                 " FROM jobs WHERE status = 'succeeded' AND results_expired_at_ms IS NULL "
                 "AND finished_at_ms < ? ORDER BY finished_at_ms LIMIT ?")
        .bind(finished_before_ms, limit)
        .all(read_job);
  });
}

StoreResult<void> SqliteStore::mark_results_expired(std::string_view job_id, std::int64_t at_ms) {
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<void> {
    auto status = c.prepare("SELECT status FROM jobs WHERE id = ?").bind(job_id).one([](Stmt& r) {
      return r.text(0);
    });
    if (!status) return std::unexpected(status.error());
    if (!*status) return err(StoreErrc::kNotFound, "no job " + std::string(job_id));
    if (**status != "succeeded") {
      return err(StoreErrc::kConflict, "job " + std::string(job_id) + " did not succeed");
    }
    return c
        .prepare(
            "UPDATE jobs SET results_expired_at_ms = ? "
            "WHERE id = ? AND results_expired_at_ms IS NULL")
        .bind(at_ms, job_id)
        .run();
  });
}

// --- webhooks ---

StoreResult<std::string> SqliteStore::webhook_secret(std::int64_t user_id,
                                                     std::string_view candidate) {
  if (candidate.empty()) {
    return err(StoreErrc::kInvalidArgument, "webhook secret must not be empty");
  }
  // Every delivery asks, and all but the user's first find a secret: answer those without
  // queueing behind the writers.
  auto stored = read_tx(*pool_, [&](SqliteConnection& c) {
    return found(c.prepare("SELECT COALESCE(webhook_secret, '') FROM users WHERE id = ?")
                     .bind(user_id)
                     .one(read_text),
                 "user", user_id);
  });
  if (!stored) return stored;
  if (!stored->empty()) return stored;
  return write_tx(*pool_, [&](SqliteConnection& c) {
    // COALESCE keeps a secret stored since the read above (by any process): the first one wins.
    return found(c.prepare("UPDATE users SET webhook_secret = COALESCE(webhook_secret, ?) "
                           "WHERE id = ? RETURNING webhook_secret")
                     .bind(candidate, user_id)
                     .one(read_text),
                 "user", user_id);
  });
}

StoreResult<void> SqliteStore::set_webhook_secret(std::int64_t user_id, std::string_view secret) {
  if (secret.empty()) return err(StoreErrc::kInvalidArgument, "webhook secret must not be empty");
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<void> {
    auto updated =
        c.prepare("UPDATE users SET webhook_secret = ? WHERE id = ?").bind(secret, user_id).run();
    if (!updated) return updated;
    if (c.changes() == 0) return err(StoreErrc::kNotFound, "no user " + std::to_string(user_id));
    return {};
  });
}

StoreResult<std::vector<Delivery>> SqliteStore::claim_due_deliveries(std::int64_t now_ms,
                                                                     std::int64_t lease_ms,
                                                                     int limit) {
  if (limit < 1 || limit > kMaxDeliveryClaim) {
    return err(StoreErrc::kInvalidArgument,
               "limit must be within 1.." + std::to_string(kMaxDeliveryClaim));
  }
  if (lease_ms <= 0) return err(StoreErrc::kInvalidArgument, "lease must be positive");
  if (now_ms > std::numeric_limits<std::int64_t>::max() - lease_ms) {
    return err(StoreErrc::kInvalidArgument, "lease ends beyond the representable time");
  }
  const std::int64_t lease_end_ms = now_ms + lease_ms;
  // Select and lease in one write transaction, so no other claimer (thread or process) can see
  // a row between the two.
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<std::vector<Delivery>> {
    auto due = c.prepare("SELECT " IG_DELIVERY_COLS
                         " FROM deliveries WHERE state = 'pending' AND next_attempt_at_ms <= ? "
                         "ORDER BY next_attempt_at_ms, rowid LIMIT ?")
                   .bind(now_ms, limit)
                   .all(read_delivery);
    if (!due) return due;
    for (Delivery& delivery : *due) {
      auto leased = c.prepare("UPDATE deliveries SET next_attempt_at_ms = ? WHERE id = ?")
                        .bind(lease_end_ms, delivery.id)
                        .run();
      if (!leased) return std::unexpected(leased.error());
      delivery.next_attempt_at_ms = lease_end_ms;
    }
    return due;
  });
}

StoreResult<Delivery> SqliteStore::record_delivery_attempt(std::string_view delivery_id,
                                                           const DeliveryOutcome& outcome) {
  const std::string_view state = outcome.success       ? "succeeded"
                                 : outcome.retry_at_ms ? "pending"
                                                       : "failed";
  const std::optional<std::int64_t> retry_at_ms =
      outcome.success ? std::nullopt : outcome.retry_at_ms;
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<Delivery> {
    auto recorded =
        c.prepare(
             "UPDATE deliveries SET attempts = attempts + 1, cycle_attempts = cycle_attempts + 1, "
             "body = CASE WHEN body = '' THEN ? ELSE body END, state = ?, "
             "next_attempt_at_ms = COALESCE(?, next_attempt_at_ms), last_attempt_at_ms = ?, "
             "last_status = ?, last_error = ? "
             "WHERE id = ? AND state = 'pending' RETURNING " IG_DELIVERY_COLS)
            .bind(outcome.body, state, retry_at_ms, outcome.at_ms, outcome.status, outcome.error,
                  delivery_id)
            .one(read_delivery);
    if (!recorded) return std::unexpected(recorded.error());
    if (!*recorded) {
      auto current =
          c.prepare("SELECT state FROM deliveries WHERE id = ?").bind(delivery_id).one(read_text);
      if (!current) return std::unexpected(current.error());
      if (!*current) return err(StoreErrc::kNotFound, "no delivery " + std::string(delivery_id));
      return err(StoreErrc::kConflict,
                 "delivery " + std::string(delivery_id) + " is " + **current + ", not pending");
    }
    const Delivery& delivery = **recorded;
    auto appended =
        c.prepare("INSERT INTO delivery_attempts(" IG_ATTEMPT_COLS ") VALUES (?, ?, ?, ?, ?, ?)")
            .bind(delivery.id, delivery.attempts, outcome.at_ms, outcome.duration_ms,
                  outcome.status, outcome.error)
            .run();
    if (!appended) return std::unexpected(appended.error());
    return std::move(**recorded);
  });
}

StoreResult<std::vector<Delivery>> SqliteStore::list_deliveries(std::string_view job_id) {
  return read_tx(*pool_, [&](SqliteConnection& c) {
    return c
        .prepare("SELECT " IG_DELIVERY_COLS
                 " FROM deliveries WHERE job_id = ? ORDER BY created_at_ms, rowid")
        .bind(job_id)
        .all(read_delivery);
  });
}

StoreResult<std::vector<DeliveryAttempt>> SqliteStore::list_delivery_attempts(
    std::string_view delivery_id) {
  return read_tx(
      *pool_,
      [&](SqliteConnection& c) -> StoreResult<std::vector<DeliveryAttempt>> {
        auto exists =
            c.prepare("SELECT 1 FROM deliveries WHERE id = ?").bind(delivery_id).one(read_i64);
        if (!exists) return std::unexpected(exists.error());
        if (!*exists) return err(StoreErrc::kNotFound, "no delivery " + std::string(delivery_id));
        return c
            .prepare("SELECT " IG_ATTEMPT_COLS
                     " FROM delivery_attempts WHERE delivery_id = ? ORDER BY number")
            .bind(delivery_id)
            .all(read_attempt);
      },
      /*snapshot=*/true);
}

StoreResult<Delivery> SqliteStore::replay_delivery(std::string_view delivery_id,
                                                   std::int64_t now_ms) {
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<Delivery> {
    auto replayed = c.prepare(
                         "UPDATE deliveries SET state = 'pending', cycle_attempts = 0, "
                         "next_attempt_at_ms = ? WHERE id = ? RETURNING " IG_DELIVERY_COLS)
                        .bind(now_ms, delivery_id)
                        .one(read_delivery);
    if (!replayed) return std::unexpected(replayed.error());
    if (!*replayed) return err(StoreErrc::kNotFound, "no delivery " + std::string(delivery_id));
    return std::move(**replayed);
  });
}

#undef IG_USER_COLS
#undef IG_KEY_COLS
#undef IG_HOLD_COLS
#undef IG_LEDGER_COLS
#undef IG_JOB_COLS
#undef IG_DELIVERY_COLS
#undef IG_ATTEMPT_COLS

// --- blobs (for SqliteBlobStore) ---

StoreResult<void> SqliteStore::blob_insert(const BlobRow& row, std::string_view data) {
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<void> {
    return c
        .prepare(
            "INSERT INTO blobs(id, content_type, size, etag, created_at, data) "
            "VALUES (?, ?, ?, ?, ?, ?)")
        .bind(row.id, row.content_type, row.size, row.etag, row.created_at, BlobParam{data})
        .run();
  });
}

StoreResult<SqliteStore::BlobRow> SqliteStore::blob_find(std::string_view id) {
  return read_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<BlobRow> {
    auto row = c.prepare("SELECT id, content_type, size, etag, created_at FROM blobs WHERE id = ?")
                   .bind(id)
                   .one([](Stmt& r) {
                     return BlobRow{r.text(0), r.text(1), r.i64(2), r.text(3), r.i64(4)};
                   });
    if (!row) return std::unexpected(row.error());
    if (!*row) return err(StoreErrc::kNotFound, "no blob " + std::string(id));
    return std::move(**row);
  });
}

StoreResult<SqliteStore::BlobSlice> SqliteStore::blob_read(std::string_view id, std::int64_t offset,
                                                           std::int64_t length) {
  return read_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<BlobSlice> {
    auto slice = c.prepare("SELECT size, substr(data, ? + 1, ?) FROM blobs WHERE id = ?")
                     .bind(offset, length, id)
                     .one([](Stmt& r) {
                       return BlobSlice{r.i64(0), r.bytes(1)};
                     });
    if (!slice) return std::unexpected(slice.error());
    if (!*slice) return err(StoreErrc::kNotFound, "no blob " + std::string(id));
    return std::move(**slice);
  });
}

StoreResult<bool> SqliteStore::blob_delete(std::string_view id) {
  return write_tx(*pool_, [&](SqliteConnection& c) -> StoreResult<bool> {
    auto deleted = c.prepare("DELETE FROM blobs WHERE id = ?").bind(id).run();
    if (!deleted) return std::unexpected(deleted.error());
    return c.changes() == 1;
  });
}

}  // namespace ig::store
