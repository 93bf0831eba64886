#include "store/memory/memory_store.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace ig::store {

namespace {

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

std::string id_text(std::string_view what, std::int64_t id) {
  return std::string(what) + " " + std::to_string(id);
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

MemoryStore::MemoryStore(const Clock& clock) : clock_(clock) {}

StoreResult<void> MemoryStore::ping() { return {}; }

User* MemoryStore::user_locked(std::int64_t user_id) {
  auto it = users_.find(user_id);
  return it == users_.end() ? nullptr : &it->second;
}

Hold* MemoryStore::hold_locked(std::int64_t hold_id) {
  auto it = holds_.find(hold_id);
  return it == holds_.end() ? nullptr : &it->second;
}

LedgerEntry& MemoryStore::append_locked(std::int64_t user_id, LedgerKind kind, Micros amount,
                                        Micros balance_after, std::optional<std::int64_t> hold_id,
                                        std::string_view job_id, std::string_view note) {
  LedgerEntry entry;
  entry.id = static_cast<std::int64_t>(ledger_.size()) + 1;
  entry.user_id = user_id;
  entry.kind = kind;
  entry.amount = amount;
  entry.balance_after = balance_after;
  entry.hold_id = hold_id;
  entry.job_id = std::string(job_id);
  entry.note = std::string(note);
  entry.created_at = clock_.now_s();
  ledger_.push_back(std::move(entry));
  return ledger_.back();
}

StoreResult<Hold> MemoryStore::reserve_locked(std::int64_t user_id, Micros amount,
                                              std::string_view job_id) {
  User* user = user_locked(user_id);
  if (user == nullptr) return err(StoreErrc::kNotFound, id_text("no user", user_id));
  if (user->balance < amount) {
    return err(StoreErrc::kInsufficientCredits, "balance below the amount to reserve");
  }
  user->balance -= amount;
  user->reserved += amount;
  Hold hold;
  hold.id = next_hold_id_++;
  hold.user_id = user_id;
  hold.amount = amount;
  hold.job_id = std::string(job_id);
  hold.created_at = clock_.now_s();
  holds_.emplace(hold.id, hold);
  append_locked(user_id, LedgerKind::kReserve, -amount, user->balance, hold.id, job_id, "");
  return hold;
}

StoreResult<Hold*> MemoryStore::open_hold_locked(std::int64_t hold_id) {
  Hold* hold = hold_locked(hold_id);
  if (hold == nullptr) return err(StoreErrc::kNotFound, id_text("no hold", hold_id));
  if (hold->state != HoldState::kOpen) {
    return err(StoreErrc::kAlreadyResolved, id_text("already resolved: hold", hold_id));
  }
  return hold;
}

Hold& MemoryStore::resolve_locked(Hold& hold, HoldState to, Micros charge, std::string_view note) {
  User& user = users_.at(hold.user_id);
  hold.state = to;
  hold.charged = to == HoldState::kSettled ? charge : 0;
  hold.resolved_at = clock_.now_s();
  Micros returned = hold.amount - hold.charged;
  user.reserved -= hold.amount;
  user.balance += returned;
  append_locked(user.id, to == HoldState::kSettled ? LedgerKind::kSettle : LedgerKind::kRefund,
                returned, user.balance, hold.id, hold.job_id, note);
  return hold;
}

StoreResult<void> MemoryStore::refuse_job_hold_locked(std::int64_t hold_id) const {
  auto it = job_of_hold_.find(hold_id);
  if (it == job_of_hold_.end()) return {};
  return err(StoreErrc::kConflict, id_text("hold", hold_id) + " belongs to job " + it->second +
                                       ": resolve it with finish_job");
}

// --- users ---

StoreResult<User> MemoryStore::create_user(const NewUser& user) {
  std::string email = lower_ascii(user.email);
  if (email.empty()) return err(StoreErrc::kInvalidArgument, "email must not be empty");
  std::lock_guard lock(mu_);
  if (by_email_.contains(email)) return err(StoreErrc::kConflict, "email already registered");
  User created;
  created.id = next_user_id_++;
  created.email = email;
  created.password_hash = user.password_hash;
  created.is_admin = user.is_admin;
  created.created_at = clock_.now_s();
  users_.emplace(created.id, created);
  by_email_.emplace(std::move(email), created.id);
  return created;
}

StoreResult<User> MemoryStore::find_user(std::int64_t user_id) {
  std::lock_guard lock(mu_);
  const User* user = user_locked(user_id);
  if (user == nullptr) return err(StoreErrc::kNotFound, id_text("no user", user_id));
  return *user;
}

StoreResult<User> MemoryStore::find_user_by_email(std::string_view email) {
  std::lock_guard lock(mu_);
  auto it = by_email_.find(lower_ascii(email));
  if (it == by_email_.end()) return err(StoreErrc::kNotFound, "no user with that email");
  return users_.at(it->second);
}

StoreResult<std::vector<User>> MemoryStore::list_users() {
  std::lock_guard lock(mu_);
  std::vector<User> out;
  out.reserve(users_.size());
  for (const auto& [id, user] : users_) out.push_back(user);
  return out;
}

StoreResult<std::int64_t> MemoryStore::count_users() {
  std::lock_guard lock(mu_);
  return static_cast<std::int64_t>(users_.size());
}

StoreResult<void> MemoryStore::set_user_disabled(std::int64_t user_id, bool disabled) {
  std::lock_guard lock(mu_);
  User* user = user_locked(user_id);
  if (user == nullptr) return err(StoreErrc::kNotFound, id_text("no user", user_id));
  user->disabled = disabled;
  ++auth_version_;
  return {};
}

// --- API keys ---

StoreResult<ApiKey> MemoryStore::create_api_key(const NewApiKey& key) {
  std::lock_guard lock(mu_);
  if (user_locked(key.user_id) == nullptr) {
    return err(StoreErrc::kNotFound, id_text("no user", key.user_id));
  }
  if (by_hash_.contains(key.hash)) return err(StoreErrc::kConflict, "API key hash already exists");
  ApiKey created;
  created.id = next_key_id_++;
  created.user_id = key.user_id;
  created.name = key.name;
  created.prefix = key.prefix;
  created.last4 = key.last4;
  created.hash = key.hash;
  created.created_at = clock_.now_s();
  created.profile = key.profile;
  keys_.emplace(created.id, created);
  by_hash_.emplace(created.hash, created.id);
  return created;
}

StoreResult<std::vector<ApiKey>> MemoryStore::list_api_keys(std::int64_t user_id) {
  std::lock_guard lock(mu_);
  std::vector<ApiKey> out;
  for (const auto& [id, key] : keys_) {
    if (key.user_id == user_id && !key.deleted) out.push_back(key);
  }
  return out;
}

StoreResult<std::vector<ApiKey>> MemoryStore::find_api_keys_by_prefix(std::string_view prefix) {
  std::lock_guard lock(mu_);
  std::vector<ApiKey> out;
  for (const auto& [id, key] : keys_) {
    if (key.prefix == prefix && !key.deleted) out.push_back(key);
  }
  return out;
}

StoreResult<void> MemoryStore::revoke_api_key(std::int64_t key_id) {
  std::lock_guard lock(mu_);
  auto it = keys_.find(key_id);
  if (it == keys_.end()) return err(StoreErrc::kNotFound, id_text("no API key", key_id));
  it->second.deleted = true;
  ++auth_version_;
  return {};
}

StoreResult<AuthRecord> MemoryStore::find_auth_by_key_hash(std::string_view hash) {
  std::lock_guard lock(mu_);
  auto it = by_hash_.find(std::string(hash));
  if (it == by_hash_.end()) return err(StoreErrc::kNotFound, "no API key with that hash");
  AuthRecord record;
  record.key = keys_.at(it->second);
  const User& user = users_.at(record.key.user_id);
  record.email = user.email;
  record.user_disabled = user.disabled;
  record.user_is_admin = user.is_admin;
  return record;
}

StoreResult<void> MemoryStore::touch_api_keys(
    const std::vector<std::pair<std::int64_t, std::int64_t>>& key_last_used) {
  std::lock_guard lock(mu_);
  for (const auto& [key_id, used_at] : key_last_used) {
    auto it = keys_.find(key_id);
    if (it == keys_.end()) continue;  // unknown ids are ignored, as in SQL's UPDATE
    it->second.last_used_at = std::max(it->second.last_used_at.value_or(0), used_at);
  }
  return {};
}

StoreResult<std::int64_t> MemoryStore::auth_version() {
  std::lock_guard lock(mu_);
  return auth_version_;
}

// --- credit ledger ---

StoreResult<LedgerEntry> MemoryStore::grant(std::int64_t user_id, Micros amount,
                                            std::string_view note) {
  if (amount == 0) return err(StoreErrc::kInvalidArgument, "grant amount must not be zero");
  if (amount > kMaxMicros || amount < -kMaxMicros) {
    return err(StoreErrc::kInvalidArgument, "grant amount too large");
  }
  std::lock_guard lock(mu_);
  User* user = user_locked(user_id);
  if (user == nullptr) return err(StoreErrc::kNotFound, id_text("no user", user_id));
  if (amount > 0) {
    // Open holds come back on a refund: they count against the maximum too.
    if (user->balance + user->reserved + amount > kMaxMicros) {
      return err(StoreErrc::kInvalidArgument, "balance would exceed the maximum");
    }
    user->balance += amount;
    return append_locked(user_id, LedgerKind::kGrant, amount, user->balance, std::nullopt, "",
                         note);
  }
  Micros applied = std::max(amount, -user->balance);
  user->balance += applied;
  return append_locked(user_id, LedgerKind::kAdjust, applied, user->balance, std::nullopt, "",
                       note);
}

StoreResult<Hold> MemoryStore::reserve(std::int64_t user_id, Micros amount,
                                       std::string_view job_id) {
  if (amount <= 0) return err(StoreErrc::kInvalidArgument, "reserve amount must be positive");
  std::lock_guard lock(mu_);
  return reserve_locked(user_id, amount, job_id);
}

StoreResult<Hold> MemoryStore::settle(std::int64_t hold_id, Micros actual) {
  std::lock_guard lock(mu_);
  auto hold = open_hold_locked(hold_id);
  if (!hold) return std::unexpected(hold.error());
  if (auto mine = refuse_job_hold_locked(hold_id); !mine) return std::unexpected(mine.error());
  if (actual < 0 || actual > (*hold)->amount) {
    return err(StoreErrc::kInvalidArgument, "settle amount outside 0..held");
  }
  return resolve_locked(**hold, HoldState::kSettled, actual, "charged " + format_credits(actual));
}

StoreResult<Hold> MemoryStore::refund(std::int64_t hold_id, std::string_view note) {
  std::lock_guard lock(mu_);
  auto hold = open_hold_locked(hold_id);
  if (!hold) return std::unexpected(hold.error());
  if (auto mine = refuse_job_hold_locked(hold_id); !mine) return std::unexpected(mine.error());
  return resolve_locked(**hold, HoldState::kRefunded, 0, note);
}

StoreResult<Hold> MemoryStore::find_hold(std::int64_t hold_id) {
  std::lock_guard lock(mu_);
  const Hold* hold = hold_locked(hold_id);
  if (hold == nullptr) return err(StoreErrc::kNotFound, id_text("no hold", hold_id));
  return *hold;
}

StoreResult<std::vector<Hold>> MemoryStore::list_open_holds() {
  std::lock_guard lock(mu_);
  std::vector<Hold> out;
  for (const auto& [id, hold] : holds_) {
    if (hold.state == HoldState::kOpen) out.push_back(hold);
  }
  return out;
}

StoreResult<std::vector<LedgerEntry>> MemoryStore::list_ledger(std::int64_t user_id, int limit) {
  if (limit <= 0) return err(StoreErrc::kInvalidArgument, "limit must be positive");
  std::lock_guard lock(mu_);
  if (user_locked(user_id) == nullptr) {
    return err(StoreErrc::kNotFound, id_text("no user", user_id));
  }
  std::vector<LedgerEntry> out;
  for (auto it = ledger_.rbegin(); it != ledger_.rend() && std::cmp_less(out.size(), limit); ++it) {
    if (it->user_id == user_id) out.push_back(*it);
  }
  return out;
}

StoreResult<LedgerCheckReport> MemoryStore::check_ledger() {
  std::lock_guard lock(mu_);
  LedgerCheckReport report;
  report.users_checked = static_cast<std::int64_t>(users_.size());
  report.ledger_rows_checked = static_cast<std::int64_t>(ledger_.size());
  report.holds_checked = static_cast<std::int64_t>(holds_.size());
  report.jobs_checked = static_cast<std::int64_t>(jobs_.size());
  auto violation = [&](std::string line) { report.violations.push_back(std::move(line)); };

  struct HoldRows {
    std::int64_t reserve_rows = 0, settle_rows = 0, refund_rows = 0, foreign_rows = 0;
    Micros reserve_sum = 0, settle_sum = 0, refund_sum = 0;
  };
  std::map<std::int64_t, Micros> ledger_sum;  // by user
  std::map<std::int64_t, Micros> open_sum;    // by user
  std::map<std::int64_t, HoldRows> hold_rows;
  for (const LedgerEntry& row : ledger_) {
    Micros running = (ledger_sum[row.user_id] += row.amount);
    if (row.balance_after != running) {
      violation("ledger row " + std::to_string(row.id) + " (user " + std::to_string(row.user_id) +
                "): balance_after " + std::to_string(row.balance_after) + " != running sum " +
                std::to_string(running));
    }
    if (!row.hold_id) continue;
    HoldRows& rows = hold_rows[*row.hold_id];
    auto hold = holds_.find(*row.hold_id);
    if (hold == holds_.end() || hold->second.user_id != row.user_id) ++rows.foreign_rows;
    switch (row.kind) {
      case LedgerKind::kReserve:
        ++rows.reserve_rows;
        rows.reserve_sum += row.amount;
        break;
      case LedgerKind::kSettle:
        ++rows.settle_rows;
        rows.settle_sum += row.amount;
        break;
      case LedgerKind::kRefund:
        ++rows.refund_rows;
        rows.refund_sum += row.amount;
        break;
      default:
        break;
    }
  }
  for (const auto& [id, hold] : holds_) {
    if (hold.state == HoldState::kOpen) {
      ++report.open_holds;
      open_sum[hold.user_id] += hold.amount;
    }
  }
  for (const auto& [id, user] : users_) {
    std::string who = "user " + std::to_string(id);
    if (user.balance < 0) violation(who + ": negative balance " + std::to_string(user.balance));
    if (user.reserved < 0) {
      violation(who + ": negative reserved " + std::to_string(user.reserved));
    }
    Micros sum = ledger_sum[id];
    if (user.balance != sum) {
      violation(who + ": balance " + std::to_string(user.balance) + " != sum of ledger rows " +
                std::to_string(sum));
    }
    Micros held = open_sum[id];
    if (user.reserved != held) {
      violation(who + ": reserved " + std::to_string(user.reserved) + " != sum of open holds " +
                std::to_string(held));
    }
  }
  for (const auto& [id, hold] : holds_) {
    const HoldRows& rows = hold_rows[id];
    std::string who =
        "hold " + std::to_string(id) + " (" + std::string(to_string(hold.state)) + ")";
    if (rows.reserve_rows != 1 || rows.reserve_sum != -hold.amount) {
      violation(who + ": " + std::to_string(rows.reserve_rows) + " reserve rows summing to " +
                std::to_string(rows.reserve_sum) + ", expected one of " +
                std::to_string(-hold.amount));
    }
    std::int64_t resolutions = rows.settle_rows + rows.refund_rows;
    std::int64_t expected = hold.state == HoldState::kOpen ? 0 : 1;
    if (resolutions != expected) {
      violation(who + ": " + std::to_string(resolutions) + " settle/refund rows, expected " +
                std::to_string(expected));
    } else if (hold.state == HoldState::kSettled &&
               (rows.settle_rows != 1 || rows.settle_sum != hold.amount - hold.charged)) {
      violation(who + ": settle row missing or returns " + std::to_string(rows.settle_sum) +
                ", expected " + std::to_string(hold.amount - hold.charged));
    } else if (hold.state == HoldState::kRefunded &&
               (rows.refund_rows != 1 || rows.refund_sum != hold.amount)) {
      violation(who + ": refund row missing or returns " + std::to_string(rows.refund_sum) +
                ", expected " + std::to_string(hold.amount));
    }
    if (hold.charged < 0 || hold.charged > hold.amount ||
        (hold.state != HoldState::kSettled && hold.charged != 0)) {
      violation(who + ": charged " + std::to_string(hold.charged) + " inconsistent with amount " +
                std::to_string(hold.amount));
    }
    if (rows.foreign_rows != 0) {
      violation(who + ": " + std::to_string(rows.foreign_rows) +
                " ledger rows belong to another user");
    }
  }

  // A job's hold is open exactly while the job runs; the final state decides how it closed.
  std::vector<const JobRow*> by_seq;
  for (const auto& [id, row] : jobs_) by_seq.push_back(&row);
  std::sort(by_seq.begin(), by_seq.end(),
            [](const JobRow* a, const JobRow* b) { return a->seq < b->seq; });
  auto n = [](std::int64_t v) { return std::to_string(v); };
  for (const JobRow* row : by_seq) {
    const jobs::Job& job = row->job;
    std::string who = "job " + job.id + " (" + std::string(jobs::to_string(job.status)) + ")";
    if (job.status != jobs::JobStatus::kSucceeded && job.charged != 0) {
      violation(who + ": charged " + n(job.charged) + " without succeeding");
    }
    if (!job.hold_id) {
      if (job.reserved != 0) violation(who + ": reserved " + n(job.reserved) + " without a hold");
      if (job.charged != 0) violation(who + ": charged " + n(job.charged) + " without a hold");
      continue;
    }
    std::string hold_name = "hold " + n(*job.hold_id);
    auto it = holds_.find(*job.hold_id);
    if (it == holds_.end()) {
      violation(who + ": " + hold_name + " does not exist");
      continue;
    }
    const Hold& hold = it->second;
    auto owner = job_of_hold_.find(hold.id);
    if (owner == job_of_hold_.end() || owner->second != job.id) {
      violation(who + ": " + hold_name + " is not linked back to the job");
    }
    if (hold.user_id != job.user_id) {
      violation(who + ": " + hold_name + " belongs to user " + n(hold.user_id) + ", not " +
                n(job.user_id));
    }
    if (hold.job_id != job.id) {
      violation(who + ": " + hold_name + " is tagged with job '" + hold.job_id + "'");
    }
    if (hold.amount != job.reserved) {
      violation(who + ": reserved " + n(job.reserved) + " != " + hold_name + " amount " +
                n(hold.amount));
    }
    HoldState expected = !jobs::is_final(job.status)                 ? HoldState::kOpen
                         : job.status == jobs::JobStatus::kSucceeded ? HoldState::kSettled
                                                                     : HoldState::kRefunded;
    if (hold.state != expected) {
      violation(who + ": " + hold_name + " is " + std::string(to_string(hold.state)) +
                ", expected " + std::string(to_string(expected)));
    } else if (expected == HoldState::kSettled && hold.charged != job.charged) {
      violation(who + ": charged " + n(job.charged) + " != " + hold_name + " charged " +
                n(hold.charged));
    }
  }
  return report;
}

// --- jobs ---

StoreResult<jobs::Job> MemoryStore::create_job(const jobs::NewJob& job) {
  if (job.id.empty()) return err(StoreErrc::kInvalidArgument, "job id must not be empty");
  if (job.reserve < 0) return err(StoreErrc::kInvalidArgument, "job reserve must not be negative");
  std::lock_guard lock(mu_);
  if (user_locked(job.user_id) == nullptr) {
    return err(StoreErrc::kNotFound, id_text("no user", job.user_id));
  }
  if (jobs_.contains(job.id)) return err(StoreErrc::kConflict, "job " + job.id + " already exists");
  jobs::Job created;
  if (job.reserve > 0) {
    auto hold = reserve_locked(job.user_id, job.reserve, job.id);
    if (!hold) return std::unexpected(hold.error());
    created.hold_id = hold->id;
    job_of_hold_.emplace(hold->id, job.id);
  }
  created.id = job.id;
  created.user_id = job.user_id;
  created.key_id = job.key_id;
  created.kind = job.kind;
  created.model = job.model;
  created.dialect = job.dialect;
  created.params_json = job.params_json;
  created.callback_url = job.callback_url;
  created.reserved = job.reserve;
  created.created_at_ms = clock_.now_ms();
  created.updated_at_ms = created.created_at_ms;
  if (job.start_running) {
    created.status = jobs::JobStatus::kRunning;
    created.started_at_ms = created.created_at_ms;
  }
  jobs_.emplace(created.id, JobRow{created, next_job_seq_++});
  return created;
}

StoreResult<jobs::Job> MemoryStore::find_job(std::string_view job_id) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return err(StoreErrc::kNotFound, "no job " + std::string(job_id));
  return it->second.job;
}

StoreResult<jobs::Job> MemoryStore::transition_job(std::string_view job_id, jobs::JobStatus from,
                                                   jobs::JobStatus to,
                                                   const jobs::JobUpdate& update) {
  if (jobs::is_final(to)) {
    return err(StoreErrc::kInvalidArgument, "a job reaches a final state only via finish_job");
  }
  if (jobs::is_final(from)) {
    return err(StoreErrc::kInvalidArgument, "a job in a final state never changes");
  }
  std::lock_guard lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return err(StoreErrc::kNotFound, "no job " + std::string(job_id));
  jobs::Job& job = it->second.job;
  if (job.status != from) {
    return err(StoreErrc::kConflict, "job " + job.id + " is " +
                                         std::string(jobs::to_string(job.status)) + ", not " +
                                         std::string(jobs::to_string(from)));
  }
  std::int64_t now_ms = clock_.now_ms();
  job.status = to;
  if (update.channel) job.channel = *update.channel;
  if (update.upstream_task_id) job.upstream_task_id = *update.upstream_task_id;
  if (update.increment_attempts) ++job.attempts;
  if (update.mark_started && !job.started_at_ms) job.started_at_ms = now_ms;
  job.updated_at_ms = now_ms;
  return job;
}

StoreResult<jobs::Job> MemoryStore::finish_job(std::string_view job_id,
                                               const jobs::JobFinish& finish) {
  if (!jobs::is_final(finish.status)) {
    return err(StoreErrc::kInvalidArgument, "finish_job needs a final status");
  }
  if (finish.charge < 0) return err(StoreErrc::kInvalidArgument, "charge must not be negative");
  const bool succeeded = finish.status == jobs::JobStatus::kSucceeded;
  const Micros charge = succeeded ? finish.charge : 0;
  std::lock_guard lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return err(StoreErrc::kNotFound, "no job " + std::string(job_id));
  jobs::Job& job = it->second.job;
  if (jobs::is_final(job.status)) {
    return err(StoreErrc::kAlreadyResolved,
               "job " + job.id + " already " + std::string(jobs::to_string(job.status)));
  }
  if (finish.only_from && job.status != *finish.only_from) {
    return err(StoreErrc::kConflict,
               "job " + job.id + " is " + std::string(jobs::to_string(job.status)));
  }
  if (charge > job.reserved) {
    return err(StoreErrc::kInvalidArgument,
               "charge above the job's reserve of " + format_credits(job.reserved));
  }
  if (job.hold_id) {
    auto hold = open_hold_locked(*job.hold_id);
    if (!hold) {
      if (hold.error().code != StoreErrc::kAlreadyResolved) return std::unexpected(hold.error());
      return err(StoreErrc::kUnavailable,
                 "job " + job.id + " is unfinished but its " + hold.error().message);
    }
    resolve_locked(**hold, succeeded ? HoldState::kSettled : HoldState::kRefunded, charge,
                   finish_note(job.id, finish, charge));
  }
  std::int64_t now_ms = clock_.now_ms();
  job.status = finish.status;
  job.charged = charge;
  job.result_json = finish.result_json;
  job.error_code = finish.error_code;
  job.error_message = finish.error_message;
  if (finish.channel) job.channel = *finish.channel;
  job.finished_at_ms = now_ms;
  job.updated_at_ms = now_ms;
  if (!job.callback_url.empty()) {
    DeliveryRow row;
    row.delivery.id = "msg_" + job.id;
    row.delivery.job_id = job.id;
    row.delivery.user_id = job.user_id;
    row.delivery.url = job.callback_url;
    row.delivery.next_attempt_at_ms = now_ms;
    row.delivery.created_at_ms = now_ms;
    row.seq = next_delivery_seq_++;
    // try_emplace, like SQLite's ON CONFLICT DO NOTHING: a stray row must not block the finish.
    deliveries_.try_emplace(row.delivery.id, std::move(row));
  }
  return job;
}

StoreResult<std::vector<jobs::Job>> MemoryStore::list_unfinished_jobs() {
  std::lock_guard lock(mu_);
  std::vector<const JobRow*> rows;
  for (const auto& [id, row] : jobs_) {
    if (!jobs::is_final(row.job.status)) rows.push_back(&row);
  }
  std::sort(rows.begin(), rows.end(), [](const JobRow* a, const JobRow* b) {
    return std::pair(a->job.created_at_ms, a->seq) < std::pair(b->job.created_at_ms, b->seq);
  });
  std::vector<jobs::Job> out;
  out.reserve(rows.size());
  for (const JobRow* row : rows) out.push_back(row->job);
  return out;
}

StoreResult<std::vector<jobs::Job>> MemoryStore::list_jobs(std::int64_t user_id,
                                                           std::optional<jobs::JobStatus> status,
                                                           int limit,
                                                           std::optional<std::string> after_id) {
  if (limit < 1 || limit > kMaxJobsPage) {
    return err(StoreErrc::kInvalidArgument,
               "limit must be within 1.." + std::to_string(kMaxJobsPage));
  }
  std::lock_guard lock(mu_);
  if (user_locked(user_id) == nullptr) {
    return err(StoreErrc::kNotFound, id_text("no user", user_id));
  }
  // Newest first; a job's position is (created_at_ms, seq), the cursor excludes it and above.
  using Position = std::pair<std::int64_t, std::int64_t>;
  std::optional<Position> cursor;
  if (after_id) {
    auto it = jobs_.find(*after_id);
    if (it == jobs_.end() || it->second.job.user_id != user_id) {
      return err(StoreErrc::kNotFound, "no job " + *after_id + " for this user");
    }
    cursor = Position(it->second.job.created_at_ms, it->second.seq);
  }
  std::vector<const JobRow*> rows;
  for (const auto& [id, row] : jobs_) {
    if (row.job.user_id != user_id) continue;
    if (status && row.job.status != *status) continue;
    if (cursor && !(Position(row.job.created_at_ms, row.seq) < *cursor)) continue;
    rows.push_back(&row);
  }
  std::sort(rows.begin(), rows.end(), [](const JobRow* a, const JobRow* b) {
    return std::pair(a->job.created_at_ms, a->seq) > std::pair(b->job.created_at_ms, b->seq);
  });
  if (std::cmp_greater(rows.size(), limit)) rows.resize(static_cast<std::size_t>(limit));
  std::vector<jobs::Job> out;
  out.reserve(rows.size());
  for (const JobRow* row : rows) out.push_back(row->job);
  return out;
}

StoreResult<std::vector<jobs::Job>> MemoryStore::list_jobs_with_results(
    std::int64_t finished_before_ms, int limit) {
  if (limit < 1 || limit > kMaxJobsPage) {
    return err(StoreErrc::kInvalidArgument,
               "limit must be within 1.." + std::to_string(kMaxJobsPage));
  }
  std::lock_guard lock(mu_);
  std::vector<const JobRow*> rows;
  for (const auto& [id, row] : jobs_) {
    const jobs::Job& j = row.job;
    if (j.status != jobs::JobStatus::kSucceeded || j.results_expired_at_ms) continue;
    if (!j.finished_at_ms || *j.finished_at_ms >= finished_before_ms) continue;
    rows.push_back(&row);
  }
  std::sort(rows.begin(), rows.end(), [](const JobRow* a, const JobRow* b) {
    return std::pair(*a->job.finished_at_ms, a->seq) < std::pair(*b->job.finished_at_ms, b->seq);
  });
  if (std::cmp_greater(rows.size(), limit)) rows.resize(static_cast<std::size_t>(limit));
  std::vector<jobs::Job> out;
  out.reserve(rows.size());
  for (const JobRow* row : rows) out.push_back(row->job);
  return out;
}

StoreResult<void> MemoryStore::mark_results_expired(std::string_view job_id, std::int64_t at_ms) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(std::string(job_id));
  if (it == jobs_.end()) return err(StoreErrc::kNotFound, "no job " + std::string(job_id));
  jobs::Job& j = it->second.job;
  if (j.status != jobs::JobStatus::kSucceeded) {
    return err(StoreErrc::kConflict, "job " + std::string(job_id) + " did not succeed");
  }
  if (!j.results_expired_at_ms) j.results_expired_at_ms = at_ms;
  return {};
}

