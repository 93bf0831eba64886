#pragma once
// Settings: every knob of the process as plain structs, built once from defaults, the TOML file
// and environment overrides, then handed to constructors. See imagegate.example.toml.

#include <optional>
#include <string>
#include <vector>

#include "accounts/authenticator.h"
#include "api/account_api.h"
#include "billing/money.h"
#include "core/error.h"
#include "http/server.h"

namespace ig::app {

struct StoreSettings {
  std::string backend = "sqlite";
  std::string path;  // empty: <data_dir>/imagegate.db
  int busy_timeout_ms = 5'000;
  int pool_size = 4;
};

struct BootstrapSettings {
  bool enabled = true;
  std::string admin_email = "admin@localhost";
  Micros free_credits = credits(100);
};

struct Settings {
  std::string data_dir = "./data";
  std::string public_base_url;  // empty: http://<host>:<port>
  std::string log_level = "info";
  int io_threads = 0;           // 0: one per core
  int blocking_threads = 4;
  http::ServerSettings server;
  StoreSettings store;
  accounts::AuthSettings auth;
  BootstrapSettings bootstrap;
  api::AccountApiSettings account;

  std::string store_path() const;
};

// Reads an environment variable; injectable for tests.
using EnvLookup = std::optional<std::string> (*)(const char* name);
std::optional<std::string> real_env(const char* name);

// Defaults, then the TOML file at `path` (if any), then environment overrides. Any unknown key,
// ill-typed or out-of-range value is an error naming the key.
Result<Settings> load_settings(const std::optional<std::string>& path, EnvLookup env = real_env);
Result<Settings> parse_settings(std::string_view toml_text, std::string_view source_name,
                                EnvLookup env);

}  // namespace ig::app
