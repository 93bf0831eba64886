#include "store/memory/memory_store.h"

#include <algorithm>
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
    if (user->balance + amount > kMaxMicros) {
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

StoreResult<Hold> MemoryStore::settle(std::int64_t hold_id, Micros actual) {
  std::lock_guard lock(mu_);
  Hold* hold = hold_locked(hold_id);
  if (hold == nullptr) return err(StoreErrc::kNotFound, id_text("no hold", hold_id));
  if (hold->state != HoldState::kOpen) {
    return err(StoreErrc::kAlreadyResolved, id_text("already resolved: hold", hold_id));
  }
  if (actual < 0 || actual > hold->amount) {
    return err(StoreErrc::kInvalidArgument, "settle amount outside 0..held");
  }
  User& user = users_.at(hold->user_id);
  Micros returned = hold->amount - actual;
  user.reserved -= hold->amount;
  user.balance += returned;
  hold->state = HoldState::kSettled;
  hold->charged = actual;
  hold->resolved_at = clock_.now_s();
  append_locked(user.id, LedgerKind::kSettle, returned, user.balance, hold->id, hold->job_id,
                "charged " + format_credits(actual));
  return *hold;
}

StoreResult<Hold> MemoryStore::refund(std::int64_t hold_id, std::string_view note) {
  std::lock_guard lock(mu_);
  Hold* hold = hold_locked(hold_id);
  if (hold == nullptr) return err(StoreErrc::kNotFound, id_text("no hold", hold_id));
  if (hold->state != HoldState::kOpen) {
    return err(StoreErrc::kAlreadyResolved, id_text("already resolved: hold", hold_id));
  }
  User& user = users_.at(hold->user_id);
  user.reserved -= hold->amount;
  user.balance += hold->amount;
  hold->state = HoldState::kRefunded;
  hold->charged = 0;
  hold->resolved_at = clock_.now_s();
  append_locked(user.id, LedgerKind::kRefund, hold->amount, user.balance, hold->id, hold->job_id,
                note);
  return *hold;
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
  return report;
}

}  // namespace ig::store