// --- webhooks ---

StoreResult<std::string> MemoryStore::webhook_secret(std::int64_t user_id,
                                                     std::string_view candidate) {
  if (candidate.empty()) {
    return err(StoreErrc::kInvalidArgument, "webhook secret must not be empty");
  }
  std::lock_guard lock(mu_);
  if (user_locked(user_id) == nullptr) {
    return err(StoreErrc::kNotFound, id_text("no user", user_id));
  }
  return webhook_secrets_.try_emplace(user_id, candidate).first->second;
}

StoreResult<void> MemoryStore::set_webhook_secret(std::int64_t user_id, std::string_view secret) {
  if (secret.empty()) return err(StoreErrc::kInvalidArgument, "webhook secret must not be empty");
  std::lock_guard lock(mu_);
  if (user_locked(user_id) == nullptr) {
    return err(StoreErrc::kNotFound, id_text("no user", user_id));
  }
  webhook_secrets_[user_id] = std::string(secret);
  return {};
}

StoreResult<std::vector<Delivery>> MemoryStore::claim_due_deliveries(std::int64_t now_ms,
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
  std::lock_guard lock(mu_);
  std::vector<DeliveryRow*> due;
  for (auto& [id, row] : deliveries_) {
    if (row.delivery.state == DeliveryState::kPending &&
        row.delivery.next_attempt_at_ms <= now_ms) {
      due.push_back(&row);
    }
  }
  std::sort(due.begin(), due.end(), [](const DeliveryRow* a, const DeliveryRow* b) {
    return std::pair(a->delivery.next_attempt_at_ms, a->seq) <
           std::pair(b->delivery.next_attempt_at_ms, b->seq);
  });
  if (std::cmp_greater(due.size(), limit)) due.resize(static_cast<std::size_t>(limit));
  std::vector<Delivery> out;
  out.reserve(due.size());
  for (DeliveryRow* row : due) {
    row->delivery.next_attempt_at_ms = now_ms + lease_ms;
    out.push_back(row->delivery);
  }
  return out;
}

