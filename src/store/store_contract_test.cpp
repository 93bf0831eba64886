// The Store contract: one suite, written only against Store&, run over every backend. A new
// backend (e.g. PostgreSQL) joins by adding one line to backend_cases().

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/temp_dir_for_tests.h"
#include "jobs/job.h"
#include "store/memory/memory_store.h"
#include "store/sqlite/raw_db_for_tests.h"
#include "store/sqlite/sqlite_store.h"
#include "store/store.h"

namespace ig::store {
namespace {

namespace fs = std::filesystem;
using jobs::JobStatus;

// --- helpers ---

std::string errc_name(StoreErrc code) {
  switch (code) {
    case StoreErrc::kNotFound:
      return "kNotFound";
    case StoreErrc::kConflict:
      return "kConflict";
    case StoreErrc::kInsufficientCredits:
      return "kInsufficientCredits";
    case StoreErrc::kAlreadyResolved:
      return "kAlreadyResolved";
    case StoreErrc::kInvalidArgument:
      return "kInvalidArgument";
    case StoreErrc::kUnavailable:
      return "kUnavailable";
  }
  return "?";
}

// "ok" or the error code's name, so EXPECT_EQ prints something readable.
template <class T>
std::string code(const StoreResult<T>& result) {
  return result ? "ok" : errc_name(result.error().code);
}

template <class T>
testing::AssertionResult ok(const StoreResult<T>& result) {
  if (result) return testing::AssertionSuccess();
  return testing::AssertionFailure()
         << errc_name(result.error().code) << ": " << result.error().message;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& line : lines) out += line + "\n";
  return out;
}

// --- backends ---

// One backend instance under test, owning whatever it needs (files, servers).
class Backend {
 public:
  virtual ~Backend() = default;
  virtual Store& store() = 0;
};

class MemoryBackend final : public Backend {
 public:
  explicit MemoryBackend(const Clock& clock) : store_(clock) {}
  Store& store() override { return store_; }

 private:
  MemoryStore store_;
};

class SqliteBackend final : public Backend {
 public:
  explicit SqliteBackend(const Clock& clock) {
    auto opened =
        SqliteStore::open({.path = (dir_.path() / "db" / "imagegate.db").string()}, clock);
    if (opened) {
      store_ = std::move(*opened);
    } else {
      ADD_FAILURE() << "SqliteStore::open: " << opened.error().message;
    }
  }
  Store& store() override { return *store_; }
  bool ready() const { return store_ != nullptr; }

