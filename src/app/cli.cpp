// The admin CLI: same binary, same config and database as the server, safe to run beside it.

#include <sodium.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <ctime>
#include <iostream>

#include "accounts/api_key.h"
#include "accounts/password.h"
#include "api/account_api.h"
#include "app/app.h"
#include "core/standard_webhooks.h"
#include "core/text.h"

namespace ig::app {
namespace {

// One clear line on stderr and a non-zero exit.
int die(const std::string& message) {
  std::cerr << "imagegate: error: " << message << "\n";
  return 1;
}

std::string format_time(std::optional<std::int64_t> unix_s) {
  if (!unix_s || *unix_s <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(*unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct Context {
  std::optional<std::string> config_path;
  SystemClock clock;
  SodiumRandom random;
  Settings settings;
  std::unique_ptr<store::Store> store;

  Result<void> open() {
    auto s = load_settings(config_path);
    if (!s) return std::unexpected(s.error());
    settings = std::move(*s);
    auto st = open_store(settings, clock);
    if (!st) return std::unexpected(st.error());
    store = std::move(*st);
    return {};
  }

  Result<store::User> user(const std::string& email) {
    auto u = store->find_user_by_email(email);
    if (!u) {
      if (u.error().code == store::StoreErrc::kNotFound) {
        return fail(ErrorCode::kNotFound, "no user with email '" + printable(email) + "'");
      }
      return fail(ErrorCode::kInternal, u.error().message);
    }
    return *u;
  }
};

bool plausible_email(const std::string& email) {
  auto at = email.find('@');
  return email.size() <= 254 && at != std::string::npos && at > 0 && at + 1 < email.size() &&
         email.find_first_of(" \t\r\n") == std::string::npos && is_valid_utf8(email);
}

int cmd_users_add(Context& ctx, const std::string& email, std::optional<std::string> password,
                  bool admin) {
  if (!plausible_email(email)) return die("'" + printable(email) + "' is not an email address");
  if (auto ok = ctx.open(); !ok) return die(ok.error().message);
  const bool generated = !password.has_value();
  if (generated) password = ctx.random.base62(20);
  auto hash = accounts::hash_password(*password);
  if (!hash) return die(hash.error().message);
  auto user = ctx.store->create_user({email, *hash, admin});
  if (!user) {
    if (user.error().code == store::StoreErrc::kConflict) return die("a user with email '" + email + "' already exists");
    return die(user.error().message);
  }
  std::cout << "created " << api::public_user_id(user->id) << " " << user->email
            << (admin ? " (admin)" : "") << "\n";
  if (generated) std::cout << "password: " << *password << "\n";
  return 0;
}

int cmd_users_list(Context& ctx) {
  if (auto ok = ctx.open(); !ok) return die(ok.error().message);
  auto users = ctx.store->list_users();
  if (!users) return die(users.error().message);
  std::printf("%-10s %-32s %-6s %-9s %16s %12s %s\n", "ID", "EMAIL", "ADMIN", "STATUS", "CREDITS",
              "RESERVED", "CREATED");
  for (const auto& u : *users) {
    std::printf("%-10s %-32s %-6s %-9s %16s %12s %s\n", api::public_user_id(u.id).c_str(),
                u.email.c_str(), u.is_admin ? "yes" : "no", u.disabled ? "disabled" : "active",
                format_credits(u.balance).c_str(), format_credits(u.reserved).c_str(),
                format_time(u.created_at).c_str());
  }
  return 0;
}

int cmd_users_disable(Context& ctx, const std::string& email) {
  if (auto ok = ctx.open(); !ok) return die(ok.error().message);
  auto user = ctx.user(email);
  if (!user) return die(user.error().message);
  if (auto r = ctx.store->set_user_disabled(user->id, true); !r) return die(r.error().message);
  std::cout << "disabled " << user->email << "\n";
  return 0;
}

int cmd_keys_create(Context& ctx, const std::string& email, const std::string& name,
                    const std::string& profile) {
  if (name.size() > 200 || !is_valid_utf8(name)) return die("--name must be valid UTF-8, at most 200 bytes");
  if (!profile.empty() && profile != "seed001" && profile != "seed002") {
    return die("--profile must be seed001 or seed002");
  }
  if (auto ok = ctx.open(); !ok) return die(ok.error().message);
  auto user = ctx.user(email);
  if (!user) return die(user.error().message);
  auto key = accounts::generate_api_key(ctx.random);
  auto stored =
      ctx.store->create_api_key({user->id, name, key.prefix, key.last4, key.hash, profile});
  if (!stored) return die(stored.error().message);
  std::cout << key.secret << "\n";  // only the key, so scripts can capture it
  return 0;
}

// Prints the user's webhook signing secret (creating it on first use), or rotates it first.
int cmd_webhooks_secret(Context& ctx, const std::string& email, bool rotate) {
  if (auto ok = ctx.open(); !ok) return die(ok.error().message);
  auto user = ctx.user(email);
  if (!user) return die(user.error().message);
  if (rotate) {
    const std::string fresh = generate_webhook_secret(ctx.random);
    if (auto r = ctx.store->set_webhook_secret(user->id, fresh); !r) return die(r.error().message);
  }
  const std::string candidate = generate_webhook_secret(ctx.random);
  auto secret = ctx.store->webhook_secret(user->id, candidate);
  if (!secret) return die(secret.error().message);
  std::cout << *secret << "\n";
  return 0;
}

int cmd_keys_list(Context& ctx, const std::string& email) {
  if (auto ok = ctx.open(); !ok) return die(ok.error().message);
  auto user = ctx.user(email);
  if (!user) return die(user.error().message);
  auto keys = ctx.store->list_api_keys(user->id);
  if (!keys) return die(keys.error().message);
  std::printf("%-22s %-20s %-9s %-8s %-21s %s\n", "KEY", "NAME", "STATUS", "PROFILE", "CREATED",
              "LAST USED");
  for (const auto& k : *keys) {
    std::string shown = k.prefix + "..." + k.last4;
    std::printf("%-22s %-20s %-9s %-8s %-21s %s\n", shown.c_str(), k.name.c_str(),
                k.disabled ? "disabled" : "active", k.profile.empty() ? "-" : k.profile.c_str(),
                format_time(k.created_at).c_str(), format_time(k.last_used_at).c_str());
  }
  return 0;
}

int cmd_keys_revoke(Context& ctx, std::string prefix) {
  // Accept the listed form ("sk-AbCdEfGh...1234") or the whole key.
  if (auto dots = prefix.find("..."); dots != std::string::npos) prefix = prefix.substr(0, dots);
  if (prefix.size() > 3 + accounts::kKeyPrefixChars) prefix = prefix.substr(0, 3 + accounts::kKeyPrefixChars);
  if (prefix.size() != 3 + accounts::kKeyPrefixChars || !prefix.starts_with("sk-")) {
    return die("PREFIX must look like sk-XXXXXXXX (as shown by 'keys list')");
  }
  if (auto ok = ctx.open(); !ok) return die(ok.error().message);
  auto keys = ctx.store->find_api_keys_by_prefix(prefix);
  if (!keys) return die(keys.error().message);
  if (keys->empty()) return die("no active key with prefix " + printable(prefix));
  if (keys->size() > 1) return die("prefix " + prefix + " matches " + std::to_string(keys->size()) + " keys; nothing revoked");
  if (auto r = ctx.store->revoke_api_key(keys->front().id); !r) return die(r.error().message);
  std::cout << "revoked " << keys->front().prefix << "..." << keys->front().last4 << "\n";
  return 0;
}

int cmd_credits_grant(Context& ctx, const std::string& email, const std::string& amount_text,
                      const std::string& note) {
  auto amount = parse_credits(amount_text);
  if (!amount) return die(amount.error().message);
  if (note.size() > 500 || !is_valid_utf8(note)) return die("--note must be valid UTF-8, at most 500 bytes");
  if (auto ok = ctx.open(); !ok) return die(ok.error().message);
  auto user = ctx.user(email);
  if (!user) return die(user.error().message);
  auto row = ctx.store->grant(user->id, *amount, !note.empty() ? note : (*amount > 0 ? "granted by admin CLI" : "adjusted by admin CLI"));
  if (!row) return die(row.error().message);
  if (row->amount != *amount) {
    std::cout << "adjusted " << user->email << " by " << format_credits(row->amount)
              << " (clamped: the balance cannot go below zero); balance "
              << format_credits(row->balance_after) << "\n";
  } else {
    std::cout << (*amount > 0 ? "granted " : "adjusted by ") << format_credits(*amount)
              << " credits to " << user->email << "; balance " << format_credits(row->balance_after)
              << "\n";
  }
  return 0;
}

int cmd_credits_show(Context& ctx, const std::string& email, int limit) {
  if (auto ok = ctx.open(); !ok) return die(ok.error().message);
  auto user = ctx.user(email);
  if (!user) return die(user.error().message);
  std::cout << user->email << ": credits " << format_credits(user->balance) << ", reserved "
            << format_credits(user->reserved) << "\n";
  auto rows = ctx.store->list_ledger(user->id, limit);
  if (!rows) return die(rows.error().message);
  if (rows->empty()) return 0;
  std::printf("%-21s %-8s %14s %16s %-10s %s\n", "TIME", "KIND", "AMOUNT", "BALANCE", "HOLD", "NOTE");
  for (const auto& e : *rows) {
    std::printf("%-21s %-8s %14s %16s %-10s %s\n", format_time(e.created_at).c_str(),
                std::string(store::to_string(e.kind)).c_str(), format_credits(e.amount).c_str(),
                format_credits(e.balance_after).c_str(),
                e.hold_id ? std::to_string(*e.hold_id).c_str() : "-", e.note.c_str());
  }
  return 0;
}

int cmd_ledger_check(Context& ctx) {
  if (auto ok = ctx.open(); !ok) return die(ok.error().message);
  auto report = ctx.store->check_ledger();
  if (!report) return die(report.error().message);
  std::cout << "checked " << report->users_checked << " users, " << report->ledger_rows_checked
            << " ledger rows, " << report->holds_checked << " holds (" << report->open_holds
            << " open)\n"
            << "  balance == sum of ledger rows, reserved == sum of open holds,\n"
            << "  no negative balance, every hold resolved at most once\n";
  for (const auto& v : report->violations) std::cout << "VIOLATION: " << v << "\n";
  if (!report->violations.empty()) {
    std::cerr << "imagegate: error: ledger check failed with " << report->violations.size()
              << " violation(s)\n";
    return 1;
  }
  std::cout << "ledger OK\n";
  return 0;
}

}  // namespace

int run_cli(int argc, char** argv) {
  if (sodium_init() < 0) return die("libsodium failed to initialize");
  auto logger = std::make_shared<spdlog::logger>(
      "imagegate", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  spdlog::set_default_logger(logger);
  Context ctx;
  CLI::App app{"imagegate: a self-hosted gateway for image generation APIs"};
  app.require_subcommand(1);
  app.add_option("-c,--config", ctx.config_path, "TOML config file (default: $IMAGEGATE_CONFIG, else built-in defaults)");

  int rc = 0;
  auto* serve_cmd = app.add_subcommand("serve", "Run the HTTP server until SIGINT/SIGTERM");
  serve_cmd->callback([&] {
    auto s = load_settings(ctx.config_path);
    if (!s) {
      rc = die(s.error().message);
      return;
    }
    spdlog::set_level(spdlog::level::from_str(s->log_level));
    rc = serve(*s);
  });

  auto* users = app.add_subcommand("users", "Manage users")->require_subcommand(1);
  std::string email, password_in, name, amount, note, prefix, profile;
  bool rotate = false;
  std::optional<std::string> password;
  bool admin = false;
  int limit = 20;
  auto* users_add = users->add_subcommand("add", "Create a user (prints a generated password unless --password)");
  users_add->add_option("EMAIL", email, "Email address (unique, case-insensitive)")->required();
  users_add->add_option("--password", password, "Password (at least 8 characters)");
  users_add->add_flag("--admin", admin, "Make the user an admin");
  users_add->callback([&] { rc = cmd_users_add(ctx, email, password, admin); });
  users->add_subcommand("list", "List users")->callback([&] { rc = cmd_users_list(ctx); });
  auto* users_disable = users->add_subcommand("disable", "Disable a user: their keys stop working");
  users_disable->add_option("EMAIL", email)->required();
  users_disable->callback([&] { rc = cmd_users_disable(ctx, email); });

  auto* keys = app.add_subcommand("keys", "Manage API keys")->require_subcommand(1);
  auto* keys_create = keys->add_subcommand("create", "Create an API key; prints only the key");
  keys_create->add_option("EMAIL", email)->required();
  keys_create->add_option("--name", name, "A label for the key");
  keys_create->add_option("--profile", profile,
                          "Compatibility profile the key answers in: seed001 (sync unless the "
                          "request asks for a task) or seed002 (POST /api/v1/images/generations "
                          "always answers with a pending task); default: the deployment's");
  keys_create->callback([&] { rc = cmd_keys_create(ctx, email, name, profile); });
  auto* keys_list = keys->add_subcommand("list", "List a user's keys");
  keys_list->add_option("EMAIL", email)->required();
  keys_list->callback([&] { rc = cmd_keys_list(ctx, email); });
  auto* keys_revoke = keys->add_subcommand("revoke", "Revoke a key by its listed prefix (sk-XXXXXXXX)");
  keys_revoke->add_option("PREFIX", prefix)->required();
  keys_revoke->callback([&] { rc = cmd_keys_revoke(ctx, prefix); });

  auto* webhooks = app.add_subcommand("webhooks", "Task callback signing")->require_subcommand(1);
  auto* secret_cmd = webhooks->add_subcommand(
      "secret", "Print a user's webhook signing secret (whsec_...), creating it on first use");
  secret_cmd->add_option("EMAIL", email)->required();
  secret_cmd->add_flag("--rotate", rotate,
                       "Replace the secret first (callbacks signed from now on use the new one)");
  secret_cmd->callback([&] { rc = cmd_webhooks_secret(ctx, email, rotate); });

  auto* credits_cmd = app.add_subcommand("credits", "Grant and inspect credits")->require_subcommand(1);
  auto* grant = credits_cmd->add_subcommand("grant", "Add credits (negative AMOUNT adjusts down, never below zero)");
  grant->add_option("EMAIL", email)->required();
  grant->add_option("AMOUNT", amount, "Decimal credits, e.g. 4.7 or -2 (at most 6 decimals)")->required();
  grant->add_option("--note", note, "Why (stored in the ledger row)");
  grant->callback([&] { rc = cmd_credits_grant(ctx, email, amount, note); });
  auto* show = credits_cmd->add_subcommand("show", "Show a balance and recent ledger rows");
  show->add_option("EMAIL", email)->required();
  show->add_option("--limit", limit, "Ledger rows to show")->check(CLI::Range(0, 10000));
  show->callback([&] { rc = cmd_credits_show(ctx, email, limit); });

  auto* ledger = app.add_subcommand("ledger", "Ledger maintenance")->require_subcommand(1);
  ledger->add_subcommand("check", "Verify the whole ledger; exits non-zero on any violation")
      ->callback([&] { rc = cmd_ledger_check(ctx); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "imagegate: error: " << e.what() << " (see --help)\n";
    return 2;
  }
  return rc;
}

}  // namespace ig::app
