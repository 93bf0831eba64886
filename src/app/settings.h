#pragma once
// Settings: every knob of the process as plain structs, built once from defaults, the TOML file
// and environment overrides, then handed to constructors. See imagegate.example.toml.

#include <optional>
#include <string>
#include <vector>

#include "accounts/authenticator.h"
#include "api/account_api.h"
#include "api/images_api.h"
#include "jobs/catalog.h"
#include "billing/money.h"
#include "core/error.h"
#include "http/server.h"

namespace ig::app {

struct StoreSettings {
  std::string backend = "sqlite";
  std::string path;  // empty: <data_dir>/imagegate.db
  int busy_timeout_ms = 5'000;
  int pool_size = 4;
  std::string synchronous = "full";  // "full" | "normal" (see imagegate.example.toml)
  // Result files up to this size are rows of the database, larger ones files under
  // <data_dir>/blobs; 0 puts every blob on disk.
  std::int64_t blob_inline_max_bytes = 1 << 20;
};

struct BootstrapSettings {
  bool enabled = true;
  std::string admin_email = "admin@localhost";
  Micros free_credits = credits(100);
};

// One upstream channel. `type` selects the adapter; the other keys belong to that adapter.
struct ProviderSettings {
  std::string name;
  std::string type;  // "local" | "openai" | "kie"
  // local
  int latency_ms = 0;
  int failure_percent = 0;
  bool failures_retryable = true;
  // Every type: generations in flight on this channel at once (0 = unlimited); more wait.
  int max_concurrent = 0;
  // openai (and every OpenAI-compatible reseller)
  std::string base_url;
  std::string api_key;
  int timeout_ms = 300'000;
  int connect_timeout_ms = 10'000;
  std::string proxy;
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<std::pair<std::string, std::string>> model_map;
  bool allow_private_network = true;  // operator-configured: a local reseller is fine
  // kie (async task upstreams): createTask, then poll recordInfo (and take its callbacks)
  int poll_interval_ms = 2'000;
  std::int64_t task_timeout_ms = 30LL * 60 * 1000;  // how long to wait for one upstream task
  std::vector<std::pair<std::string, std::string>> text_to_image_models;   // canonical -> id
  std::vector<std::pair<std::string, std::string>> image_to_image_models;  // canonical -> id
};

struct ImagesSettings {
  api::ImagesApiSettings api;
  std::size_t reference_max_bytes = 20 << 20;
  int reference_connect_timeout_ms = 5'000;
  int reference_timeout_ms = 30'000;
  int reference_max_redirects = 3;
  // Let reference-image URLs reach loopback/private/link-local addresses (tests only).
  bool allow_private_reference_urls = false;
  // Concurrent connections to one upstream host; more requests wait in the client's queue.
  int upstream_max_connections_per_host = 4096;
  // Result files of succeeded jobs are deleted this long after the job finished (the job row
  // stays; its image URLs answer 410). 0 keeps them forever.
  std::int64_t result_retention_s = 0;
  std::int64_t result_sweep_interval_ms = 60'000;
};

struct TasksSettings {
  // Compatibility profile of the deployment: what POST /api/v1/images/generations answers.
  // "seed001": an image, unless the request asks for a task; "seed002": always a pending task.
  std::string profile = "seed001";
  // Async jobs running at once (upstream calls in flight); the rest wait in the queue.
  int max_running = 256;
  // An async task not finished this long after it was created is failed and refunded.
  std::int64_t deadline_ms = 30LL * 60 * 1000;
  std::int64_t sweep_interval_ms = 5'000;
};

// Task callbacks (Standard Webhooks). The address rules are the reference images' ones.
struct CallbacksSettings {
  // Wait before attempt k+1 (the first is immediate); the length is the attempt cap. Standard
  // Webhooks' schedule; tests compress it.
  std::vector<std::int64_t> retry_schedule_ms{0,           5'000,       300'000,     1'800'000,
                                              7'200'000,   18'000'000,  36'000'000,  36'000'000};
  int jitter_percent = 20;
  int timeout_ms = 15'000;
  int connect_timeout_ms = 5'000;
  int max_concurrent = 64;
  int poll_interval_ms = 500;
};

struct Settings {
  std::string data_dir = "./data";
  std::string public_base_url;  // empty: http://<host>:<port>
  std::string log_level = "info";
  int io_threads = 0;           // 0: one per core
  int blocking_threads = 16;
  http::ServerSettings server;
  StoreSettings store;
  accounts::AuthSettings auth;
  BootstrapSettings bootstrap;
  api::AccountApiSettings account;  // derived from `models`
  std::vector<jobs::ModelEntry> models;
  std::vector<ProviderSettings> providers;
  ImagesSettings images;
  TasksSettings tasks;
  CallbacksSettings callbacks;

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