 private:
  TempDir dir_{"store"};  // declared first: outlives the store
  std::unique_ptr<SqliteStore> store_;
};

// Returns nullptr when the backend cannot run here (the test is then skipped).
using BackendFactory = std::function<std::unique_ptr<Backend>(const Clock&)>;

struct BackendCase {
  std::string name;
  BackendFactory make;
};

void PrintTo(const BackendCase& backend, std::ostream* out) { *out << backend.name; }

std::vector<BackendCase> backend_cases() {
  return {
      {"memory", [](const Clock& clock) { return std::make_unique<MemoryBackend>(clock); }},
      {"sqlite",
       [](const Clock& clock) -> std::unique_ptr<Backend> {
         auto backend = std::make_unique<SqliteBackend>(clock);
         if (!backend->ready()) return nullptr;
         return backend;
       }},
  };
}

// --- the no-overdraft race, shared by the contract suite and the two-process test ---

struct RaceOutcome {
  int succeeded = 0;
  int insufficient = 0;
  std::vector<std::string> other_errors;
  std::vector<Hold> holds;
};

// `calls` reserve(amount) calls from `threads` threads, thread t going through stores[t % n].
RaceOutcome race_reserves(const std::vector<Store*>& stores, std::int64_t user_id, Micros amount,
                          int calls, int threads) {
  RaceOutcome outcome;
  std::mutex mu;
  std::atomic<int> next{0};
  std::latch start(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      Store& store = *stores[static_cast<std::size_t>(t) % stores.size()];
      start.arrive_and_wait();
      for (int i = next.fetch_add(1); i < calls; i = next.fetch_add(1)) {
        auto hold = store.reserve(user_id, amount, "race-" + std::to_string(i));
        std::lock_guard lock(mu);
        if (hold) {
          ++outcome.succeeded;
          outcome.holds.push_back(*hold);
        } else if (hold.error().code == StoreErrc::kInsufficientCredits) {
          ++outcome.insufficient;
        } else {
          outcome.other_errors.push_back(hold.error().message);
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  return outcome;
}

struct OverdraftScenario {
  Micros funded = credits(100);
  Micros each = credits(1);
  int calls = 300;
  int threads = 16;
};

void expect_clean_ledger(Store& store) {
  auto report = store.check_ledger();
  ASSERT_TRUE(ok(report));
  EXPECT_TRUE(report->violations.empty()) << joined(report->violations);
}

// Funds a fresh user, races reserves through `stores`, then races to settle half the holds and
// refund the other half, checking the books after each phase. Extend by varying the scenario.
void run_no_overdraft(Store& admin, const std::vector<Store*>& stores, const OverdraftScenario& s) {
  auto user = admin.create_user({.email = "race@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(admin.grant(user->id, s.funded, "seed")));
  const int fit = static_cast<int>(s.funded / s.each);

  RaceOutcome race = race_reserves(stores, user->id, s.each, s.calls, s.threads);
  EXPECT_TRUE(race.other_errors.empty()) << joined(race.other_errors);
  EXPECT_EQ(race.succeeded, std::min(fit, s.calls));
  EXPECT_EQ(race.insufficient, s.calls - std::min(fit, s.calls));
  auto after_race = admin.find_user(user->id);
  ASSERT_TRUE(ok(after_race));
  EXPECT_EQ(after_race->balance, s.funded - race.succeeded * s.each);
  EXPECT_EQ(after_race->reserved, race.succeeded * s.each);
  expect_clean_ledger(admin);

  // Even-numbered holds are settled (alternately in full and for a quarter), odd ones refunded.
  // Every hold is resolved twice at once with the same operation: exactly one attempt may win.
  std::sort(race.holds.begin(), race.holds.end(),
            [](const Hold& a, const Hold& b) { return a.id < b.id; });
  auto charge_for = [](std::size_t i, const Hold& hold) {
    return i % 4 == 0 ? hold.amount : hold.amount / 4;
  };
  Micros charged = 0;
  for (std::size_t i = 0; i < race.holds.size(); i += 2) charged += charge_for(i, race.holds[i]);

  std::mutex mu;
  std::vector<std::string> errors;
  std::atomic<std::size_t> next{0};
  std::atomic<int> won{0}, already{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < s.threads; ++t) {
    workers.emplace_back([&, t] {
      Store& store = *stores[static_cast<std::size_t>(t) % stores.size()];
      for (std::size_t task = next++; task < 2 * race.holds.size(); task = next++) {
        std::size_t i = task / 2;
        const Hold& hold = race.holds[i];
        auto result = i % 2 == 0 ? store.settle(hold.id, charge_for(i, hold))
                                 : store.refund(hold.id, "race refund");
        if (result) {
          ++won;
        } else if (result.error().code == StoreErrc::kAlreadyResolved) {
          ++already;
        } else {
          std::lock_guard lock(mu);
          errors.push_back(result.error().message);
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  EXPECT_TRUE(errors.empty()) << joined(errors);
  EXPECT_EQ(won.load(), race.succeeded);
  EXPECT_EQ(already.load(), race.succeeded);

  auto final_user = admin.find_user(user->id);
  ASSERT_TRUE(ok(final_user));
  EXPECT_EQ(final_user->balance, s.funded - charged);
  EXPECT_EQ(final_user->reserved, 0);
  auto open = admin.list_open_holds();
  ASSERT_TRUE(ok(open));
  EXPECT_TRUE(open->empty());
  expect_clean_ledger(admin);
}

// The same race through jobs: `calls` create_job(reserve = each) calls, then every created job
// is finished twice at once (even ones succeeded, alternately in full and for a quarter; odd ones
// failed): exactly one attempt per job may win.
void run_no_overdraft_jobs(Store& admin, const std::vector<Store*>& stores,
                           const OverdraftScenario& s) {
  auto user = admin.create_user({.email = "jobrace@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(admin.grant(user->id, s.funded, "seed")));
  const int fit = std::min(static_cast<int>(s.funded / s.each), s.calls);

  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<jobs::Job> created;
  std::atomic<int> next{0}, insufficient{0};
  std::latch start(s.threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < s.threads; ++t) {
    workers.emplace_back([&, t] {
      Store& store = *stores[static_cast<std::size_t>(t) % stores.size()];
      start.arrive_and_wait();
      for (int i = next++; i < s.calls; i = next++) {
        auto job = store.create_job({.id = "job_race_" + std::to_string(i),
                                     .user_id = user->id,
                                     .kind = "image.generation",
                                     .model = "race-model",
                                     .dialect = "openai",
                                     .reserve = s.each});
        std::lock_guard lock(mu);
        if (job) {
          created.push_back(*job);
        } else if (job.error().code == StoreErrc::kInsufficientCredits) {
          ++insufficient;
        } else {
          errors.push_back(job.error().message);
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  workers.clear();
  EXPECT_TRUE(errors.empty()) << joined(errors);
  EXPECT_EQ(static_cast<int>(created.size()), fit);
  EXPECT_EQ(insufficient.load(), s.calls - fit);
  auto after_race = admin.find_user(user->id);
  ASSERT_TRUE(ok(after_race));
  EXPECT_EQ(after_race->balance, s.funded - fit * s.each);
  EXPECT_EQ(after_race->reserved, fit * s.each);
  auto listed = admin.list_jobs(user->id, std::nullopt, kMaxJobsPage, std::nullopt);
  ASSERT_TRUE(ok(listed));
  EXPECT_EQ(listed->size(), created.size());  // a refused job leaves no row behind
  auto unfinished = admin.list_unfinished_jobs();
  ASSERT_TRUE(ok(unfinished));
  EXPECT_EQ(unfinished->size(), created.size());
  expect_clean_ledger(admin);

  std::sort(created.begin(), created.end(),
            [](const jobs::Job& a, const jobs::Job& b) { return *a.hold_id < *b.hold_id; });
  auto finish_for = [](std::size_t i, const jobs::Job& job) {
    if (i % 2 == 1) {
      return jobs::JobFinish{.status = JobStatus::kFailed, .error_code = "upstream_error"};
    }
    return jobs::JobFinish{.status = JobStatus::kSucceeded,
                           .charge = i % 4 == 0 ? job.reserved : job.reserved / 4};
  };
  Micros charged = 0;
  for (std::size_t i = 0; i < created.size(); i += 2) {
    charged += finish_for(i, created[i]).charge;
  }

  std::atomic<std::size_t> next_task{0};
  std::atomic<int> won{0}, already{0};
  for (int t = 0; t < s.threads; ++t) {
    workers.emplace_back([&, t] {
      Store& store = *stores[static_cast<std::size_t>(t) % stores.size()];
      for (std::size_t task = next_task++; task < 2 * created.size(); task = next_task++) {
        std::size_t i = task / 2;
        auto result = store.finish_job(created[i].id, finish_for(i, created[i]));
        if (result) {
          ++won;
        } else if (result.error().code == StoreErrc::kAlreadyResolved) {
          ++already;
        } else {
          std::lock_guard lock(mu);
          errors.push_back(result.error().message);
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  EXPECT_TRUE(errors.empty()) << joined(errors);
  EXPECT_EQ(won.load(), fit);
  EXPECT_EQ(already.load(), fit);

  auto final_user = admin.find_user(user->id);
  ASSERT_TRUE(ok(final_user));
  EXPECT_EQ(final_user->balance, s.funded - charged);
  EXPECT_EQ(final_user->reserved, 0);
  auto open = admin.list_open_holds();
  ASSERT_TRUE(ok(open));
  EXPECT_TRUE(open->empty());
  unfinished = admin.list_unfinished_jobs();
  ASSERT_TRUE(ok(unfinished));
  EXPECT_TRUE(unfinished->empty());
  auto succeeded = admin.list_jobs(user->id, JobStatus::kSucceeded, kMaxJobsPage, std::nullopt);
  auto failed = admin.list_jobs(user->id, JobStatus::kFailed, kMaxJobsPage, std::nullopt);
  ASSERT_TRUE(ok(succeeded) && ok(failed));
  EXPECT_EQ(succeeded->size(), (created.size() + 1) / 2);
  EXPECT_EQ(failed->size(), created.size() / 2);
  expect_clean_ledger(admin);
}

// --- the contract suite ---

class StoreContractTest : public testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override {
    backend_ = GetParam().make(clock_);
    if (backend_ == nullptr) GTEST_SKIP() << GetParam().name << " backend unavailable here";
  }

  Store& store() { return backend_->store(); }

  User make_user(const std::string& email, bool is_admin = false) {
    auto user =
        store().create_user({.email = email, .password_hash = "hash", .is_admin = is_admin});
    EXPECT_TRUE(ok(user));
    return user.value_or(User{});
  }

  User funded_user(const std::string& email, Micros amount) {
    User user = make_user(email);
    EXPECT_TRUE(ok(store().grant(user.id, amount, "seed")));
    return *store().find_user(user.id);
  }

  ApiKey make_key(std::int64_t user_id, const std::string& prefix, const std::string& hash) {
    auto key = store().create_api_key({.user_id = user_id,
                                       .name = "key " + hash,
                                       .prefix = prefix,
                                       .last4 = "abcd",
                                       .hash = hash});
    EXPECT_TRUE(ok(key));
    return key.value_or(ApiKey{});
  }

  jobs::NewJob new_job(const std::string& id, std::int64_t user_id, Micros reserve) {
    return {.id = id,
            .user_id = user_id,
            .key_id = 7,
            .kind = "image.generation",
            .model = "flux-schnell",
            .dialect = "openai",
            .params_json = R"({"n":1})",
            .callback_url = "https://example.com/hook",
            .reserve = reserve};
  }

  jobs::Job make_job(const std::string& id, std::int64_t user_id, Micros reserve) {
    auto job = store().create_job(new_job(id, user_id, reserve));
    EXPECT_TRUE(ok(job));
    return job.value_or(jobs::Job{});
  }

  // The user's ledger rows for one hold, oldest first.
  std::vector<LedgerEntry> hold_rows(std::int64_t user_id, std::int64_t hold_id) {
    auto rows = store().list_ledger(user_id, 1000);
    EXPECT_TRUE(ok(rows));
    std::vector<LedgerEntry> out;
    if (!rows) return out;
    for (auto it = rows->rbegin(); it != rows->rend(); ++it) {
      if (it->hold_id == hold_id) out.push_back(*it);
    }
    return out;
  }

  std::vector<std::string> job_ids(const StoreResult<std::vector<jobs::Job>>& listed) {
    EXPECT_TRUE(ok(listed));
    std::vector<std::string> ids;
    if (listed) {
      for (const auto& job : *listed) ids.push_back(job.id);
    }
    return ids;
  }

  // A free job, with new_job's callback_url, finished now: its delivery is due now.
  void finish_hooked_job(const std::string& id, std::int64_t user_id) {
    make_job(id, user_id, 0);
    EXPECT_TRUE(ok(store().finish_job(id, {.status = JobStatus::kSucceeded})));
  }

  std::size_t ledger_size(std::int64_t user_id) {
    auto rows = store().list_ledger(user_id, 1000);
    EXPECT_TRUE(ok(rows));
    return rows ? rows->size() : 0;
  }

  FakeClock clock_;
  std::unique_ptr<Backend> backend_;
};

TEST_P(StoreContractTest, Ping) { EXPECT_TRUE(ok(store().ping())); }

TEST_P(StoreContractTest, CreateUserLowercasesEmailAndFindsItInAnyCase) {
  auto created = store().create_user(
      {.email = "Alice@Example.COM", .password_hash = "argon", .is_admin = true});
  ASSERT_TRUE(ok(created));
  EXPECT_GT(created->id, 0);
  EXPECT_EQ(created->email, "alice@example.com");
  EXPECT_EQ(created->password_hash, "argon");
  EXPECT_TRUE(created->is_admin);
  EXPECT_FALSE(created->disabled);
  EXPECT_EQ(created->created_at, clock_.now_s());
  EXPECT_EQ(created->balance, 0);
  EXPECT_EQ(created->reserved, 0);

  auto by_id = store().find_user(created->id);
  ASSERT_TRUE(ok(by_id));
  EXPECT_EQ(by_id->email, "alice@example.com");
  EXPECT_EQ(by_id->created_at, created->created_at);

  for (const char* spelling : {"alice@example.com", "ALICE@EXAMPLE.COM", "aLiCe@example.Com"}) {
    auto found = store().find_user_by_email(spelling);
    ASSERT_TRUE(ok(found)) << spelling;
    EXPECT_EQ(found->id, created->id);
  }
  EXPECT_EQ(code(store().find_user_by_email("bob@example.com")), "kNotFound");
  EXPECT_EQ(code(store().find_user(created->id + 1000)), "kNotFound");
  EXPECT_EQ(code(store().create_user({.email = "", .password_hash = "x"})), "kInvalidArgument");
}

TEST_P(StoreContractTest, DuplicateEmailInAnyCaseConflicts) {
  make_user("carol@example.com");
  EXPECT_EQ(code(store().create_user({.email = "carol@example.com", .password_hash = "x"})),
            "kConflict");
  EXPECT_EQ(code(store().create_user({.email = "CAROL@Example.com", .password_hash = "x"})),
            "kConflict");
  EXPECT_EQ(*store().count_users(), 1);
}

TEST_P(StoreContractTest, ListsAndCountsUsersById) {
  EXPECT_EQ(*store().count_users(), 0);
  User a = make_user("a@example.com");
  User b = make_user("b@example.com");
  User c = make_user("c@example.com");
  auto users = store().list_users();
  ASSERT_TRUE(ok(users));
  ASSERT_EQ(users->size(), 3u);
  EXPECT_EQ((*users)[0].id, a.id);
  EXPECT_EQ((*users)[1].id, b.id);
  EXPECT_EQ((*users)[2].id, c.id);
  EXPECT_LT(a.id, b.id);
  EXPECT_LT(b.id, c.id);
  EXPECT_EQ(*store().count_users(), 3);
}

TEST_P(StoreContractTest, DisablingAUserBumpsAuthVersion) {
  User user = make_user("dave@example.com");
  auto before = store().auth_version();
  ASSERT_TRUE(ok(before));
  ASSERT_TRUE(ok(store().set_user_disabled(user.id, true)));
  auto after = store().auth_version();
  ASSERT_TRUE(ok(after));
  EXPECT_GT(*after, *before);
  EXPECT_TRUE(store().find_user(user.id)->disabled);

  ASSERT_TRUE(ok(store().set_user_disabled(user.id, false)));
  EXPECT_FALSE(store().find_user(user.id)->disabled);
  EXPECT_GT(*store().auth_version(), *after);
  EXPECT_EQ(code(store().set_user_disabled(user.id + 1000, true)), "kNotFound");
}

TEST_P(StoreContractTest, CreatesListsAndFindsKeysByExactPrefix) {
  User alice = make_user("alice@example.com");
  User bob = make_user("bob@example.com");
  ApiKey k1 = make_key(alice.id, "sk-AAAAAAAA", "hash-1");
  ApiKey k2 = make_key(alice.id, "sk-BBBBBBBB", "hash-2");
  ApiKey k3 = make_key(bob.id, "sk-AAAAAAAA", "hash-3");
  EXPECT_EQ(k1.user_id, alice.id);
  EXPECT_EQ(k1.name, "key hash-1");
  EXPECT_EQ(k1.prefix, "sk-AAAAAAAA");
  EXPECT_EQ(k1.last4, "abcd");
  EXPECT_EQ(k1.hash, "hash-1");
  EXPECT_EQ(k1.created_at, clock_.now_s());
  EXPECT_FALSE(k1.last_used_at.has_value());
  EXPECT_FALSE(k1.disabled);
  EXPECT_FALSE(k1.deleted);

  auto listed = store().list_api_keys(alice.id);
  ASSERT_TRUE(ok(listed));
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, k1.id);
  EXPECT_EQ((*listed)[1].id, k2.id);

  auto by_prefix = store().find_api_keys_by_prefix("sk-AAAAAAAA");
  ASSERT_TRUE(ok(by_prefix));
  ASSERT_EQ(by_prefix->size(), 2u);
  EXPECT_EQ((*by_prefix)[0].id, k1.id);
  EXPECT_EQ((*by_prefix)[1].id, k3.id);
  EXPECT_TRUE(store().find_api_keys_by_prefix("sk-AAAA")->empty());
  EXPECT_TRUE(store().find_api_keys_by_prefix("sk-aaaaaaaa")->empty());

  EXPECT_EQ(
      code(store().create_api_key(
          {.user_id = bob.id, .name = "dup", .prefix = "sk-X", .last4 = "x", .hash = "hash-1"})),
      "kConflict");
  EXPECT_EQ(code(store().create_api_key({.user_id = bob.id + 1000,
                                         .name = "n",
                                         .prefix = "sk-Y",
                                         .last4 = "y",
                                         .hash = "hash-9"})),
            "kNotFound");
}

TEST_P(StoreContractTest, RevokedKeysDisappearFromListsAndBumpAuthVersion) {
  User user = make_user("erin@example.com");
  ApiKey kept = make_key(user.id, "sk-KEEPKEEP", "hash-keep");
  ApiKey gone = make_key(user.id, "sk-GONEGONE", "hash-gone");
  std::int64_t before = *store().auth_version();

  ASSERT_TRUE(ok(store().revoke_api_key(gone.id)));
  EXPECT_GT(*store().auth_version(), before);
  auto listed = store().list_api_keys(user.id);
  ASSERT_TRUE(ok(listed));
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, kept.id);
  EXPECT_TRUE(store().find_api_keys_by_prefix("sk-GONEGONE")->empty());

  auto auth = store().find_auth_by_key_hash("hash-gone");
  ASSERT_TRUE(ok(auth));
  EXPECT_TRUE(auth->key.deleted);
  EXPECT_EQ(auth->key.id, gone.id);
  EXPECT_EQ(code(store().revoke_api_key(gone.id + 1000)), "kNotFound");
}

TEST_P(StoreContractTest, FindAuthByKeyHashJoinsTheUser) {
  User admin = make_user("Root@Example.com", /*is_admin=*/true);
  ApiKey key = make_key(admin.id, "sk-ROOTROOT", "hash-root");

  auto auth = store().find_auth_by_key_hash("hash-root");
  ASSERT_TRUE(ok(auth));
  EXPECT_EQ(auth->key.id, key.id);
  EXPECT_EQ(auth->key.user_id, admin.id);
  EXPECT_EQ(auth->key.prefix, "sk-ROOTROOT");
  EXPECT_FALSE(auth->key.deleted);
  EXPECT_EQ(auth->email, "root@example.com");
  EXPECT_TRUE(auth->user_is_admin);
  EXPECT_FALSE(auth->user_disabled);

  ASSERT_TRUE(ok(store().set_user_disabled(admin.id, true)));
  auth = store().find_auth_by_key_hash("hash-root");
  ASSERT_TRUE(ok(auth));
  EXPECT_TRUE(auth->user_disabled);
  EXPECT_EQ(code(store().find_auth_by_key_hash("no-such-hash")), "kNotFound");
}

TEST_P(StoreContractTest, TouchNeverMovesLastUsedBackwards) {
  User user = make_user("frank@example.com");
  ApiKey a = make_key(user.id, "sk-AAAAAAAA", "hash-a");
  ApiKey b = make_key(user.id, "sk-BBBBBBBB", "hash-b");
  auto last_used = [&](const ApiKey& key) {
    return store().find_auth_by_key_hash(key.hash)->key.last_used_at;
  };

  ASSERT_TRUE(ok(store().touch_api_keys({})));
  ASSERT_TRUE(ok(store().touch_api_keys({{a.id, 1000}, {b.id, 500}, {b.id + 1000, 9}})));
  EXPECT_EQ(last_used(a), 1000);
  EXPECT_EQ(last_used(b), 500);
  ASSERT_TRUE(ok(store().touch_api_keys({{a.id, 900}, {b.id, 700}})));
  EXPECT_EQ(last_used(a), 1000);
  EXPECT_EQ(last_used(b), 700);
  ASSERT_TRUE(ok(store().touch_api_keys({{a.id, 2000}, {a.id, 1500}})));
  EXPECT_EQ(last_used(a), 2000);
}

TEST_P(StoreContractTest, GrantAddsAndNegativeAdjustClampsAtZero) {
  User user = make_user("gina@example.com");
  auto granted = store().grant(user.id, credits(10), "welcome");
  ASSERT_TRUE(ok(granted));
  EXPECT_EQ(granted->kind, LedgerKind::kGrant);
  EXPECT_EQ(granted->amount, credits(10));
  EXPECT_EQ(granted->balance_after, credits(10));
  EXPECT_EQ(granted->user_id, user.id);
  EXPECT_EQ(granted->note, "welcome");
  EXPECT_FALSE(granted->hold_id.has_value());
  EXPECT_EQ(granted->created_at, clock_.now_s());

  auto down = store().grant(user.id, -credits(3), "correction");
  ASSERT_TRUE(ok(down));
  EXPECT_EQ(down->kind, LedgerKind::kAdjust);
  EXPECT_EQ(down->amount, -credits(3));
  EXPECT_EQ(down->balance_after, credits(7));

  auto clamped = store().grant(user.id, -credits(100), "wipe");
  ASSERT_TRUE(ok(clamped));
  EXPECT_EQ(clamped->kind, LedgerKind::kAdjust);
  EXPECT_EQ(clamped->amount, -credits(7));
  EXPECT_EQ(clamped->balance_after, 0);

  auto at_zero = store().grant(user.id, -1, "again");
  ASSERT_TRUE(ok(at_zero));
  EXPECT_EQ(at_zero->kind, LedgerKind::kAdjust);
  EXPECT_EQ(at_zero->amount, 0);
  EXPECT_EQ(at_zero->balance_after, 0);
  EXPECT_EQ(store().find_user(user.id)->balance, 0);
  EXPECT_EQ(ledger_size(user.id), 4u);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, GrantRejectsZeroOverflowAndUnknownUsers) {
  User user = make_user("hank@example.com");
  EXPECT_EQ(code(store().grant(user.id, 0, "nothing")), "kInvalidArgument");
  EXPECT_EQ(code(store().grant(user.id + 1000, credits(1), "ghost")), "kNotFound");
  ASSERT_TRUE(ok(store().grant(user.id, kMaxMicros, "max")));
  EXPECT_EQ(code(store().grant(user.id, 1, "one too many")), "kInvalidArgument");
  EXPECT_EQ(code(store().grant(user.id, kMaxMicros + 1, "huge")), "kInvalidArgument");
  EXPECT_EQ(store().find_user(user.id)->balance, kMaxMicros);
  EXPECT_EQ(ledger_size(user.id), 1u);
}

TEST_P(StoreContractTest, GrantCountsOpenHoldsAgainstTheMaximum) {
  // A refund returns a hold to the balance: a grant that fits only while the hold is out
  // would let the refund push the balance past the maximum.
  User user = funded_user("holly@example.com", kMaxMicros);
  auto hold = store().reserve(user.id, credits(1), "job-max");
  ASSERT_TRUE(ok(hold));
  EXPECT_EQ(code(store().grant(user.id, 1, "fits only while held")), "kInvalidArgument");
  ASSERT_TRUE(ok(store().refund(hold->id, "back")));
  EXPECT_EQ(store().find_user(user.id)->balance, kMaxMicros);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, ReserveBeyondBalanceFailsAndWritesNothing) {
  User user = funded_user("ivan@example.com", credits(5));
  std::size_t rows = ledger_size(user.id);
  EXPECT_EQ(code(store().reserve(user.id, credits(5) + 1, "job-big")), "kInsufficientCredits");
  EXPECT_EQ(code(store().reserve(user.id, 0, "job-zero")), "kInvalidArgument");
  EXPECT_EQ(code(store().reserve(user.id, -1, "job-neg")), "kInvalidArgument");
  EXPECT_EQ(code(store().reserve(user.id + 1000, 1, "job-ghost")), "kNotFound");
  EXPECT_EQ(ledger_size(user.id), rows);
  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, credits(5));
  EXPECT_EQ(after->reserved, 0);
  EXPECT_TRUE(store().list_open_holds()->empty());

  auto all_of_it = store().reserve(user.id, credits(5), "job-exact");
  ASSERT_TRUE(ok(all_of_it));
  EXPECT_EQ(store().find_user(user.id)->balance, 0);
}

TEST_P(StoreContractTest, ReserveMovesBalanceIntoAnOpenHold) {
  User user = funded_user("judy@example.com", credits(10));
  clock_.advance_ms(5000);
  auto hold = store().reserve(user.id, credits(4), "job-1");
  ASSERT_TRUE(ok(hold));
  EXPECT_GT(hold->id, 0);
  EXPECT_EQ(hold->user_id, user.id);
  EXPECT_EQ(hold->amount, credits(4));
  EXPECT_EQ(hold->charged, 0);
  EXPECT_EQ(hold->job_id, "job-1");
  EXPECT_EQ(hold->state, HoldState::kOpen);
  EXPECT_EQ(hold->created_at, clock_.now_s());
  EXPECT_FALSE(hold->resolved_at.has_value());

  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, credits(6));
  EXPECT_EQ(after->reserved, credits(4));
  auto rows = store().list_ledger(user.id, 1);
  ASSERT_TRUE(ok(rows));
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].kind, LedgerKind::kReserve);
  EXPECT_EQ((*rows)[0].amount, -credits(4));
  EXPECT_EQ((*rows)[0].balance_after, credits(6));
  EXPECT_EQ((*rows)[0].hold_id, hold->id);
  EXPECT_EQ((*rows)[0].job_id, "job-1");

  auto found = store().find_hold(hold->id);
  ASSERT_TRUE(ok(found));
  EXPECT_EQ(found->amount, credits(4));
  EXPECT_EQ(found->state, HoldState::kOpen);
  auto open = store().list_open_holds();
  ASSERT_TRUE(ok(open));
  ASSERT_EQ(open->size(), 1u);
  EXPECT_EQ((*open)[0].id, hold->id);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, SettleChargesPartlyAndReturnsTheRest) {
  User user = funded_user("kate@example.com", credits(10));
  auto hold = store().reserve(user.id, credits(4), "job-2");
  ASSERT_TRUE(ok(hold));
  clock_.advance_ms(60'000);

  auto settled = store().settle(hold->id, 1'500'000);
  ASSERT_TRUE(ok(settled));
  EXPECT_EQ(settled->state, HoldState::kSettled);
  EXPECT_EQ(settled->charged, 1'500'000);
  EXPECT_EQ(settled->amount, credits(4));
  EXPECT_EQ(settled->resolved_at, clock_.now_s());

  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, 8'500'000);
  EXPECT_EQ(after->reserved, 0);
  auto rows = store().list_ledger(user.id, 1);
  ASSERT_TRUE(ok(rows));
  ASSERT_EQ(rows->size(), 1u);
  const LedgerEntry& row = (*rows)[0];
  EXPECT_EQ(row.kind, LedgerKind::kSettle);
  EXPECT_EQ(row.amount, 2'500'000);
  EXPECT_EQ(row.balance_after, 8'500'000);
  EXPECT_EQ(row.hold_id, hold->id);
  EXPECT_EQ(row.job_id, "job-2");
  EXPECT_EQ(row.note, "charged 1.5");
  EXPECT_EQ(row.created_at, clock_.now_s());

  auto found = store().find_hold(hold->id);
  EXPECT_EQ(found->state, HoldState::kSettled);
  EXPECT_EQ(found->charged, 1'500'000);
  EXPECT_EQ(found->resolved_at, clock_.now_s());
  EXPECT_TRUE(store().list_open_holds()->empty());
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, SettleInFullWritesAZeroRow) {
  User user = funded_user("leo@example.com", credits(3));
  auto hold = store().reserve(user.id, credits(3), "job-3");
  ASSERT_TRUE(ok(hold));
  ASSERT_TRUE(ok(store().settle(hold->id, credits(3))));
  auto rows = store().list_ledger(user.id, 1);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].kind, LedgerKind::kSettle);
  EXPECT_EQ((*rows)[0].amount, 0);
  EXPECT_EQ((*rows)[0].balance_after, 0);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, SettleOutsideTheHeldAmountIsRejected) {
  User user = funded_user("mia@example.com", credits(10));
  auto hold = store().reserve(user.id, credits(2), "job-4");
  ASSERT_TRUE(ok(hold));
  std::size_t rows = ledger_size(user.id);
  EXPECT_EQ(code(store().settle(hold->id, credits(2) + 1)), "kInvalidArgument");
  EXPECT_EQ(code(store().settle(hold->id, -1)), "kInvalidArgument");
  EXPECT_EQ(code(store().settle(hold->id + 1000, 0)), "kNotFound");
  EXPECT_EQ(code(store().refund(hold->id + 1000, "ghost")), "kNotFound");
  EXPECT_EQ(code(store().find_hold(hold->id + 1000)), "kNotFound");
  EXPECT_EQ(store().find_hold(hold->id)->state, HoldState::kOpen);
  EXPECT_EQ(ledger_size(user.id), rows);
  EXPECT_EQ(store().find_user(user.id)->reserved, credits(2));
}

TEST_P(StoreContractTest, RefundReturnsTheWholeHold) {
  User user = funded_user("nina@example.com", credits(10));
  auto hold = store().reserve(user.id, credits(7), "job-5");
  ASSERT_TRUE(ok(hold));
  auto refunded = store().refund(hold->id, "provider failed");
  ASSERT_TRUE(ok(refunded));
  EXPECT_EQ(refunded->state, HoldState::kRefunded);
  EXPECT_EQ(refunded->charged, 0);
  EXPECT_EQ(refunded->resolved_at, clock_.now_s());

  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, credits(10));
  EXPECT_EQ(after->reserved, 0);
  auto rows = store().list_ledger(user.id, 1);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].kind, LedgerKind::kRefund);
  EXPECT_EQ((*rows)[0].amount, credits(7));
  EXPECT_EQ((*rows)[0].balance_after, credits(10));
  EXPECT_EQ((*rows)[0].hold_id, hold->id);
  EXPECT_EQ((*rows)[0].job_id, "job-5");
  EXPECT_EQ((*rows)[0].note, "provider failed");
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, AHoldResolvesAtMostOnce) {
  User user = funded_user("otto@example.com", credits(10));
  auto settled = store().reserve(user.id, credits(2), "job-6");
  auto refunded = store().reserve(user.id, credits(3), "job-7");
  ASSERT_TRUE(ok(settled));
  ASSERT_TRUE(ok(refunded));
  ASSERT_TRUE(ok(store().settle(settled->id, credits(1))));
  ASSERT_TRUE(ok(store().refund(refunded->id, "first")));

  User before = *store().find_user(user.id);
  std::size_t rows = ledger_size(user.id);
  clock_.advance_ms(10'000);
  EXPECT_EQ(code(store().settle(settled->id, credits(1))), "kAlreadyResolved");
  EXPECT_EQ(code(store().settle(settled->id, 0)), "kAlreadyResolved");
  EXPECT_EQ(code(store().refund(settled->id, "again")), "kAlreadyResolved");
  EXPECT_EQ(code(store().refund(refunded->id, "again")), "kAlreadyResolved");
  EXPECT_EQ(code(store().settle(refunded->id, 0)), "kAlreadyResolved");

  User after = *store().find_user(user.id);
  EXPECT_EQ(after.balance, before.balance);
  EXPECT_EQ(after.reserved, before.reserved);
  EXPECT_EQ(ledger_size(user.id), rows);
  auto hold = store().find_hold(settled->id);
  EXPECT_EQ(hold->state, HoldState::kSettled);
  EXPECT_EQ(hold->charged, credits(1));
  EXPECT_LT(*hold->resolved_at, clock_.now_s());
  EXPECT_EQ(store().find_hold(refunded->id)->state, HoldState::kRefunded);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, ListLedgerIsNewestFirstWithCorrectBalanceAfter) {
  User user = make_user("pia@example.com");
  std::vector<std::int64_t> stamps;
  auto stamp = [&] {
    stamps.push_back(clock_.now_s());
    clock_.advance_ms(1000);
  };
  ASSERT_TRUE(ok(store().grant(user.id, credits(10), "a")));
  stamp();
  auto hold = store().reserve(user.id, credits(4), "job-8");
  ASSERT_TRUE(ok(hold));
  stamp();
  ASSERT_TRUE(ok(store().settle(hold->id, credits(1))));
  stamp();
  ASSERT_TRUE(ok(store().grant(user.id, -credits(2), "b")));
  stamp();

  auto rows = store().list_ledger(user.id, 100);
  ASSERT_TRUE(ok(rows));
  ASSERT_EQ(rows->size(), 4u);
  const std::vector<LedgerKind> kinds = {LedgerKind::kAdjust, LedgerKind::kSettle,
                                         LedgerKind::kReserve, LedgerKind::kGrant};
  const std::vector<Micros> amounts = {-credits(2), credits(3), -credits(4), credits(10)};
  const std::vector<Micros> balances = {credits(7), credits(9), credits(6), credits(10)};
  for (std::size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ((*rows)[i].kind, kinds[i]);
    EXPECT_EQ((*rows)[i].amount, amounts[i]);
    EXPECT_EQ((*rows)[i].balance_after, balances[i]);
    EXPECT_EQ((*rows)[i].created_at, stamps[3 - i]);
    if (i > 0) {
      EXPECT_LT((*rows)[i].id, (*rows)[i - 1].id);
    }
  }
  auto newest = store().list_ledger(user.id, 2);
  ASSERT_TRUE(ok(newest));
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ((*newest)[0].id, (*rows)[0].id);
  EXPECT_EQ((*newest)[1].id, (*rows)[1].id);
  EXPECT_EQ(code(store().list_ledger(user.id, 0)), "kInvalidArgument");
  EXPECT_EQ(code(store().list_ledger(user.id + 1000, 10)), "kNotFound");
  EXPECT_EQ(to_string(LedgerKind::kSettle), "settle");
  EXPECT_EQ(to_string(HoldState::kRefunded), "refunded");
}

TEST_P(StoreContractTest, CheckLedgerIsCleanAfterAMixAndCountsEverything) {
  User a = funded_user("qa@example.com", credits(50));
  User b = funded_user("qb@example.com", credits(20));
  make_user("qc@example.com");  // no rows at all
  auto h1 = store().reserve(a.id, credits(5), "j1");
  auto h2 = store().reserve(a.id, credits(6), "j2");
  auto h3 = store().reserve(b.id, credits(7), "j3");
  auto h4 = store().reserve(b.id, credits(1), "j4");
  ASSERT_TRUE(ok(h1) && ok(h2) && ok(h3) && ok(h4));
  ASSERT_TRUE(ok(store().settle(h1->id, 2'345'678)));
  ASSERT_TRUE(ok(store().refund(h3->id, "r")));
  ASSERT_TRUE(ok(store().grant(a.id, -credits(1), "adj")));
  ASSERT_TRUE(ok(store().grant(b.id, credits(2), "top-up")));

  auto report = store().check_ledger();
  ASSERT_TRUE(ok(report));
  EXPECT_TRUE(report->violations.empty()) << joined(report->violations);
  EXPECT_EQ(report->users_checked, 3);
  EXPECT_EQ(report->holds_checked, 4);
  EXPECT_EQ(report->open_holds, 2);
  // 2 seeds + 4 reserves + settle + refund + adjust + grant.
  EXPECT_EQ(report->ledger_rows_checked, 10);

  auto ua = store().find_user(a.id);
  EXPECT_EQ(ua->balance,
            credits(50) - credits(5) - credits(6) + (credits(5) - 2'345'678) - credits(1));
  EXPECT_EQ(ua->reserved, credits(6));
  auto ub = store().find_user(b.id);
  EXPECT_EQ(ub->balance, credits(20) - credits(1) + credits(2));
  EXPECT_EQ(ub->reserved, credits(1));
}

TEST_P(StoreContractTest, NoOverdraftUnderConcurrentReserves) {
  run_no_overdraft(store(), {&store()}, OverdraftScenario{});
}

// --- the batched write lane ---

// Runs `work` through run_batched and waits for `done` (it may come from another thread).
StoreResult<void> run_batched_and_wait(Store& store, std::function<void()> work,
                                       Store::Durability when = Store::Durability::kDurable) {
  std::promise<StoreResult<void>> durable;
  auto finished = durable.get_future();
  store.run_batched(
      std::move(work), [&durable](StoreResult<void> r) { durable.set_value(r); }, when);
  return finished.get();
}

TEST_P(StoreContractTest, BatchedWorkWritesReadsItsOwnWritesAndIsDurableWhenDone) {
  User user = funded_user("lane@example.com", credits(10));
  StoreResult<jobs::Job> created = std::unexpected(StoreError{});
  StoreResult<User> seen = std::unexpected(StoreError{});
  auto durable = run_batched_and_wait(store(), [&] {
    created = store().create_job(new_job("job_lane", user.id, credits(4)));
    seen = store().find_user(user.id);  // inside the same batch: sees the reserve
  });
  ASSERT_TRUE(ok(durable));
  ASSERT_TRUE(ok(created));
  EXPECT_EQ(created->status, JobStatus::kQueued);
  ASSERT_TRUE(ok(seen));
  EXPECT_EQ(seen->balance, credits(6));
  EXPECT_EQ(seen->reserved, credits(4));
  auto found = store().find_job("job_lane");
  ASSERT_TRUE(ok(found));
  EXPECT_EQ(found->hold_id, created->hold_id);
}

TEST_P(StoreContractTest, CommittedBatchedWorkIsVisibleAndADurableWriteCoversIt) {
  User user = funded_user("lane-committed@example.com", credits(10));
  StoreResult<jobs::Job> created = std::unexpected(StoreError{});
  auto committed = run_batched_and_wait(
      store(), [&] { created = store().create_job(new_job("job_committed", user.id, credits(4))); },
      Store::Durability::kCommitted);
  ASSERT_TRUE(ok(committed));
  ASSERT_TRUE(ok(created));
  // Visible to every reader at once, from any thread.
  auto seen = std::async(std::launch::async, [&] { return store().find_job("job_committed"); });
  ASSERT_TRUE(ok(seen.get()));
  EXPECT_EQ(store().find_user(user.id)->balance, credits(6));
  // A later durable write (the job's finish) is made durable with everything committed before.
  StoreResult<jobs::Job> finished = std::unexpected(StoreError{});
  auto durable = run_batched_and_wait(store(), [&] {
    finished = store().finish_job("job_committed",
                                  {.status = JobStatus::kSucceeded, .charge = credits(4)});
  });
  ASSERT_TRUE(ok(durable));
  ASSERT_TRUE(ok(finished));
  EXPECT_EQ(store().find_user(user.id)->balance, credits(6));
  EXPECT_EQ(store().find_user(user.id)->reserved, 0);
  auto report = store().check_ledger();
  ASSERT_TRUE(ok(report));
  EXPECT_TRUE(report->violations.empty()) << joined(report->violations);
}

TEST_P(StoreContractTest, AFailedCallInBatchedWorkIsUndoneAloneAndTheRestKept) {
  User user = funded_user("lane2@example.com", credits(5));
  StoreResult<jobs::Job> first = std::unexpected(StoreError{});
  StoreResult<jobs::Job> second = std::unexpected(StoreError{});
  StoreResult<jobs::Job> duplicate = std::unexpected(StoreError{});
  auto durable = run_batched_and_wait(store(), [&] {
    first = store().create_job(new_job("job_l1", user.id, credits(3)));
    second = store().create_job(new_job("job_l2", user.id, credits(3)));  // only 2 left
    duplicate = store().create_job(new_job("job_l1", user.id, credits(1)));
  });
  ASSERT_TRUE(ok(durable));
  EXPECT_TRUE(ok(first));
  EXPECT_EQ(code(second), "kInsufficientCredits");
  EXPECT_EQ(code(duplicate), "kConflict");
  EXPECT_EQ(code(store().find_job("job_l2")), "kNotFound");
  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, credits(2));
  EXPECT_EQ(after->reserved, credits(3));
  auto report = store().check_ledger();
  ASSERT_TRUE(ok(report));
  EXPECT_TRUE(report->violations.empty()) << joined(report->violations);
}

TEST_P(StoreContractTest, BatchedAndBlockingWritesFromManyThreadsNeverOverdraw) {
  User user = funded_user("lane3@example.com", credits(100));
  constexpr int kThreads = 8;
  constexpr int kPerThread = 25;  // 200 one-credit jobs for 100 credits
  std::atomic<int> created{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = "job_t" + std::to_string(t) + "_" + std::to_string(i);
        if (t % 2 == 0) {
          if (store().create_job(new_job(id, user.id, credits(1)))) ++created;
        } else {
          StoreResult<jobs::Job> r = std::unexpected(StoreError{});
          auto durable = run_batched_and_wait(
              store(), [&] { r = store().create_job(new_job(id, user.id, credits(1))); });
          if (durable && r) ++created;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(created.load(), 100);
  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, 0);
  EXPECT_EQ(after->reserved, credits(100));
  auto report = store().check_ledger();
  ASSERT_TRUE(ok(report));
  EXPECT_TRUE(report->violations.empty()) << joined(report->violations);
}

// --- jobs ---

TEST_P(StoreContractTest, CreateJobReservesIntoAHoldOfItsOwn) {
  User user = funded_user("jobs@example.com", credits(10));
  clock_.advance_ms(1234);
  auto job = store().create_job(new_job("job_a", user.id, credits(3)));
  ASSERT_TRUE(ok(job));
  EXPECT_EQ(job->id, "job_a");
  EXPECT_EQ(job->user_id, user.id);
  EXPECT_EQ(job->key_id, 7);
  EXPECT_EQ(job->kind, "image.generation");
  EXPECT_EQ(job->model, "flux-schnell");
  EXPECT_EQ(job->dialect, "openai");
  EXPECT_EQ(job->params_json, R"({"n":1})");
  EXPECT_EQ(job->callback_url, "https://example.com/hook");
  EXPECT_EQ(job->status, JobStatus::kQueued);
  EXPECT_EQ(job->reserved, credits(3));
  EXPECT_EQ(job->charged, 0);
  EXPECT_EQ(job->attempts, 0);
  EXPECT_EQ(job->channel, "");
  EXPECT_EQ(job->upstream_task_id, "");
  EXPECT_EQ(job->result_json, "");
  EXPECT_EQ(job->error_code, "");
  EXPECT_EQ(job->created_at_ms, clock_.now_ms());
  EXPECT_EQ(job->updated_at_ms, clock_.now_ms());
  EXPECT_FALSE(job->started_at_ms.has_value());
  EXPECT_FALSE(job->finished_at_ms.has_value());
  ASSERT_TRUE(job->hold_id.has_value());

  auto hold = store().find_hold(*job->hold_id);
  ASSERT_TRUE(ok(hold));
  EXPECT_EQ(hold->user_id, user.id);
  EXPECT_EQ(hold->amount, credits(3));
  EXPECT_EQ(hold->job_id, "job_a");
  EXPECT_EQ(hold->state, HoldState::kOpen);
  EXPECT_EQ(hold->created_at, clock_.now_s());

  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, credits(7));
  EXPECT_EQ(after->reserved, credits(3));
  auto rows = hold_rows(user.id, *job->hold_id);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].kind, LedgerKind::kReserve);
  EXPECT_EQ(rows[0].amount, -credits(3));
  EXPECT_EQ(rows[0].balance_after, credits(7));
  EXPECT_EQ(rows[0].job_id, "job_a");

  auto found = store().find_job("job_a");
  ASSERT_TRUE(ok(found));
  EXPECT_EQ(found->hold_id, job->hold_id);
  EXPECT_EQ(found->params_json, job->params_json);
  EXPECT_EQ(found->created_at_ms, job->created_at_ms);
  EXPECT_EQ(found->status, JobStatus::kQueued);
  EXPECT_EQ(code(store().find_job("job_nope")), "kNotFound");

  auto report = store().check_ledger();
  ASSERT_TRUE(ok(report));
  EXPECT_TRUE(report->violations.empty()) << joined(report->violations);
  EXPECT_EQ(report->jobs_checked, 1);
  EXPECT_EQ(report->open_holds, 1);
}

TEST_P(StoreContractTest, AFreeJobHasNoHoldAndMovesNoMoney) {
  User user = make_user("free@example.com");
  auto job = store().create_job(new_job("job_free", user.id, 0));
  ASSERT_TRUE(ok(job));
  EXPECT_FALSE(job->hold_id.has_value());
  EXPECT_EQ(job->reserved, 0);
  EXPECT_EQ(ledger_size(user.id), 0u);
  EXPECT_TRUE(store().list_open_holds()->empty());

  EXPECT_EQ(code(store().create_job(new_job("job_neg", user.id, -1))), "kInvalidArgument");
  EXPECT_EQ(code(store().create_job(new_job("", user.id, 0))), "kInvalidArgument");
  EXPECT_EQ(code(store().create_job(new_job("job_ghost", user.id + 1000, 0))), "kNotFound");
  EXPECT_EQ(code(store().create_job(new_job("job_ghost", user.id + 1000, 1))), "kNotFound");
  EXPECT_EQ(code(store().find_job("job_neg")), "kNotFound");

  // Nothing reserved, so nothing can be charged; a free job still finishes.
  EXPECT_EQ(code(store().finish_job("job_free", {.status = JobStatus::kSucceeded, .charge = 1})),
            "kInvalidArgument");
  auto done = store().finish_job("job_free", {.status = JobStatus::kSucceeded});
  ASSERT_TRUE(ok(done));
  EXPECT_EQ(done->status, JobStatus::kSucceeded);
  EXPECT_EQ(done->charged, 0);
  EXPECT_FALSE(done->hold_id.has_value());
  EXPECT_EQ(code(store().finish_job("job_free", {.status = JobStatus::kFailed})),
            "kAlreadyResolved");
  EXPECT_EQ(ledger_size(user.id), 0u);
  EXPECT_EQ(store().find_user(user.id)->balance, 0);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, CreateJobWithoutEnoughCreditsWritesNothing) {
  User user = funded_user("poor@example.com", credits(2));
  std::size_t rows = ledger_size(user.id);
  EXPECT_EQ(code(store().create_job(new_job("job_big", user.id, credits(2) + 1))),
            "kInsufficientCredits");
  EXPECT_EQ(code(store().find_job("job_big")), "kNotFound");
  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, credits(2));
  EXPECT_EQ(after->reserved, 0);
  EXPECT_EQ(ledger_size(user.id), rows);
  EXPECT_TRUE(store().list_open_holds()->empty());
  EXPECT_TRUE(job_ids(store().list_jobs(user.id, std::nullopt, 10, std::nullopt)).empty());
  EXPECT_TRUE(store().list_unfinished_jobs()->empty());

  // The refused id was not burned; the whole balance can be reserved.
  auto job = store().create_job(new_job("job_big", user.id, credits(2)));
  ASSERT_TRUE(ok(job));
  EXPECT_EQ(store().find_user(user.id)->balance, 0);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, DuplicateJobIdConflictsAndWritesNothing) {
  User user = funded_user("dup@example.com", credits(10));
  User other = funded_user("dup2@example.com", credits(10));
  jobs::Job first = make_job("job_dup", user.id, credits(2));
  std::size_t rows = ledger_size(user.id);

  EXPECT_EQ(code(store().create_job(new_job("job_dup", user.id, credits(1)))), "kConflict");
  EXPECT_EQ(code(store().create_job(new_job("job_dup", user.id, 0))), "kConflict");
  // A duplicate is a conflict whatever the balance says.
  EXPECT_EQ(code(store().create_job(new_job("job_dup", user.id, credits(100)))), "kConflict");
  EXPECT_EQ(code(store().create_job(new_job("job_dup", other.id, credits(1)))), "kConflict");

  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, credits(8));
  EXPECT_EQ(after->reserved, credits(2));
  EXPECT_EQ(ledger_size(user.id), rows);
  EXPECT_EQ(store().find_user(other.id)->balance, credits(10));
  EXPECT_EQ(store().list_open_holds()->size(), 1u);
  auto kept = store().find_job("job_dup");
  ASSERT_TRUE(ok(kept));
  EXPECT_EQ(kept->user_id, user.id);
  EXPECT_EQ(kept->hold_id, first.hold_id);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, TransitionJobIsACompareAndSet) {
  User user = funded_user("cas@example.com", credits(10));
  jobs::Job job = make_job("job_cas", user.id, credits(1));
  clock_.advance_ms(1000);
  const std::int64_t started = clock_.now_ms();

  auto running = store().transition_job(
      "job_cas", JobStatus::kQueued, JobStatus::kRunning,
      {.channel = "alpha", .mark_started = true, .increment_attempts = true});
  ASSERT_TRUE(ok(running));
  EXPECT_EQ(running->status, JobStatus::kRunning);
  EXPECT_EQ(running->channel, "alpha");
  EXPECT_EQ(running->upstream_task_id, "");
  EXPECT_EQ(running->attempts, 1);
  EXPECT_EQ(running->started_at_ms, started);
  EXPECT_EQ(running->updated_at_ms, started);
  EXPECT_EQ(running->created_at_ms, job.created_at_ms);
  EXPECT_FALSE(running->finished_at_ms.has_value());

  // A second worker loses the race and changes nothing.
  clock_.advance_ms(1000);
  EXPECT_EQ(code(store().transition_job("job_cas", JobStatus::kQueued, JobStatus::kRunning,
                                        {.channel = "beta", .increment_attempts = true})),
            "kConflict");
  auto unchanged = store().find_job("job_cas");
  ASSERT_TRUE(ok(unchanged));
  EXPECT_EQ(unchanged->channel, "alpha");
  EXPECT_EQ(unchanged->attempts, 1);
  EXPECT_EQ(unchanged->updated_at_ms, started);

  // Staying in a state updates fields; unset ones are kept and started_at_ms is set only once.
  auto retried = store().transition_job(
      "job_cas", JobStatus::kRunning, JobStatus::kRunning,
      {.upstream_task_id = "task-9", .mark_started = true, .increment_attempts = true});
  ASSERT_TRUE(ok(retried));
  EXPECT_EQ(retried->channel, "alpha");
  EXPECT_EQ(retried->upstream_task_id, "task-9");
  EXPECT_EQ(retried->attempts, 2);
  EXPECT_EQ(retried->started_at_ms, started);
  EXPECT_EQ(retried->updated_at_ms, clock_.now_ms());

  // Back to the queue (e.g. the channel went away) and out again.
  ASSERT_TRUE(ok(store().transition_job("job_cas", JobStatus::kRunning, JobStatus::kQueued, {})));
  ASSERT_TRUE(ok(store().transition_job("job_cas", JobStatus::kQueued, JobStatus::kRunning, {})));

  EXPECT_EQ(code(store().transition_job("job_nope", JobStatus::kQueued, JobStatus::kRunning, {})),
            "kNotFound");
  EXPECT_EQ(code(store().transition_job("job_cas", JobStatus::kRunning, JobStatus::kSucceeded, {})),
            "kInvalidArgument");
  EXPECT_EQ(code(store().transition_job("job_cas", JobStatus::kFailed, JobStatus::kQueued, {})),
            "kInvalidArgument");
  EXPECT_EQ(store().find_job("job_cas")->status, JobStatus::kRunning);
  EXPECT_EQ(store().find_hold(*job.hold_id)->state, HoldState::kOpen);

  ASSERT_TRUE(ok(store().finish_job("job_cas", {.status = JobStatus::kCanceled})));
  EXPECT_EQ(code(store().transition_job("job_cas", JobStatus::kRunning, JobStatus::kQueued, {})),
            "kConflict");
  EXPECT_EQ(store().find_job("job_cas")->status, JobStatus::kCanceled);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, FinishJobSucceededSettlesAndReturnsTheRest) {
  User user = funded_user("win@example.com", credits(10));
  jobs::Job job = make_job("job_win", user.id, credits(4));
  ASSERT_TRUE(ok(store().transition_job("job_win", JobStatus::kQueued, JobStatus::kRunning,
                                        {.channel = "alpha", .mark_started = true})));
  clock_.advance_ms(2500);

  auto done = store().finish_job("job_win", {.status = JobStatus::kSucceeded,
                                             .charge = 1'500'000,
                                             .result_json = R"({"blobs":["b1"]})",
                                             .channel = "beta"});
  ASSERT_TRUE(ok(done));
  EXPECT_EQ(done->status, JobStatus::kSucceeded);
  EXPECT_EQ(done->charged, 1'500'000);
  EXPECT_EQ(done->reserved, credits(4));
  EXPECT_EQ(done->result_json, R"({"blobs":["b1"]})");
  EXPECT_EQ(done->channel, "beta");
  EXPECT_EQ(done->finished_at_ms, clock_.now_ms());
  EXPECT_EQ(done->updated_at_ms, clock_.now_ms());
  EXPECT_EQ(done->error_code, "");

  auto hold = store().find_hold(*job.hold_id);
  ASSERT_TRUE(ok(hold));
  EXPECT_EQ(hold->state, HoldState::kSettled);
  EXPECT_EQ(hold->charged, 1'500'000);
  EXPECT_EQ(hold->resolved_at, clock_.now_s());
  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, credits(10) - 1'500'000);
  EXPECT_EQ(after->reserved, 0);

  auto rows = hold_rows(user.id, *job.hold_id);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].kind, LedgerKind::kSettle);
  EXPECT_EQ(rows[1].amount, 2'500'000);
  EXPECT_EQ(rows[1].balance_after, credits(10) - 1'500'000);
  EXPECT_EQ(rows[1].job_id, "job_win");
  EXPECT_EQ(rows[1].note, "job job_win succeeded: charged 1.5");
  EXPECT_TRUE(store().list_unfinished_jobs()->empty());
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, FinishJobOtherwiseRefundsTheWholeHold) {
  User user = funded_user("lose@example.com", credits(10));
  jobs::Job failed = make_job("job_failed", user.id, credits(4));
  jobs::Job canceled = make_job("job_canceled", user.id, credits(3));
  jobs::Job expired = make_job("job_expired", user.id, credits(2));
  EXPECT_EQ(store().find_user(user.id)->balance, credits(1));
  clock_.advance_ms(500);

  auto done = store().finish_job("job_failed", {.status = JobStatus::kFailed,
                                                .error_code = "upstream_error",
                                                .error_message = "provider said no"});
  ASSERT_TRUE(ok(done));
  EXPECT_EQ(done->status, JobStatus::kFailed);
  EXPECT_EQ(done->charged, 0);
  EXPECT_EQ(done->error_code, "upstream_error");
  EXPECT_EQ(done->error_message, "provider said no");
  EXPECT_EQ(done->finished_at_ms, clock_.now_ms());
  EXPECT_FALSE(done->started_at_ms.has_value());
  auto rows = hold_rows(user.id, *failed.hold_id);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].kind, LedgerKind::kRefund);
  EXPECT_EQ(rows[1].amount, credits(4));
  EXPECT_EQ(rows[1].job_id, "job_failed");
  EXPECT_EQ(rows[1].note, "refund: job job_failed failed: upstream_error");
  EXPECT_EQ(store().find_hold(*failed.hold_id)->state, HoldState::kRefunded);

  ASSERT_TRUE(
      ok(store().finish_job("job_canceled", {.status = JobStatus::kCanceled, .note = "by user"})));
  rows = hold_rows(user.id, *canceled.hold_id);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].note, "by user");
  EXPECT_EQ(rows[1].amount, credits(3));