StoreResult<Delivery> MemoryStore::record_delivery_attempt(std::string_view delivery_id,
                                                           const DeliveryOutcome& outcome) {
  std::lock_guard lock(mu_);
  auto it = deliveries_.find(delivery_id);
  if (it == deliveries_.end()) {
    return err(StoreErrc::kNotFound, "no delivery " + std::string(delivery_id));
  }
  Delivery& delivery = it->second.delivery;
  if (delivery.state != DeliveryState::kPending) {
    return err(StoreErrc::kConflict, "delivery " + delivery.id + " is " +
                                         std::string(to_string(delivery.state)) + ", not pending");
  }
  ++delivery.attempts;
  ++delivery.cycle_attempts;
  it->second.attempts.push_back({.delivery_id = delivery.id,
                                 .number = delivery.attempts,
                                 .at_ms = outcome.at_ms,
                                 .duration_ms = outcome.duration_ms,
                                 .status = outcome.status,
                                 .error = outcome.error});
  if (delivery.body.empty()) delivery.body = outcome.body;
  if (outcome.success) {
    delivery.state = DeliveryState::kSucceeded;
  } else if (outcome.retry_at_ms) {
    delivery.next_attempt_at_ms = *outcome.retry_at_ms;
  } else {
    delivery.state = DeliveryState::kFailed;
  }
  delivery.last_attempt_at_ms = outcome.at_ms;
  delivery.last_status = outcome.status;
  delivery.last_error = outcome.error;
  return delivery;
}