  // A charge means nothing unless the job succeeded: an expired job is refunded in full.
  auto gone = store().finish_job("job_expired", {.status = JobStatus::kExpired, .charge = 1});
  ASSERT_TRUE(ok(gone));
  EXPECT_EQ(gone->charged, 0);
  rows = hold_rows(user.id, *expired.hold_id);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].kind, LedgerKind::kRefund);
  EXPECT_EQ(rows[1].amount, credits(2));
  EXPECT_EQ(rows[1].note, "refund: job job_expired expired");

  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, credits(10));
  EXPECT_EQ(after->reserved, 0);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, AJobFinishesExactlyOnce) {
  User user = funded_user("once@example.com", credits(10));
  jobs::Job job = make_job("job_once", user.id, credits(4));
  auto done =
      store().finish_job("job_once", {.status = JobStatus::kSucceeded, .charge = credits(1)});
  ASSERT_TRUE(ok(done));

  User before = *store().find_user(user.id);
  std::size_t rows = ledger_size(user.id);
  clock_.advance_ms(10'000);
  EXPECT_EQ(
      code(store().finish_job("job_once", {.status = JobStatus::kSucceeded, .charge = credits(2)})),
      "kAlreadyResolved");
  EXPECT_EQ(
      code(store().finish_job("job_once", {.status = JobStatus::kFailed, .error_code = "late"})),
      "kAlreadyResolved");
  EXPECT_EQ(code(store().finish_job("job_once",
                                    {.status = JobStatus::kSucceeded, .charge = credits(100)})),
            "kAlreadyResolved");

  User after = *store().find_user(user.id);
  EXPECT_EQ(after.balance, before.balance);
  EXPECT_EQ(after.reserved, before.reserved);
  EXPECT_EQ(ledger_size(user.id), rows);
  auto kept = store().find_job("job_once");
  ASSERT_TRUE(ok(kept));
  EXPECT_EQ(kept->status, JobStatus::kSucceeded);
  EXPECT_EQ(kept->charged, credits(1));
  EXPECT_EQ(kept->error_code, "");
  EXPECT_EQ(kept->finished_at_ms, done->finished_at_ms);
  EXPECT_EQ(kept->updated_at_ms, done->updated_at_ms);
  auto hold = store().find_hold(*job.hold_id);
  EXPECT_EQ(hold->state, HoldState::kSettled);
  EXPECT_EQ(hold->charged, credits(1));
  expect_clean_ledger(store());
}

// Cancel is a finish that only applies while the job is still queued: once a worker moved it
// to running, the cancel loses and nothing moves.
TEST_P(StoreContractTest, FinishOnlyFromAStateIsACompareAndSet) {
  User user = funded_user("cancel@example.com", credits(10));
  make_job("job_queued", user.id, credits(3));
  make_job("job_taken", user.id, credits(4));
  ASSERT_TRUE(ok(store().transition_job("job_taken", JobStatus::kQueued, JobStatus::kRunning, {})));

  const jobs::JobFinish cancel{.status = JobStatus::kCanceled,
                               .error_code = "canceled",
                               .note = "refund: canceled by the owner",
                               .only_from = JobStatus::kQueued};
  std::size_t rows = ledger_size(user.id);
  EXPECT_EQ(code(store().finish_job("job_taken", cancel)), "kConflict");
  EXPECT_EQ(ledger_size(user.id), rows);
  EXPECT_EQ(store().find_job("job_taken")->status, JobStatus::kRunning);

  auto canceled = store().finish_job("job_queued", cancel);
  ASSERT_TRUE(ok(canceled));
  EXPECT_EQ(canceled->status, JobStatus::kCanceled);
  EXPECT_EQ(code(store().finish_job("job_queued", cancel)), "kAlreadyResolved");
  EXPECT_EQ(store().find_user(user.id)->balance, credits(10) - credits(4));
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, ASyncJobCanBeCreatedAlreadyRunning) {
  User user = funded_user("sync@example.com", credits(10));
  jobs::NewJob job{.id = "job_sync",
                   .user_id = user.id,
                   .kind = "image.generation",
                   .model = "m",
                   .dialect = "openai",
                   .reserve = credits(1),
                   .start_running = true};
  auto created = store().create_job(job);
  ASSERT_TRUE(ok(created));
  EXPECT_EQ(created->status, JobStatus::kRunning);
  EXPECT_EQ(created->started_at_ms, clock_.now_ms());
  EXPECT_EQ(store().find_job("job_sync")->status, JobStatus::kRunning);
  EXPECT_EQ(code(store().transition_job("job_sync", JobStatus::kQueued, JobStatus::kRunning, {})),
            "kConflict");
}

TEST_P(StoreContractTest, FinishJobRejectsBadArgumentsAndChangesNothing) {
  User user = funded_user("bad@example.com", credits(10));
  jobs::Job job = make_job("job_bad", user.id, credits(4));
  std::size_t rows = ledger_size(user.id);

  EXPECT_EQ(code(store().finish_job("job_bad",
                                    {.status = JobStatus::kSucceeded, .charge = credits(4) + 1})),
            "kInvalidArgument");
  EXPECT_EQ(code(store().finish_job("job_bad", {.status = JobStatus::kSucceeded, .charge = -1})),
            "kInvalidArgument");
  EXPECT_EQ(code(store().finish_job("job_bad", {.status = JobStatus::kRunning})),
            "kInvalidArgument");
  EXPECT_EQ(code(store().finish_job("job_bad", {.status = JobStatus::kQueued})),
            "kInvalidArgument");
  EXPECT_EQ(code(store().finish_job("job_nope", {.status = JobStatus::kFailed})), "kNotFound");

  EXPECT_EQ(store().find_job("job_bad")->status, JobStatus::kQueued);
  EXPECT_EQ(store().find_hold(*job.hold_id)->state, HoldState::kOpen);
  EXPECT_EQ(store().find_user(user.id)->balance, credits(6));
  EXPECT_EQ(ledger_size(user.id), rows);

  // The whole reserve is a valid charge.
  auto done =
      store().finish_job("job_bad", {.status = JobStatus::kSucceeded, .charge = credits(4)});
  ASSERT_TRUE(ok(done));
  EXPECT_EQ(store().find_user(user.id)->balance, credits(6));
  EXPECT_EQ(hold_rows(user.id, *job.hold_id).back().amount, 0);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, AJobsHoldResolvesOnlyThroughTheJob) {
  User user = funded_user("own@example.com", credits(10));
  jobs::Job job = make_job("job_own", user.id, credits(4));
  auto plain = store().reserve(user.id, credits(1), "job_own");  // same tag, not the job's hold
  ASSERT_TRUE(ok(plain));

  EXPECT_EQ(code(store().settle(*job.hold_id, credits(1))), "kConflict");
  EXPECT_EQ(code(store().refund(*job.hold_id, "orphan sweep")), "kConflict");
  EXPECT_EQ(store().find_hold(*job.hold_id)->state, HoldState::kOpen);
  EXPECT_TRUE(ok(store().settle(plain->id, credits(1))));

  ASSERT_TRUE(ok(store().finish_job("job_own", {.status = JobStatus::kFailed})));
  EXPECT_EQ(code(store().refund(*job.hold_id, "again")), "kAlreadyResolved");
  EXPECT_EQ(store().find_user(user.id)->balance, credits(9));
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, ConcurrentFinishesOfOneJobHaveOneWinner) {
  constexpr int kThreads = 16;
  constexpr int kJobs = 8;
  User user = funded_user("racefinish@example.com", credits(100));
  Micros charged = 0;
  for (int round = 0; round < kJobs; ++round) {
    SCOPED_TRACE(round);
    const std::string id = "job_contested_" + std::to_string(round);
    jobs::Job job = make_job(id, user.id, credits(4));
    std::mutex mu;
    std::vector<jobs::Job> winners;
    std::vector<std::string> errors;
    std::atomic<int> already{0};
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        jobs::JobFinish finish =
            t % 2 == 0 ? jobs::JobFinish{.status = JobStatus::kSucceeded,
                                         .charge = credits(1 + (t / 2) % 4)}
                       : jobs::JobFinish{.status = JobStatus::kFailed, .error_code = "timeout"};
        start.arrive_and_wait();
        auto result = store().finish_job(id, finish);
        std::lock_guard lock(mu);
        if (result) {
          winners.push_back(*result);
        } else if (result.error().code == StoreErrc::kAlreadyResolved) {
          ++already;
        } else {
          errors.push_back(result.error().message);
        }
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_TRUE(errors.empty()) << joined(errors);
    ASSERT_EQ(winners.size(), 1u);
    EXPECT_EQ(already.load(), kThreads - 1);
    const jobs::Job& winner = winners[0];
    auto stored = store().find_job(id);
    ASSERT_TRUE(ok(stored));
    EXPECT_EQ(stored->status, winner.status);
    EXPECT_EQ(stored->charged, winner.charged);

    auto rows = hold_rows(user.id, *job.hold_id);
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[1].kind,
              winner.status == JobStatus::kSucceeded ? LedgerKind::kSettle : LedgerKind::kRefund);
    EXPECT_EQ(rows[1].amount, credits(4) - winner.charged);
    charged += winner.charged;
  }
  auto after = store().find_user(user.id);
  EXPECT_EQ(after->balance, credits(100) - charged);
  EXPECT_EQ(after->reserved, 0);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, NoOverdraftUnderConcurrentJobCreation) {
  run_no_overdraft_jobs(store(), {&store()}, OverdraftScenario{});
}

TEST_P(StoreContractTest, ListJobsPagesNewestFirstAndFilters) {
  User user = funded_user("pages@example.com", credits(100));
  User other = funded_user("other@example.com", credits(100));
  // Three creation instants, with ties: the order among equal timestamps is creation order.
  for (int i = 0; i < 7; ++i) {
    if (i == 3 || i == 5) clock_.advance_ms(1000);
    make_job("job_" + std::to_string(i), user.id, i % 2 == 0 ? credits(1) : 0);
    if (i == 3) make_job("job_other", other.id, credits(1));
  }
  auto page = [&](std::optional<JobStatus> status, int limit, std::optional<std::string> after) {
    return job_ids(store().list_jobs(user.id, status, limit, std::move(after)));
  };
  using Ids = std::vector<std::string>;
  EXPECT_EQ(page(std::nullopt, 100, std::nullopt),
            (Ids{"job_6", "job_5", "job_4", "job_3", "job_2", "job_1", "job_0"}));
  EXPECT_EQ(page(std::nullopt, 3, std::nullopt), (Ids{"job_6", "job_5", "job_4"}));
  EXPECT_EQ(page(std::nullopt, 3, "job_4"), (Ids{"job_3", "job_2", "job_1"}));
  EXPECT_EQ(page(std::nullopt, 3, "job_1"), (Ids{"job_0"}));
  EXPECT_EQ(page(std::nullopt, 3, "job_0"), Ids{});

  ASSERT_TRUE(ok(store().transition_job("job_1", JobStatus::kQueued, JobStatus::kRunning, {})));
  ASSERT_TRUE(ok(store().transition_job("job_4", JobStatus::kQueued, JobStatus::kRunning, {})));
  ASSERT_TRUE(ok(store().finish_job("job_5", {.status = JobStatus::kFailed})));
  EXPECT_EQ(page(JobStatus::kRunning, 10, std::nullopt), (Ids{"job_4", "job_1"}));
  EXPECT_EQ(page(JobStatus::kFailed, 10, std::nullopt), (Ids{"job_5"}));
  EXPECT_EQ(page(JobStatus::kSucceeded, 10, std::nullopt), Ids{});
  EXPECT_EQ(page(JobStatus::kQueued, 2, std::nullopt), (Ids{"job_6", "job_3"}));
  EXPECT_EQ(page(JobStatus::kQueued, 2, "job_3"), (Ids{"job_2", "job_0"}));
  // The cursor is a position, whatever the status of the job it names.
  EXPECT_EQ(page(JobStatus::kQueued, 10, "job_4"), (Ids{"job_3", "job_2", "job_0"}));

  EXPECT_EQ(job_ids(store().list_jobs(other.id, std::nullopt, 10, std::nullopt)), Ids{"job_other"});
  EXPECT_EQ(code(store().list_jobs(user.id, std::nullopt, 10, "job_other")), "kNotFound");
  EXPECT_EQ(code(store().list_jobs(user.id, std::nullopt, 10, "job_nope")), "kNotFound");
  EXPECT_EQ(code(store().list_jobs(user.id, std::nullopt, 0, std::nullopt)), "kInvalidArgument");
  EXPECT_EQ(code(store().list_jobs(user.id, std::nullopt, kMaxJobsPage + 1, std::nullopt)),
            "kInvalidArgument");
  EXPECT_EQ(page(std::nullopt, kMaxJobsPage, std::nullopt).size(), 7u);
  EXPECT_EQ(code(store().list_jobs(other.id + 1000, std::nullopt, 10, std::nullopt)), "kNotFound");
}