StoreResult<std::vector<Delivery>> MemoryStore::list_deliveries(std::string_view job_id) {
  std::lock_guard lock(mu_);
  std::vector<const DeliveryRow*> rows;
  for (const auto& [id, row] : deliveries_) {
    if (row.delivery.job_id == job_id) rows.push_back(&row);
  }
  std::sort(rows.begin(), rows.end(), [](const DeliveryRow* a, const DeliveryRow* b) {
    return std::pair(a->delivery.created_at_ms, a->seq) <
           std::pair(b->delivery.created_at_ms, b->seq);
  });
  std::vector<Delivery> out;
  out.reserve(rows.size());
  for (const DeliveryRow* row : rows) out.push_back(row->delivery);
  return out;
}

StoreResult<std::vector<DeliveryAttempt>> MemoryStore::list_delivery_attempts(
    std::string_view delivery_id) {
  std::lock_guard lock(mu_);
  auto it = deliveries_.find(delivery_id);
  if (it == deliveries_.end()) {
    return err(StoreErrc::kNotFound, "no delivery " + std::string(delivery_id));
  }
  return it->second.attempts;
}

StoreResult<Delivery> MemoryStore::replay_delivery(std::string_view delivery_id,
                                                   std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  auto it = deliveries_.find(delivery_id);
  if (it == deliveries_.end()) {
    return err(StoreErrc::kNotFound, "no delivery " + std::string(delivery_id));
  }
  Delivery& delivery = it->second.delivery;
  delivery.state = DeliveryState::kPending;
  delivery.cycle_attempts = 0;
  delivery.next_attempt_at_ms = now_ms;
  return delivery;
}

}  // namespace ig::store