TEST_P(StoreContractTest, ListUnfinishedJobsIsOldestFirst) {
  User a = funded_user("ua@example.com", credits(10));
  User b = funded_user("ub@example.com", credits(10));
  EXPECT_TRUE(store().list_unfinished_jobs()->empty());
  make_job("job_u1", a.id, credits(1));
  make_job("job_u2", b.id, 0);
  clock_.advance_ms(10);
  make_job("job_u3", a.id, credits(1));
  make_job("job_u4", b.id, credits(1));
  clock_.advance_ms(10);
  make_job("job_u5", a.id, 0);
  ASSERT_TRUE(ok(store().transition_job("job_u3", JobStatus::kQueued, JobStatus::kRunning, {})));
  ASSERT_TRUE(ok(store().finish_job("job_u2", {.status = JobStatus::kSucceeded})));
  ASSERT_TRUE(ok(store().finish_job("job_u4", {.status = JobStatus::kExpired})));

  auto unfinished = store().list_unfinished_jobs();
  EXPECT_EQ(job_ids(unfinished), (std::vector<std::string>{"job_u1", "job_u3", "job_u5"}));
  ASSERT_EQ(unfinished->size(), 3u);
  EXPECT_EQ((*unfinished)[1].status, JobStatus::kRunning);
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, ListJobsWithResultsIsTheRetentionSweepsWorkList) {
  User user = funded_user("keep@example.com", credits(10));
  const std::int64_t t0 = clock_.now_ms();
  make_job("job_r1", user.id, credits(1));
  ASSERT_TRUE(
      ok(store().finish_job("job_r1", {.status = JobStatus::kSucceeded, .charge = credits(1)})));
  clock_.advance_ms(10);
  make_job("job_r2", user.id, credits(1));
  ASSERT_TRUE(ok(store().finish_job("job_r2", {.status = JobStatus::kFailed})));
  make_job("job_r3", user.id, 0);
  ASSERT_TRUE(ok(store().finish_job("job_r3", {.status = JobStatus::kSucceeded})));
  make_job("job_r4", user.id, credits(1));  // still queued
  clock_.advance_ms(10);
  make_job("job_r5", user.id, 0);
  ASSERT_TRUE(ok(store().finish_job("job_r5", {.status = JobStatus::kSucceeded})));

  // Finished strictly before the cutoff, succeeded, oldest finish first.
  EXPECT_EQ(job_ids(store().list_jobs_with_results(t0 + 10, 10)),
            (std::vector<std::string>{"job_r1"}));
  EXPECT_EQ(job_ids(store().list_jobs_with_results(t0 + 11, 10)),
            (std::vector<std::string>{"job_r1", "job_r3"}));
  EXPECT_EQ(job_ids(store().list_jobs_with_results(t0 + 100, 2)),
            (std::vector<std::string>{"job_r1", "job_r3"}));
  EXPECT_EQ(store().list_jobs_with_results(t0, 0).error().code, StoreErrc::kInvalidArgument);

  clock_.advance_ms(5);
  ASSERT_TRUE(ok(store().mark_results_expired("job_r1", clock_.now_ms())));
  ASSERT_TRUE(ok(store().mark_results_expired("job_r1", clock_.now_ms() + 99)));  // idempotent
  auto expired = store().find_job("job_r1");
  ASSERT_TRUE(ok(expired));
  EXPECT_EQ(expired->results_expired_at_ms, clock_.now_ms());
  EXPECT_EQ(expired->status, JobStatus::kSucceeded);
  EXPECT_EQ(expired->charged, credits(1));
  EXPECT_FALSE(store().find_job("job_r3")->results_expired_at_ms.has_value());
  EXPECT_EQ(job_ids(store().list_jobs_with_results(t0 + 100, 10)),
            (std::vector<std::string>{"job_r3", "job_r5"}));

  EXPECT_EQ(store().mark_results_expired("job_r2", clock_.now_ms()).error().code,
            StoreErrc::kConflict);
  EXPECT_EQ(store().mark_results_expired("job_r4", clock_.now_ms()).error().code,
            StoreErrc::kConflict);
  EXPECT_EQ(store().mark_results_expired("job_nope", clock_.now_ms()).error().code,
            StoreErrc::kNotFound);
  expect_clean_ledger(store());
}

// --- API key profiles ---

TEST_P(StoreContractTest, ApiKeyProfileRoundTripsThroughEveryLookup) {
  User user = make_user("profile@example.com");
  auto seeded = store().create_api_key({.user_id = user.id,
                                        .name = "seed",
                                        .prefix = "sk-PROFILE",
                                        .last4 = "wxyz",
                                        .hash = "hash-seed002",
                                        .profile = "seed002"});
  ASSERT_TRUE(ok(seeded));
  EXPECT_EQ(seeded->profile, "seed002");
  ApiKey plain = make_key(user.id, "sk-PROFILE", "hash-plain");
  EXPECT_EQ(plain.profile, "");

  auto listed = store().list_api_keys(user.id);
  ASSERT_TRUE(ok(listed));
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].profile, "seed002");
  EXPECT_EQ((*listed)[1].profile, "");
  auto by_prefix = store().find_api_keys_by_prefix("sk-PROFILE");
  ASSERT_TRUE(ok(by_prefix));
  ASSERT_EQ(by_prefix->size(), 2u);
  EXPECT_EQ((*by_prefix)[0].profile, "seed002");
  EXPECT_EQ((*by_prefix)[1].profile, "");
  auto auth = store().find_auth_by_key_hash("hash-seed002");
  ASSERT_TRUE(ok(auth));
  EXPECT_EQ(auth->key.profile, "seed002");
  EXPECT_EQ(auth->email, "profile@example.com");  // the user's columns still line up
  EXPECT_EQ(store().find_auth_by_key_hash("hash-plain")->key.profile, "");
}

// --- webhook secrets ---

TEST_P(StoreContractTest, WebhookSecretIsStoredOnceAndRotates) {
  User user = make_user("hooks@example.com");
  User other = make_user("otherhooks@example.com");
  EXPECT_EQ(store().webhook_secret(user.id, "whsec_first").value_or(""), "whsec_first");
  EXPECT_EQ(store().webhook_secret(user.id, "whsec_second").value_or(""), "whsec_first");
  EXPECT_EQ(store().webhook_secret(other.id, "whsec_other").value_or(""), "whsec_other");

  ASSERT_TRUE(ok(store().set_webhook_secret(user.id, "whsec_rotated")));
  EXPECT_EQ(store().webhook_secret(user.id, "whsec_third").value_or(""), "whsec_rotated");
  EXPECT_EQ(store().webhook_secret(other.id, "whsec_x").value_or(""), "whsec_other");

  // Rotation also works before any secret was handed out.
  User fresh = make_user("freshhooks@example.com");
  ASSERT_TRUE(ok(store().set_webhook_secret(fresh.id, "whsec_set")));
  EXPECT_EQ(store().webhook_secret(fresh.id, "whsec_candidate").value_or(""), "whsec_set");

  EXPECT_EQ(code(store().webhook_secret(user.id + 1000, "whsec_nobody")), "kNotFound");
  EXPECT_EQ(code(store().set_webhook_secret(user.id + 1000, "whsec_nobody")), "kNotFound");
  EXPECT_EQ(code(store().webhook_secret(user.id, "")), "kInvalidArgument");
  EXPECT_EQ(code(store().set_webhook_secret(user.id, "")), "kInvalidArgument");
  EXPECT_EQ(store().webhook_secret(user.id, "whsec_again").value_or(""), "whsec_rotated");
}

TEST_P(StoreContractTest, RacingWebhookSecretCallersAllGetTheFirstStored) {
  constexpr int kThreads = 8;
  User user = make_user("racehooks@example.com");
  std::vector<StoreResult<std::string>> results(kThreads);
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      results[t] = store().webhook_secret(user.id, "whsec_" + std::to_string(t));
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_TRUE(ok(results[0]));
  for (const auto& result : results) {
    ASSERT_TRUE(ok(result));
    EXPECT_EQ(*result, *results[0]);
  }
  EXPECT_EQ(store().webhook_secret(user.id, "whsec_late").value_or(""), *results[0]);
}

// --- callback deliveries ---

TEST_P(StoreContractTest, FinishingAJobWithACallbackEnqueuesOneDeliveryDueAtOnce) {
  User user = funded_user("outbox@example.com", credits(10));
  make_job("job_hooked", user.id, credits(2));
  EXPECT_TRUE(store().list_deliveries("job_hooked")->empty());  // nothing until it finishes
  clock_.advance_ms(1234);
  const std::int64_t finished_at = clock_.now_ms();
  ASSERT_TRUE(ok(
      store().finish_job("job_hooked", {.status = JobStatus::kSucceeded, .charge = credits(1)})));

  auto listed = store().list_deliveries("job_hooked");
  ASSERT_TRUE(ok(listed));
  ASSERT_EQ(listed->size(), 1u);
  const Delivery& delivery = (*listed)[0];
  EXPECT_EQ(delivery.id, "msg_job_hooked");
  EXPECT_EQ(delivery.job_id, "job_hooked");
  EXPECT_EQ(delivery.user_id, user.id);
  EXPECT_EQ(delivery.url, "https://example.com/hook");
  EXPECT_EQ(delivery.body, "");
  EXPECT_EQ(delivery.state, DeliveryState::kPending);
  EXPECT_EQ(delivery.attempts, 0);
  EXPECT_EQ(delivery.cycle_attempts, 0);
  EXPECT_EQ(delivery.next_attempt_at_ms, finished_at);
  EXPECT_EQ(delivery.created_at_ms, finished_at);
  EXPECT_FALSE(delivery.last_attempt_at_ms.has_value());
  EXPECT_EQ(delivery.last_status, 0);
  EXPECT_EQ(delivery.last_error, "");
  EXPECT_TRUE(store().list_delivery_attempts("msg_job_hooked")->empty());

  // The losers of finish_job enqueue nothing.
  clock_.advance_ms(10);
  EXPECT_EQ(code(store().finish_job("job_hooked", {.status = JobStatus::kFailed})),
            "kAlreadyResolved");
  EXPECT_EQ(store().list_deliveries("job_hooked")->size(), 1u);

  // No callback_url, no delivery.
  jobs::NewJob quiet = new_job("job_quiet", user.id, credits(1));
  quiet.callback_url = "";
  ASSERT_TRUE(ok(store().create_job(quiet)));
  ASSERT_TRUE(ok(store().finish_job("job_quiet", {.status = JobStatus::kFailed})));
  EXPECT_TRUE(store().list_deliveries("job_quiet")->empty());

  // A cancel is a finish too; a cancel that loses its compare-and-set enqueues nothing.
  make_job("job_cancel", user.id, 0);
  make_job("job_busy", user.id, 0);
  ASSERT_TRUE(ok(store().transition_job("job_busy", JobStatus::kQueued, JobStatus::kRunning, {})));
  const jobs::JobFinish cancel{.status = JobStatus::kCanceled, .only_from = JobStatus::kQueued};
  EXPECT_EQ(code(store().finish_job("job_busy", cancel)), "kConflict");
  EXPECT_TRUE(store().list_deliveries("job_busy")->empty());
  ASSERT_TRUE(ok(store().finish_job("job_cancel", cancel)));
  auto canceled = store().list_deliveries("job_cancel");
  ASSERT_TRUE(ok(canceled));
  ASSERT_EQ(canceled->size(), 1u);
  EXPECT_EQ((*canceled)[0].id, "msg_job_cancel");
  EXPECT_EQ((*canceled)[0].next_attempt_at_ms, clock_.now_ms());

  EXPECT_TRUE(store().list_deliveries("job_nope")->empty());
  auto due = store().claim_due_deliveries(clock_.now_ms(), 30'000, 10);
  ASSERT_TRUE(ok(due));
  ASSERT_EQ(due->size(), 2u);
  EXPECT_EQ((*due)[0].id, "msg_job_hooked");
  EXPECT_EQ((*due)[1].id, "msg_job_cancel");
  expect_clean_ledger(store());
}

TEST_P(StoreContractTest, ClaimHandsOutDueDeliveriesEarliestFirstAndLeasesThem) {
  User user = make_user("claims@example.com");
  const std::int64_t t0 = clock_.now_ms();
  finish_hooked_job("job_c", user.id);  // due t0
  finish_hooked_job("job_d", user.id);  // due t0 too: created later, so claimed after job_c
  clock_.advance_ms(10);
  finish_hooked_job("job_a", user.id);  // due t0 + 10
  clock_.advance_ms(10);
  finish_hooked_job("job_b", user.id);  // due t0 + 20
  auto ids = [](const StoreResult<std::vector<Delivery>>& claimed) {
    EXPECT_TRUE(ok(claimed));
    std::vector<std::string> out;
    if (claimed) {
      for (const Delivery& delivery : *claimed) out.push_back(delivery.id);
    }
    return out;
  };
  using Ids = std::vector<std::string>;
  constexpr std::int64_t kLease = 1000;

  EXPECT_EQ(ids(store().claim_due_deliveries(t0 - 1, kLease, 10)), Ids{});
  auto first = store().claim_due_deliveries(t0 + 15, kLease, 2);
  EXPECT_EQ(ids(first), (Ids{"msg_job_c", "msg_job_d"}));
  ASSERT_TRUE(ok(first));
  for (const Delivery& delivery : *first) {
    EXPECT_EQ(delivery.next_attempt_at_ms, t0 + 15 + kLease);  // the lease end
    EXPECT_EQ(delivery.state, DeliveryState::kPending);
  }
  EXPECT_EQ(ids(store().claim_due_deliveries(t0 + 15, kLease, 10)), (Ids{"msg_job_a"}));
  // Everything due is leased now: nothing more until a lease ends or job_b falls due.
  EXPECT_EQ(ids(store().claim_due_deliveries(t0 + 15, kLease, 10)), Ids{});
  EXPECT_EQ(ids(store().claim_due_deliveries(t0 + 25, kLease, 10)), (Ids{"msg_job_b"}));
  EXPECT_EQ(ids(store().claim_due_deliveries(t0 + 15 + kLease - 1, kLease, 10)), Ids{});
  // A lease that ran out (the claimer crashed) makes the delivery due again, in due order.
  EXPECT_EQ(ids(store().claim_due_deliveries(t0 + 15 + kLease, kLease, 10)),
            (Ids{"msg_job_c", "msg_job_d", "msg_job_a"}));
  auto stored = store().list_deliveries("job_c");
  ASSERT_TRUE(ok(stored));
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_EQ((*stored)[0].next_attempt_at_ms, t0 + 15 + 2 * kLease);
  EXPECT_EQ((*stored)[0].attempts, 0);  // claiming is not attempting

  EXPECT_EQ(code(store().claim_due_deliveries(t0, kLease, 0)), "kInvalidArgument");
  EXPECT_EQ(code(store().claim_due_deliveries(t0, kLease, kMaxDeliveryClaim + 1)),
            "kInvalidArgument");
  EXPECT_EQ(code(store().claim_due_deliveries(t0, 0, 10)), "kInvalidArgument");
  EXPECT_EQ(code(store().claim_due_deliveries(t0, -5, 10)), "kInvalidArgument");
  EXPECT_TRUE(ok(store().claim_due_deliveries(t0, kLease, kMaxDeliveryClaim)));
}

TEST_P(StoreContractTest, RecordedAttemptsRetryGiveUpOrSucceed) {
  User user = make_user("attempts@example.com");
  finish_hooked_job("job_retry", user.id);
  finish_hooked_job("job_ok", user.id);
  const std::int64_t t0 = clock_.now_ms();
  ASSERT_EQ(store().claim_due_deliveries(t0, 30'000, 10)->size(), 2u);

  // A failure with a retry time: pending again, due then, with the body kept.
  auto retried = store().record_delivery_attempt("msg_job_retry", {.body = R"({"id":"job_retry"})",
                                                                   .at_ms = t0 + 1,
                                                                   .duration_ms = 250,
                                                                   .status = 503,
                                                                   .error = "HTTP 503",
                                                                   .retry_at_ms = t0 + 5000});
  ASSERT_TRUE(ok(retried));
  EXPECT_EQ(retried->state, DeliveryState::kPending);
  EXPECT_EQ(retried->attempts, 1);
  EXPECT_EQ(retried->cycle_attempts, 1);
  EXPECT_EQ(retried->body, R"({"id":"job_retry"})");
  EXPECT_EQ(retried->next_attempt_at_ms, t0 + 5000);
  EXPECT_EQ(retried->last_attempt_at_ms, t0 + 1);
  EXPECT_EQ(retried->last_status, 503);
  EXPECT_EQ(retried->last_error, "HTTP 503");
  EXPECT_TRUE(store().claim_due_deliveries(t0 + 4999, 30'000, 10)->empty());
  auto again = store().claim_due_deliveries(t0 + 5000, 30'000, 10);
  ASSERT_TRUE(ok(again));
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].body, R"({"id":"job_retry"})");

  // A second failure: the first body stays (the webhook id and bytes never change).
  auto second = store().record_delivery_attempt("msg_job_retry", {.body = "a different rendering",
                                                                  .at_ms = t0 + 5001,
                                                                  .duration_ms = 10'000,
                                                                  .status = 0,
                                                                  .error = "timeout",
                                                                  .retry_at_ms = t0 + 60'000});
  ASSERT_TRUE(ok(second));
  EXPECT_EQ(second->attempts, 2);
  EXPECT_EQ(second->cycle_attempts, 2);
  EXPECT_EQ(second->body, R"({"id":"job_retry"})");
  EXPECT_EQ(second->last_status, 0);
  EXPECT_EQ(second->last_error, "timeout");

  // No retry time: give up.
  auto given_up = store().record_delivery_attempt(
      "msg_job_retry",
      {.at_ms = t0 + 60'001, .duration_ms = 5, .status = 410, .error = "HTTP 410"});
  ASSERT_TRUE(ok(given_up));
  EXPECT_EQ(given_up->state, DeliveryState::kFailed);
  EXPECT_EQ(given_up->attempts, 3);
  EXPECT_EQ(given_up->last_status, 410);
  EXPECT_EQ(given_up->last_attempt_at_ms, t0 + 60'001);
  EXPECT_EQ(given_up->body, R"({"id":"job_retry"})");
  EXPECT_EQ(code(store().record_delivery_attempt("msg_job_retry", {.success = true})), "kConflict");

  // Success on the first try; a late second report conflicts and changes nothing.
  auto delivered = store().record_delivery_attempt("msg_job_ok", {.body = "{}",
                                                                  .at_ms = t0 + 2,
                                                                  .duration_ms = 40,
                                                                  .status = 204,
                                                                  .success = true,
                                                                  .retry_at_ms = t0 + 99});
  ASSERT_TRUE(ok(delivered));
  EXPECT_EQ(delivered->state, DeliveryState::kSucceeded);
  EXPECT_EQ(delivered->attempts, 1);
  EXPECT_EQ(delivered->cycle_attempts, 1);
  EXPECT_EQ(delivered->body, "{}");
  EXPECT_EQ(delivered->last_status, 204);
  EXPECT_EQ(delivered->last_error, "");
  EXPECT_EQ(code(store().record_delivery_attempt(
                "msg_job_ok", {.at_ms = t0 + 3, .status = 500, .retry_at_ms = t0 + 9})),
            "kConflict");
  auto kept = store().list_deliveries("job_ok");
  ASSERT_TRUE(ok(kept));
  ASSERT_EQ(kept->size(), 1u);
  EXPECT_EQ((*kept)[0].state, DeliveryState::kSucceeded);
  EXPECT_EQ((*kept)[0].attempts, 1);
  EXPECT_EQ(store().list_delivery_attempts("msg_job_ok")->size(), 1u);

  // Finished deliveries are never claimed again.
  EXPECT_TRUE(store().claim_due_deliveries(t0 + 10'000'000, 30'000, 10)->empty());
  EXPECT_EQ(code(store().record_delivery_attempt("msg_nope", {.success = true})), "kNotFound");
}

TEST_P(StoreContractTest, DeliveryAttemptsListOldestFirst) {
  User user = make_user("history@example.com");
  finish_hooked_job("job_h", user.id);
  finish_hooked_job("job_none", user.id);
  const std::int64_t t0 = clock_.now_ms();
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(ok(store().record_delivery_attempt(
        "msg_job_h",
        {.body = "body " + std::to_string(i),
         .at_ms = t0 + i * 100,
         .duration_ms = i,
         .status = 500 + i,
         .error = "error " + std::to_string(i),
         .retry_at_ms = i < 3 ? std::optional<std::int64_t>(t0 + i * 100 + 50) : std::nullopt})));
  }
  auto attempts = store().list_delivery_attempts("msg_job_h");
  ASSERT_TRUE(ok(attempts));
  ASSERT_EQ(attempts->size(), 3u);
  for (int i = 1; i <= 3; ++i) {
    const DeliveryAttempt& attempt = (*attempts)[static_cast<std::size_t>(i - 1)];
    EXPECT_EQ(attempt.delivery_id, "msg_job_h");
    EXPECT_EQ(attempt.number, i);
    EXPECT_EQ(attempt.at_ms, t0 + i * 100);
    EXPECT_EQ(attempt.duration_ms, i);
    EXPECT_EQ(attempt.status, 500 + i);
    EXPECT_EQ(attempt.error, "error " + std::to_string(i));
  }
  EXPECT_EQ(store().list_deliveries("job_h")->at(0).body, "body 1");
  EXPECT_EQ(store().list_deliveries("job_h")->at(0).state, DeliveryState::kFailed);
  EXPECT_TRUE(ok(store().list_delivery_attempts("msg_job_none")));
  EXPECT_TRUE(store().list_delivery_attempts("msg_job_none")->empty());
  EXPECT_EQ(code(store().list_delivery_attempts("msg_nope")), "kNotFound");
}

TEST_P(StoreContractTest, ReplayStartsAFreshScheduleAndKeepsTheHistory) {
  User user = make_user("replay@example.com");
  finish_hooked_job("job_r", user.id);
  const std::int64_t t0 = clock_.now_ms();
  ASSERT_TRUE(ok(store().record_delivery_attempt(
      "msg_job_r", {.body = "the body", .at_ms = t0, .status = 500, .retry_at_ms = t0 + 10})));
  ASSERT_TRUE(ok(store().record_delivery_attempt("msg_job_r", {.at_ms = t0 + 10, .status = 500})));
  ASSERT_EQ(store().list_deliveries("job_r")->at(0).state, DeliveryState::kFailed);
  EXPECT_TRUE(store().claim_due_deliveries(t0 + 1'000'000, 1000, 10)->empty());

  auto replayed = store().replay_delivery("msg_job_r", t0 + 500);
  ASSERT_TRUE(ok(replayed));
  EXPECT_EQ(replayed->id, "msg_job_r");
  EXPECT_EQ(replayed->state, DeliveryState::kPending);
  EXPECT_EQ(replayed->cycle_attempts, 0);
  EXPECT_EQ(replayed->attempts, 2);
  EXPECT_EQ(replayed->body, "the body");
  EXPECT_EQ(replayed->next_attempt_at_ms, t0 + 500);
  EXPECT_EQ(replayed->last_attempt_at_ms, t0 + 10);
  EXPECT_EQ(replayed->last_status, 500);
  EXPECT_EQ(store().list_delivery_attempts("msg_job_r")->size(), 2u);

  EXPECT_TRUE(store().claim_due_deliveries(t0 + 499, 1000, 10)->empty());
  auto claimed = store().claim_due_deliveries(t0 + 500, 1000, 10);
  ASSERT_TRUE(ok(claimed));
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].id, "msg_job_r");
  auto delivered = store().record_delivery_attempt(
      "msg_job_r", {.body = "ignored", .at_ms = t0 + 501, .status = 200, .success = true});
  ASSERT_TRUE(ok(delivered));
  EXPECT_EQ(delivered->attempts, 3);
  EXPECT_EQ(delivered->cycle_attempts, 1);
  EXPECT_EQ(delivered->body, "the body");
  auto attempts = store().list_delivery_attempts("msg_job_r");
  ASSERT_TRUE(ok(attempts));
  ASSERT_EQ(attempts->size(), 3u);
  EXPECT_EQ(attempts->back().number, 3);
  EXPECT_EQ(attempts->back().status, 200);

  // A delivered callback can be replayed too (the receiver lost it).
  auto resent = store().replay_delivery("msg_job_r", t0 + 900);
  ASSERT_TRUE(ok(resent));
  EXPECT_EQ(resent->state, DeliveryState::kPending);
  EXPECT_EQ(resent->cycle_attempts, 0);
  EXPECT_EQ(resent->attempts, 3);
  EXPECT_EQ(store().list_deliveries("job_r")->size(), 1u);
  EXPECT_EQ(code(store().replay_delivery("msg_nope", t0)), "kNotFound");
}

TEST_P(StoreContractTest, ConcurrentClaimsNeverHandOutADeliveryTwice) {
  constexpr int kDeliveries = 60;
  constexpr int kThreads = 8;
  User user = make_user("claimrace@example.com");
  for (int i = 0; i < kDeliveries; ++i) finish_hooked_job("job_cr_" + std::to_string(i), user.id);
  const std::int64_t now = clock_.now_ms();

  std::mutex mu;
  std::vector<std::string> claimed, errors;
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (;;) {
        auto batch = store().claim_due_deliveries(now, 60'000, 3);
        std::lock_guard lock(mu);
        if (!batch) {
          errors.push_back(batch.error().message);
          return;
        }
        if (batch->empty()) return;
        for (const Delivery& delivery : *batch) claimed.push_back(delivery.id);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_TRUE(errors.empty()) << joined(errors);
  std::sort(claimed.begin(), claimed.end());
  EXPECT_EQ(std::adjacent_find(claimed.begin(), claimed.end()), claimed.end());
  EXPECT_EQ(claimed.size(), static_cast<std::size_t>(kDeliveries));
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreContractTest, testing::ValuesIn(backend_cases()),
                         [](const testing::TestParamInfo<BackendCase>& info) {
                           return info.param.name;
                         });

// --- SQLite only: several processes on one file, migrations, corruption ---

class SqliteStoreTest : public testing::Test {
 protected:
  std::unique_ptr<SqliteStore> open_store(int pool_size = 4, int busy_timeout_ms = 5000,
                                          bool index_kept_results = false) {
    auto opened = SqliteStore::open({.path = path_,
                                     .busy_timeout_ms = busy_timeout_ms,
                                     .pool_size = pool_size,
                                     .index_kept_results = index_kept_results},
                                    clock_);
    EXPECT_TRUE(ok(opened));
    return opened ? std::move(*opened) : nullptr;
  }

  FakeClock clock_;
  TempDir dir_{"store"};
  std::string path_ = (dir_.path() / "nested" / "dirs" / "imagegate.db").string();
};

TEST_F(SqliteStoreTest, TwoStoresOnOneFileNeverOverdraw) {
  auto server = open_store();
  auto cli = open_store(2);
  ASSERT_TRUE(server && cli);
  run_no_overdraft(*server, {server.get(), cli.get()}, OverdraftScenario{});
  expect_clean_ledger(*cli);
}

TEST_F(SqliteStoreTest, TwoStoresOnOneFileNeverOverdrawThroughJobs) {
  auto server = open_store();
  auto cli = open_store(2);
  ASSERT_TRUE(server && cli);
  run_no_overdraft_jobs(*server, {server.get(), cli.get()}, OverdraftScenario{});
  expect_clean_ledger(*cli);
}

// A batch runs without savepoints first (they copy every touched page). A write that fails after
// changing rows makes the writer roll that pass back and run the batch again with savepoints; a
// write refused before it changed anything costs no second pass.
TEST_F(SqliteStoreTest, OnlyAWriteFailingAfterItsChangesRunsTheBatchAgain) {
  auto store = open_store();
  ASSERT_TRUE(store);
  auto user = store->create_user({"replay@example.com", "x", false});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(store->grant(user->id, credits(5), "test")));
  auto job = [&](const std::string& id, Micros reserve) {
    jobs::NewJob j;
    j.id = id;
    j.user_id = user->id;
    j.kind = "image.generation";
    j.model = "m";
    j.dialect = "openai";
    j.reserve = reserve;
    return j;
  };

  int runs = 0;
  StoreResult<jobs::Job> first = std::unexpected(StoreError{});
  StoreResult<jobs::Job> poor = std::unexpected(StoreError{});
  ASSERT_TRUE(ok(run_batched_and_wait(*store, [&] {
    ++runs;
    first = store->create_job(job("job_r1", credits(3)));
    poor = store->create_job(job("job_r2", credits(3)));  // 2 left: refused before any write
  })));
  EXPECT_EQ(runs, 1);
  EXPECT_TRUE(ok(first));
  EXPECT_EQ(code(poor), "kInsufficientCredits");

  runs = 0;
  StoreResult<jobs::Job> duplicate = std::unexpected(StoreError{});
  StoreResult<jobs::Job> second = std::unexpected(StoreError{});
  ASSERT_TRUE(ok(run_batched_and_wait(*store, [&] {
    ++runs;
    duplicate = store->create_job(job("job_r1", credits(1)));  // its hold is written first
    second = store->create_job(job("job_r3", credits(1)));
  })));
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(code(duplicate), "kConflict");
  EXPECT_TRUE(ok(second));
  EXPECT_EQ(code(store->find_job("job_r2")), "kNotFound");
  auto after = store->find_user(user->id);
  ASSERT_TRUE(ok(after));
  EXPECT_EQ(after->balance, credits(1));
  EXPECT_EQ(after->reserved, credits(4));
  expect_clean_ledger(*store);
}

TEST_F(SqliteStoreTest, BusyWritersRetryThenReportUnavailable) {
  auto store = open_store(2, /*busy_timeout_ms=*/0);
  ASSERT_TRUE(store);
  auto user = store->create_user({.email = "busy@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(store->grant(user->id, credits(5), "seed")));

  // Another process holds the write lock for longer than the retries last.
  RawDb raw(path_);
  ASSERT_EQ(raw.exec("BEGIN IMMEDIATE"), SQLITE_OK);
  EXPECT_TRUE(ok(store->find_user(user->id)));  // WAL: readers are not blocked
  EXPECT_EQ(code(store->reserve(user->id, credits(1), "blocked")), "kUnavailable");
  ASSERT_EQ(raw.exec("COMMIT"), SQLITE_OK);
  EXPECT_EQ(store->find_user(user->id)->balance, credits(5));

  // The lock is released while the store is retrying: the reserve goes through.
  ASSERT_EQ(raw.exec("BEGIN IMMEDIATE"), SQLITE_OK);
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(raw.exec("COMMIT"), SQLITE_OK);
  });
  auto hold = store->reserve(user->id, credits(1), "eventually");
  releaser.join();
  EXPECT_TRUE(ok(hold));
  EXPECT_EQ(store->find_user(user->id)->balance, credits(4));
  expect_clean_ledger(*store);
}

TEST_F(SqliteStoreTest, ReopeningDoesNotRerunMigrations) {
  const std::int64_t first_open = clock_.now_s();
  std::int64_t user_id = 0;
  {
    auto store = open_store();
    ASSERT_TRUE(store);
    auto user = store->create_user({.email = "keep@example.com", .password_hash = "h"});
    ASSERT_TRUE(ok(user));
    user_id = user->id;
    ASSERT_TRUE(ok(store->grant(user_id, credits(3), "seed")));
  }
  clock_.advance_ms(3'600'000);
  auto store = open_store();
  ASSERT_TRUE(store);
  EXPECT_EQ(store->find_user(user_id)->balance, credits(3));
  expect_clean_ledger(*store);

  RawDb raw(path_);
  const std::int64_t latest = SqliteStore::latest_schema_version();
  EXPECT_GE(latest, 1);
  EXPECT_EQ(raw.integer("SELECT COUNT(*) FROM schema_migrations"), latest);
  EXPECT_EQ(raw.integer("SELECT MAX(version) FROM schema_migrations"), latest);
  EXPECT_EQ(raw.integer("SELECT MAX(applied_at) FROM schema_migrations"), first_open);
  EXPECT_EQ(raw.integer("SELECT COUNT(*) FROM meta WHERE key = 'auth_version'"), 1);
}

TEST_F(SqliteStoreTest, ConcurrentOpensOfAFreshFileMigrateOnce) {
  constexpr int kOpeners = 4;
  std::vector<std::unique_ptr<SqliteStore>> stores(kOpeners);
  std::vector<std::string> errors(kOpeners);
  std::latch start(kOpeners);
  std::vector<std::thread> threads;
  for (int i = 0; i < kOpeners; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      auto opened = SqliteStore::open({.path = path_, .pool_size = 2}, clock_);
      if (opened) {
        stores[i] = std::move(*opened);
      } else {
        errors[i] = opened.error().message;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < kOpeners; ++i) EXPECT_TRUE(stores[i]) << errors[i];
  RawDb raw(path_);
  EXPECT_EQ(raw.integer("SELECT COUNT(*) FROM schema_migrations"),
            SqliteStore::latest_schema_version());
  EXPECT_EQ(raw.integer("SELECT COUNT(*) FROM meta"), 1);
}

TEST_F(SqliteStoreTest, CheckLedgerReportsAHandCorruptedBalance) {
  auto store = open_store();
  ASSERT_TRUE(store);
  auto good = store->create_user({.email = "good@example.com", .password_hash = "h"});
  auto bad = store->create_user({.email = "bad@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(good) && ok(bad));
  ASSERT_TRUE(ok(store->grant(good->id, credits(5), "seed")));
  ASSERT_TRUE(ok(store->grant(bad->id, credits(5), "seed")));
  expect_clean_ledger(*store);

  RawDb raw(path_);
  ASSERT_EQ(
      raw.exec("UPDATE users SET balance = balance + 1 WHERE id = " + std::to_string(bad->id)),
      SQLITE_OK);
  auto report = store->check_ledger();
  ASSERT_TRUE(ok(report));
  ASSERT_EQ(report->violations.size(), 1u) << joined(report->violations);
  EXPECT_NE(report->violations[0].find("user " + std::to_string(bad->id)), std::string::npos)
      << report->violations[0];
}

TEST_F(SqliteStoreTest, CheckLedgerReportsACorruptedRowAndHold) {
  auto store = open_store();
  ASSERT_TRUE(store);
  auto user = store->create_user({.email = "rows@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(store->grant(user->id, credits(5), "seed")));
  auto hold = store->reserve(user->id, credits(2), "job");
  ASSERT_TRUE(ok(hold));

  RawDb raw(path_);
  // A hold flipped to refunded behind the store's back has no refund row.
  ASSERT_EQ(raw.exec("UPDATE holds SET state = 'refunded' WHERE id = " + std::to_string(hold->id)),
            SQLITE_OK);
  ASSERT_EQ(raw.exec("UPDATE ledger SET balance_after = balance_after + 7 WHERE kind = 'grant'"),
            SQLITE_OK);
  auto report = store->check_ledger();
  ASSERT_TRUE(ok(report));
  std::string all = joined(report->violations);
  EXPECT_NE(all.find("hold " + std::to_string(hold->id)), std::string::npos) << all;
  EXPECT_NE(all.find("ledger row"), std::string::npos) << all;
  EXPECT_NE(all.find("reserved"), std::string::npos) << all;
}

TEST_F(SqliteStoreTest, SchemaRefusesASecondResolutionRowAndNegativeBalances) {
  auto store = open_store();
  ASSERT_TRUE(store);
  auto user = store->create_user({.email = "guard@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(store->grant(user->id, credits(5), "seed")));
  auto hold = store->reserve(user->id, credits(2), "job");
  ASSERT_TRUE(ok(hold));
  ASSERT_TRUE(ok(store->settle(hold->id, credits(1))));

  RawDb raw(path_);
  std::string uid = std::to_string(user->id), hid = std::to_string(hold->id);
  EXPECT_EQ(raw.exec("INSERT INTO ledger(user_id, kind, amount, balance_after, hold_id, "
                     "created_at) VALUES (" +
                     uid + ", 'refund', 1, 5, " + hid + ", 0)") &
                0xff,
            SQLITE_CONSTRAINT);
  EXPECT_EQ(raw.exec("UPDATE users SET balance = -1 WHERE id = " + uid) & 0xff, SQLITE_CONSTRAINT);
  expect_clean_ledger(*store);
}

TEST_F(SqliteStoreTest, CheckLedgerReportsJobsAndHoldsThatDisagree) {
  auto store = open_store();
  ASSERT_TRUE(store);
  auto user = store->create_user({.email = "jobbooks@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(store->grant(user->id, credits(10), "seed")));
  auto make = [&](const std::string& id) {
    auto job = store->create_job(
        {.id = id, .user_id = user->id, .kind = "image.generation", .reserve = credits(2)});
    EXPECT_TRUE(ok(job));
  };
  make("job_settled");
  make("job_open");
  make("job_refunded");
  make("job_fine");
  ASSERT_TRUE(ok(
      store->finish_job("job_settled", {.status = JobStatus::kSucceeded, .charge = credits(1)})));
  ASSERT_TRUE(ok(store->finish_job("job_refunded", {.status = JobStatus::kFailed})));
  expect_clean_ledger(*store);

  RawDb raw(path_);
  // Each edit keeps every hold consistent with its ledger rows: only the job check can see it.
  ASSERT_EQ(raw.exec("UPDATE jobs SET charged = reserved WHERE id = 'job_settled'"), SQLITE_OK);
  ASSERT_EQ(raw.exec("UPDATE jobs SET status = 'failed', finished_at_ms = 1 "
                     "WHERE id = 'job_open'"),
            SQLITE_OK);
  ASSERT_EQ(raw.exec("UPDATE holds SET job_id = 'someone_else' WHERE id = "
                     "(SELECT hold_id FROM jobs WHERE id = 'job_refunded')"),
            SQLITE_OK);
  auto report = store->check_ledger();
  ASSERT_TRUE(ok(report));
  EXPECT_EQ(report->jobs_checked, 4);
  std::string all = joined(report->violations);
  ASSERT_EQ(report->violations.size(), 3u) << all;
  EXPECT_NE(all.find("job job_settled (succeeded): charged 2000000 != hold"), std::string::npos)
      << all;
  EXPECT_NE(all.find("job job_open (failed): hold"), std::string::npos) << all;
  EXPECT_NE(all.find("is open, expected refunded"), std::string::npos) << all;
  EXPECT_NE(all.find("job job_refunded (failed): hold"), std::string::npos) << all;
  EXPECT_NE(all.find("tagged with job 'someone_else'"), std::string::npos) << all;
  EXPECT_EQ(all.find("job_fine"), std::string::npos) << all;
}

TEST_F(SqliteStoreTest, SchemaGuardsJobs) {
  auto store = open_store();
  ASSERT_TRUE(store);
  auto user = store->create_user({.email = "jobguard@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(store->grant(user->id, credits(5), "seed")));
  ASSERT_TRUE(ok(store->create_job({.id = "job_g", .user_id = user->id, .reserve = credits(2)})));

  RawDb raw(path_);
  auto refused = [&](const std::string& sql) {
    return (raw.exec(sql) & 0xff) == SQLITE_CONSTRAINT;
  };
  EXPECT_TRUE(
      refused("UPDATE jobs SET status = 'succeeded' WHERE id = 'job_g'"));        // no finish time
  EXPECT_TRUE(refused("UPDATE jobs SET finished_at_ms = 1 WHERE id = 'job_g'"));  // not final
  EXPECT_TRUE(refused("UPDATE jobs SET status = 'done', finished_at_ms = 1 WHERE id = 'job_g'"));
  EXPECT_TRUE(
      refused("UPDATE jobs SET status = 'failed', finished_at_ms = 1, charged = 1 "
              "WHERE id = 'job_g'"));  // charged without succeeding
  EXPECT_TRUE(
      refused("UPDATE jobs SET status = 'succeeded', finished_at_ms = 1, "
              "charged = reserved + 1 WHERE id = 'job_g'"));
  EXPECT_TRUE(refused("UPDATE jobs SET hold_id = NULL WHERE id = 'job_g'"));  // reserved, no hold
  // Two jobs never share a hold.
  EXPECT_TRUE(
      refused("INSERT INTO jobs(id, user_id, kind, model, dialect, hold_id, reserved, "
              "created_at_ms, updated_at_ms) SELECT 'job_h', user_id, '', '', '', hold_id, "
              "reserved, 0, 0 FROM jobs WHERE id = 'job_g'"));
  expect_clean_ledger(*store);
}

TEST_F(SqliteStoreTest, MigratingAVersionTwoFileAddsJobs) {
  std::int64_t user_id = 0;
  {
    auto store = open_store();
    ASSERT_TRUE(store);
    auto user = store->create_user({.email = "old@example.com", .password_hash = "h"});
    ASSERT_TRUE(ok(user));
    user_id = user->id;
    ASSERT_TRUE(ok(store->grant(user_id, credits(3), "seed")));
    ASSERT_TRUE(ok(store->reserve(user_id, credits(1), "pre-jobs hold")));
  }
  {
    // Roll the file back to what a version-2 binary left behind.
    RawDb raw(path_);
    ASSERT_EQ(raw.exec("DROP TABLE blobs; DROP TABLE delivery_attempts; DROP TABLE deliveries; "
                       "DROP TABLE jobs; "
                       "ALTER TABLE api_keys DROP COLUMN profile; "
                       "ALTER TABLE users DROP COLUMN webhook_secret; "
                       "DELETE FROM schema_migrations WHERE version >= 3"),
              SQLITE_OK);
  }
  auto store = open_store();
  ASSERT_TRUE(store);
  auto job = store->create_job({.id = "job_new", .user_id = user_id, .reserve = credits(1)});
  ASSERT_TRUE(ok(job));
  EXPECT_EQ(store->find_user(user_id)->balance, credits(1));
  expect_clean_ledger(*store);
  RawDb raw(path_);
  EXPECT_EQ(raw.integer("SELECT MAX(version) FROM schema_migrations"),
            SqliteStore::latest_schema_version());
}

TEST_F(SqliteStoreTest, MigratingAVersionThreeFileAddsProfilesAndDeliveries) {
  std::int64_t user_id = 0;
  {
    auto store = open_store();
    ASSERT_TRUE(store);
    auto user = store->create_user({.email = "v3@example.com", .password_hash = "h"});
    ASSERT_TRUE(ok(user));
    user_id = user->id;
    ASSERT_TRUE(ok(store->grant(user_id, credits(5), "seed")));
    ASSERT_TRUE(ok(store->create_api_key({.user_id = user_id,
                                          .name = "old",
                                          .prefix = "sk-OLDOLDOL",
                                          .last4 = "o",
                                          .hash = "h-old"})));
    for (const char* id : {"job_done_before", "job_running_across"}) {
      ASSERT_TRUE(ok(store->create_job({.id = id,
                                        .user_id = user_id,
                                        .kind = "image.generation",
                                        .callback_url = "https://example.com/hook",
                                        .reserve = credits(1)})));
    }
    ASSERT_TRUE(ok(store->finish_job("job_done_before", {.status = JobStatus::kFailed})));
  }
  {
    // Roll the file back to what a version-3 binary left behind.
    RawDb raw(path_);
    ASSERT_EQ(raw.exec("DROP INDEX IF EXISTS jobs_results_kept; "
                       "ALTER TABLE jobs DROP COLUMN results_expired_at_ms; "
                       "DROP TABLE blobs; DROP TABLE delivery_attempts; DROP TABLE deliveries; "
                       "ALTER TABLE api_keys DROP COLUMN profile; "
                       "ALTER TABLE users DROP COLUMN webhook_secret; "
                       "DELETE FROM schema_migrations WHERE version >= 4"),
              SQLITE_OK);
  }
  auto store = open_store();
  ASSERT_TRUE(store);
  EXPECT_EQ(store->find_auth_by_key_hash("h-old")->key.profile, "");
  EXPECT_EQ(store->webhook_secret(user_id, "whsec_new").value_or(""), "whsec_new");
  // Jobs finished before the upgrade are not called back after it; jobs in flight are.
  EXPECT_TRUE(store->list_deliveries("job_done_before")->empty());
  ASSERT_TRUE(ok(store->finish_job("job_running_across", {.status = JobStatus::kFailed})));
  EXPECT_EQ(store->list_deliveries("job_running_across")->size(), 1u);
  expect_clean_ledger(*store);
  RawDb raw(path_);
  EXPECT_EQ(raw.integer("SELECT MAX(version) FROM schema_migrations"),
            SqliteStore::latest_schema_version());
}

TEST_F(SqliteStoreTest, MigratingAVersionSixFileKeepsItsResultsUnderRetention) {
  std::int64_t finished_at = 0;
  {
    auto store = open_store();
    ASSERT_TRUE(store);
    auto user = store->create_user({.email = "v6@example.com", .password_hash = "h"});
    ASSERT_TRUE(ok(user));
    for (const char* id : {"job_v6", "job_v6_later"}) {
      ASSERT_TRUE(ok(store->create_job({.id = id, .user_id = user->id})));
      auto done = store->finish_job(id, {.status = JobStatus::kSucceeded});
      ASSERT_TRUE(ok(done));
      if (finished_at == 0) finished_at = done->finished_at_ms.value_or(0);
      clock_.advance_ms(10);
    }
  }
  {
    // Roll the file back to what a version-6 binary left behind.
    RawDb raw(path_);
    ASSERT_EQ(raw.exec("DROP INDEX IF EXISTS jobs_results_kept; "
                       "ALTER TABLE jobs DROP COLUMN results_expired_at_ms; "
                       "DELETE FROM schema_migrations WHERE version >= 7"),
              SQLITE_OK);
  }
  const std::string plan_query =
      "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE status = 'succeeded' "
      "AND results_expired_at_ms IS NULL AND finished_at_ms < 5 ORDER BY finished_at_ms LIMIT 3";
  {
    // A deployment with retention: the sweep's listing walks the partial index.
    auto store = open_store(4, 5000, /*index_kept_results=*/true);
    ASSERT_TRUE(store);
    EXPECT_FALSE(store->find_job("job_v6")->results_expired_at_ms.has_value());
    auto listed = store->list_jobs_with_results(finished_at + 1, 10);
    ASSERT_TRUE(ok(listed));
    ASSERT_EQ(listed->size(), 1u);
    EXPECT_EQ((*listed)[0].id, "job_v6");
    ASSERT_TRUE(ok(store->mark_results_expired("job_v6", finished_at + 5)));
    EXPECT_TRUE(store->list_jobs_with_results(finished_at + 1, 10)->empty());
    RawDb raw(path_);
    EXPECT_EQ(raw.integer("SELECT MAX(version) FROM schema_migrations"), 7);
    EXPECT_NE(raw.last_column(plan_query).find("USING INDEX jobs_results_kept"), std::string::npos);
  }
  // Without retention the index goes (no finish pays for it); the listing still answers.
  auto store = open_store();
  ASSERT_TRUE(store);
  RawDb raw(path_);
  EXPECT_EQ(raw.integer("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'jobs_results_kept'"), 0);
  EXPECT_EQ(raw.last_column(plan_query).find("jobs_results_kept"), std::string::npos);
  auto listed = store->list_jobs_with_results(finished_at + 100, 10);
  ASSERT_TRUE(ok(listed));
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, "job_v6_later");
}

TEST_F(SqliteStoreTest, ChecksUseNoInListsAndStillRefuseBadValues) {
  auto store = open_store();
  ASSERT_TRUE(store);
  auto user = store->create_user({.email = "checks@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(store->grant(user->id, credits(5), "seed")));
  ASSERT_TRUE(ok(store->create_job({.id = "job_c",
                                    .user_id = user->id,
                                    .callback_url = "https://example.com/hook",
                                    .reserve = credits(2)})));
  ASSERT_TRUE(ok(store->finish_job("job_c", {.status = JobStatus::kFailed})));

  RawDb raw(path_);
  // An IN list of three or more constants in a CHECK costs an ephemeral index per write.
  EXPECT_EQ(raw.last_column("SELECT name FROM sqlite_schema WHERE type = 'table' AND "
                            "sql LIKE '%CHECK (%IN (''%'"),
            "");
  auto refused = [&](const std::string& sql) {
    return (raw.exec(sql) & 0xff) == SQLITE_CONSTRAINT;
  };
  EXPECT_TRUE(refused("UPDATE holds SET state = 'lost'"));
  EXPECT_TRUE(refused("UPDATE ledger SET kind = 'gift' WHERE kind = 'grant'"));
  EXPECT_TRUE(refused("UPDATE ledger SET kind = 'grant' WHERE kind = 'refund'"));  // has a hold
  EXPECT_TRUE(refused("UPDATE ledger SET kind = 'reserve', hold_id = NULL WHERE kind = 'grant'"));
  EXPECT_TRUE(refused("UPDATE jobs SET status = 'expired', finished_at_ms = NULL"));
  EXPECT_TRUE(refused("UPDATE deliveries SET state = 'maybe'"));
  EXPECT_EQ(raw.exec("UPDATE deliveries SET state = 'failed'"), SQLITE_OK);
  EXPECT_EQ(raw.last_column("PRAGMA integrity_check"), "ok\n");
  expect_clean_ledger(*store);
}

TEST_F(SqliteStoreTest, MigratingAVersionFiveFileRewritesItsChecks) {
  {
    auto store = open_store();
    ASSERT_TRUE(store);
  }
  {
    // Put back migration 1's IN-list CHECK on holds, as a version-5 binary left it (and take
    // migration 7 out again).
    RawDb raw(path_);
    ASSERT_EQ(raw.exec("DROP INDEX IF EXISTS jobs_results_kept; "
                       "ALTER TABLE jobs DROP COLUMN results_expired_at_ms"),
              SQLITE_OK);
    std::int64_t version = raw.integer("PRAGMA schema_version");
    ASSERT_EQ(raw.exec("PRAGMA writable_schema = ON; "
                       "UPDATE sqlite_schema SET sql = replace(sql, "
                       "'CHECK (state = ''open'' OR state = ''settled'' OR state = ''refunded'')', "
                       "'CHECK (state IN (''open'', ''settled'', ''refunded''))') "
                       "WHERE name = 'holds'; "
                       "PRAGMA schema_version = " +
                       std::to_string(version + 1) +
                       "; PRAGMA writable_schema = OFF; "
                       "DELETE FROM schema_migrations WHERE version >= 6"),
              SQLITE_OK);
    EXPECT_NE(raw.last_column("SELECT sql FROM sqlite_schema WHERE name = 'holds'")
                  .find("state IN ('open'"),
              std::string::npos);
  }
  auto store = open_store();
  ASSERT_TRUE(store);
  RawDb raw(path_);
  EXPECT_EQ(raw.integer("SELECT MAX(version) FROM schema_migrations"),
            SqliteStore::latest_schema_version());
  std::string holds = raw.last_column("SELECT sql FROM sqlite_schema WHERE name = 'holds'");
  EXPECT_EQ(holds.find(" IN ("), std::string::npos) << holds;
  EXPECT_NE(holds.find("state = 'open' OR state = 'settled'"), std::string::npos) << holds;
  EXPECT_EQ(raw.last_column("PRAGMA integrity_check"), "ok\n");
  auto user = store->create_user({.email = "v5@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(store->grant(user->id, credits(1), "seed")));
  ASSERT_TRUE(ok(store->create_job({.id = "job_v5", .user_id = user->id, .reserve = credits(1)})));
  EXPECT_EQ((raw.exec("UPDATE holds SET state = 'lost'") & 0xff), SQLITE_CONSTRAINT);
  expect_clean_ledger(*store);
}

TEST_F(SqliteStoreTest, TheDueClaimReadsOnlyThePendingIndex) {
  auto store = open_store(1);
  ASSERT_TRUE(store);
  RawDb raw(path_);
  std::string plan = raw.last_column(
      "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE state = 'pending' AND "
      "next_attempt_at_ms <= 5 ORDER BY next_attempt_at_ms, rowid LIMIT 10");
  EXPECT_NE(plan.find("USING INDEX deliveries_due"), std::string::npos) << plan;
  EXPECT_EQ(plan.find("TEMP B-TREE"), std::string::npos) << plan;  // no sort step
  plan = raw.last_column(
      "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE job_id = 'j' "
      "ORDER BY created_at_ms, rowid");
  EXPECT_NE(plan.find("USING INDEX deliveries_by_job"), std::string::npos) << plan;
}

TEST_F(SqliteStoreTest, SchemaGuardsDeliveries) {
  auto store = open_store();
  ASSERT_TRUE(store);
  auto user = store->create_user({.email = "guardhooks@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  ASSERT_TRUE(ok(store->create_job({.id = "job_gd",
                                    .user_id = user->id,
                                    .kind = "image.generation",
                                    .callback_url = "https://example.com/hook"})));
  ASSERT_TRUE(ok(store->finish_job("job_gd", {.status = JobStatus::kSucceeded})));
  ASSERT_TRUE(ok(
      store->record_delivery_attempt("msg_job_gd", {.at_ms = 1, .status = 500, .retry_at_ms = 2})));

  RawDb raw(path_);
  auto refused = [&](const std::string& sql) {
    return (raw.exec(sql) & 0xff) == SQLITE_CONSTRAINT;
  };
  EXPECT_TRUE(refused("UPDATE deliveries SET state = 'done'"));
  EXPECT_TRUE(refused("UPDATE deliveries SET cycle_attempts = attempts + 1"));
  EXPECT_TRUE(refused("UPDATE deliveries SET last_attempt_at_ms = NULL"));  // attempted
  EXPECT_TRUE(refused("UPDATE users SET webhook_secret = ''"));
  // An attempt number is used once.
  EXPECT_TRUE(
      refused("INSERT INTO delivery_attempts(delivery_id, number, at_ms, duration_ms, status) "
              "VALUES ('msg_job_gd', 1, 0, 0, 0)"));
  EXPECT_EQ(raw.integer("SELECT COUNT(*) FROM delivery_attempts"), 1);
}

TEST_F(SqliteStoreTest, TwoStoresOnOneFileNeverClaimADeliveryTwice) {
  constexpr int kDeliveries = 60;
  constexpr int kThreads = 8;
  auto server = open_store();
  auto cli = open_store(2);
  ASSERT_TRUE(server && cli);
  auto user = server->create_user({.email = "twoclaims@example.com", .password_hash = "h"});
  ASSERT_TRUE(ok(user));
  for (int i = 0; i < kDeliveries; ++i) {
    std::string id = "job_tc_" + std::to_string(i);
    ASSERT_TRUE(ok(server->create_job({.id = id,
                                       .user_id = user->id,
                                       .kind = "image.generation",
                                       .callback_url = "https://example.com/hook"})));
    ASSERT_TRUE(ok(server->finish_job(id, {.status = JobStatus::kSucceeded})));
  }
  const std::int64_t now = clock_.now_ms();
  std::mutex mu;
  std::vector<std::string> claimed, errors;
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Store& store = t % 2 == 0 ? static_cast<Store&>(*server) : *cli;
      start.arrive_and_wait();
      for (;;) {
        auto batch = store.claim_due_deliveries(now, 60'000, 2);
        std::lock_guard lock(mu);
        if (!batch) {
          errors.push_back(batch.error().message);
          return;
        }
        if (batch->empty()) return;
        for (const Delivery& delivery : *batch) claimed.push_back(delivery.id);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_TRUE(errors.empty()) << joined(errors);
  std::sort(claimed.begin(), claimed.end());
  EXPECT_EQ(std::adjacent_find(claimed.begin(), claimed.end()), claimed.end());
  EXPECT_EQ(claimed.size(), static_cast<std::size_t>(kDeliveries));
}

TEST(JobStatusText, RoundTrips) {
  for (JobStatus status : {JobStatus::kQueued, JobStatus::kRunning, JobStatus::kSucceeded,
                           JobStatus::kFailed, JobStatus::kCanceled, JobStatus::kExpired}) {
    EXPECT_EQ(jobs::job_status_from_string(jobs::to_string(status)), status);
  }
  EXPECT_EQ(jobs::to_string(JobStatus::kCanceled), "canceled");
  EXPECT_EQ(jobs::to_string(JobStatus::kSucceeded), "succeeded");
  EXPECT_FALSE(jobs::job_status_from_string("Queued").has_value());
  EXPECT_FALSE(jobs::job_status_from_string("").has_value());
  EXPECT_FALSE(jobs::is_final(JobStatus::kRunning));
  EXPECT_TRUE(jobs::is_final(JobStatus::kExpired));
}

TEST(DeliveryStateText, NamesEachState) {
  EXPECT_EQ(to_string(DeliveryState::kPending), "pending");
  EXPECT_EQ(to_string(DeliveryState::kSucceeded), "succeeded");
  EXPECT_EQ(to_string(DeliveryState::kFailed), "failed");
}

TEST_F(SqliteStoreTest, OpenValidatesSettingsAndCreatesDirectories) {
  EXPECT_EQ(code(SqliteStore::open({.path = ""}, clock_)), "kInvalidArgument");
  EXPECT_EQ(code(SqliteStore::open({.path = ":memory:"}, clock_)), "kInvalidArgument");
  EXPECT_EQ(code(SqliteStore::open({.path = path_, .pool_size = 0}, clock_)), "kInvalidArgument");
  auto store = open_store(1);
  ASSERT_TRUE(store);
  EXPECT_TRUE(fs::exists(path_));
  EXPECT_TRUE(ok(store->ping()));

  // A file where a directory is needed cannot be opened, and says so without throwing.
  std::string blocked = (dir_.path() / "nested" / "dirs" / "imagegate.db" / "x.db").string();
  EXPECT_EQ(code(SqliteStore::open({.path = blocked}, clock_)), "kUnavailable");
}

}  // namespace
}  // namespace ig::store
