#include "app/settings.h"

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "billing/price_config.h"

namespace ig::app {
namespace {

ProviderSettings default_local_provider() {
  ProviderSettings p;
  p.name = "local";
  p.type = "local";
  return p;
}

// Reads typed values by dotted path and remembers which keys were consumed, so whatever is
// left over afterwards is an unknown key.
class TomlReader {
 public:
  explicit TomlReader(const toml::table& root) : root_(root) {}

  template <class T>
  void read(const toml::table& table, const std::string& prefix, std::string_view key, T& out,
            std::optional<std::pair<std::int64_t, std::int64_t>> range = std::nullopt) {
    const std::string path = prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
    seen_.insert(path);
    const toml::node* node = table.get(key);
    if (node == nullptr) return;
    if constexpr (std::is_same_v<T, bool>) {
      if (auto v = node->value<bool>(); v && node->is_boolean()) {
        out = *v;
      } else {
        type_error(path, "a boolean", *node);
      }
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (node->is_string()) {
        out = *node->value<std::string>();
      } else {
        type_error(path, "a string", *node);
      }
    } else if constexpr (std::is_integral_v<T>) {
      if (!node->is_integer()) {
        type_error(path, "an integer", *node);
        return;
      }
      std::int64_t v = *node->value<std::int64_t>();
      auto [lo, hi] = range.value_or(std::pair<std::int64_t, std::int64_t>{0, INT32_MAX});
      if (v < lo || v > hi) {
        errors_.push_back(path + ": " + std::to_string(v) + " is out of range [" +
                          std::to_string(lo) + ", " + std::to_string(hi) + "]");
        return;
      }
      out = static_cast<T>(v);
    }
  }

  // A money amount written as a decimal string ("4.7") or a whole number (100).
  void read_money(const toml::table& table, const std::string& prefix, std::string_view key,
                  Micros& out) {
    const std::string path = prefix + "." + std::string(key);
    seen_.insert(path);
    const toml::node* node = table.get(key);
    if (node == nullptr) return;
    std::string text;
    if (node->is_integer()) {
      text = std::to_string(*node->value<std::int64_t>());
    } else if (node->is_string()) {
      text = *node->value<std::string>();
    } else {
      type_error(path, "a decimal string such as \"4.7\" or an integer", *node);
      return;
    }
    auto parsed = parse_credits(text);
    if (!parsed || *parsed < 0) {
      errors_.push_back(path + ": " + (parsed ? std::string("must not be negative")
                                              : parsed.error().message));
      return;
    }
    out = *parsed;
  }

  void read_strings(const toml::table& table, const std::string& prefix, std::string_view key,
                    std::vector<std::string>& out) {
    const std::string path = prefix + "." + std::string(key);
    seen_.insert(path);
    const toml::node* node = table.get(key);
    if (node == nullptr) return;
    const auto* arr = node->as_array();
    if (arr == nullptr) {
      type_error(path, "an array of strings", *node);
      return;
    }
    out.clear();
    for (const auto& item : *arr) {
      if (!item.is_string()) {
        type_error(path + "[]", "a string", item);
        return;
      }
      out.push_back(*item.value<std::string>());
    }
  }

  void read_ints(const toml::table& table, const std::string& prefix, std::string_view key,
                 std::vector<std::int64_t>& out, std::int64_t lo, std::int64_t hi) {
    const std::string path = prefix + "." + std::string(key);
    seen_.insert(path);
    const toml::node* node = table.get(key);
    if (node == nullptr) return;
    const auto* arr = node->as_array();
    if (arr == nullptr) {
      type_error(path, "an array of integers", *node);
      return;
    }
    out.clear();
    for (const auto& item : *arr) {
      if (!item.is_integer()) {
        type_error(path + "[]", "an integer", item);
        return;
      }
      const std::int64_t v = *item.value<std::int64_t>();
      if (v < lo || v > hi) {
        errors_.push_back(path + ": " + std::to_string(v) + " is out of range [" +
                          std::to_string(lo) + ", " + std::to_string(hi) + "]");
        return;
      }
      out.push_back(v);
    }
  }

  void read_string_table(const toml::table& table, const std::string& prefix,
                         std::string_view key,
                         std::vector<std::pair<std::string, std::string>>& out) {
    const std::string path = prefix + "." + std::string(key);
    seen_.insert(path);
    skip_.insert(path);
    const toml::node* node = table.get(key);
    if (node == nullptr) return;
    const auto* t = node->as_table();
    if (t == nullptr) {
      type_error(path, "a table of strings", *node);
      return;
    }
    for (const auto& [k, v] : *t) {
      if (!v.is_string()) {
        type_error(path + "." + std::string(k.str()), "a string", v);
        continue;
      }
      out.emplace_back(std::string(k.str()), *v.value<std::string>());
    }
  }

  void mark(const std::string& path) { seen_.insert(path); }
  // A sub-table checked by its own parser: its keys are not reported as unknown here.
  void mark_subtree(const std::string& path) {
    seen_.insert(path);
    skip_.insert(path);
  }

  void collect_unknown(const toml::table& table, const std::string& prefix) {
    for (const auto& [k, node] : table) {
      const std::string path = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      if (skip_.contains(path)) continue;
      if (const auto* sub = node.as_table()) {
        if (!seen_.contains(path)) {
          errors_.push_back("unknown section [" + path + "]");
          continue;
        }
        collect_unknown(*sub, path);
      } else if (const auto* arr = node.as_array(); arr && arr->is_array_of_tables()) {
        if (!seen_.contains(path)) {
          errors_.push_back("unknown key '" + path + "'");
          continue;
        }
        for (std::size_t i = 0; i < arr->size(); ++i) {
          collect_unknown(*arr->get(i)->as_table(), path + "[" + std::to_string(i) + "]");
        }
      } else if (!seen_.contains(path)) {
        errors_.push_back("unknown key '" + path + "'");
      }
    }
  }

  std::vector<std::string>& errors() { return errors_; }

 private:
  void type_error(const std::string& path, std::string_view expected, const toml::node& node) {
    std::ostringstream got;
    got << node.type();
    errors_.push_back(path + ": expected " + std::string(expected) + ", got " + got.str());
  }

  const toml::table& root_;
  std::set<std::string> seen_;
  std::set<std::string> skip_;
  std::vector<std::string> errors_;
};

const toml::table& section(const toml::table& root, std::string_view name, TomlReader& reader,
                           std::vector<std::string>& errors) {
  static const toml::table kEmpty;
  reader.mark(std::string(name));
  const toml::node* node = root.get(name);
  if (node == nullptr) return kEmpty;
  if (!node->is_table()) {
    errors.push_back(std::string(name) + ": expected a table [" + std::string(name) + "]");
    return kEmpty;
  }
  return *node->as_table();
}

Result<void> apply_env(Settings& s, EnvLookup env) {
  if (auto v = env("IMAGEGATE_DATA_DIR")) s.data_dir = *v;
  if (auto v = env("IMAGEGATE_PUBLIC_BASE_URL")) s.public_base_url = *v;
  if (auto v = env("IMAGEGATE_LOG_LEVEL")) s.log_level = *v;
  if (auto v = env("IMAGEGATE_LISTEN")) {
    auto colon = v->rfind(':');
    if (colon == std::string::npos) {
      return fail(ErrorCode::kInvalidRequest, "IMAGEGATE_LISTEN must be HOST:PORT, got '" + *v + "'");
    }
    std::string host = v->substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    char* end = nullptr;
    long port = std::strtol(v->c_str() + colon + 1, &end, 10);
    if (end == v->c_str() + colon + 1 || *end != '\0' || port < 0 || port > 65535) {
      return fail(ErrorCode::kInvalidRequest, "IMAGEGATE_LISTEN has an invalid port: '" + *v + "'");
    }
    s.server.host = host;
    s.server.port = static_cast<std::uint16_t>(port);
  }
  return {};
}

Result<void> validate(const Settings& s) {
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (!kLevels.contains(s.log_level)) {
    return fail(ErrorCode::kInvalidRequest, "log_level: unknown level '" + s.log_level +
                                                "' (trace, debug, info, warn, error, critical, off)");
  }
  if (s.store.backend != "sqlite") {
    return fail(ErrorCode::kInvalidRequest,
                "store.backend: '" + s.store.backend + "' is not available (supported: sqlite)");
  }
  if (s.store.synchronous != "full" && s.store.synchronous != "normal") {
    return fail(ErrorCode::kInvalidRequest, "store.synchronous must be full or normal");
  }
  if (s.data_dir.empty()) return fail(ErrorCode::kInvalidRequest, "data_dir must not be empty");
  if (!s.public_base_url.empty() && !s.public_base_url.starts_with("http://") &&
      !s.public_base_url.starts_with("https://")) {
    return fail(ErrorCode::kInvalidRequest, "public_base_url must start with http:// or https://");
  }
  if (s.models.empty()) return fail(ErrorCode::kInvalidRequest, "models: at least one model is required");
  std::set<std::string> provider_names;
  for (const auto& p : s.providers) {
    if (p.name.empty()) return fail(ErrorCode::kInvalidRequest, "providers: every provider needs a name");
    if (!provider_names.insert(p.name).second) {
      return fail(ErrorCode::kInvalidRequest, "providers: duplicate name '" + p.name + "'");
    }
    if (p.type != "local" && p.type != "openai" && p.type != "kie") {
      return fail(ErrorCode::kInvalidRequest, "providers '" + p.name + "': unknown type '" + p.type + "' (local, openai, kie)");
    }
    if ((p.type == "openai" || p.type == "kie") && !p.base_url.starts_with("http://") &&
        !p.base_url.starts_with("https://")) {
      return fail(ErrorCode::kInvalidRequest, "providers '" + p.name + "': base_url must start with http:// or https://");
    }
    if (p.failure_percent < 0 || p.failure_percent > 100) {
      return fail(ErrorCode::kInvalidRequest, "providers '" + p.name + "': failure_percent must be 0-100");
    }
  }
  std::set<std::string> model_names;
  for (const auto& m : s.models) {
    if (!model_names.insert(m.id).second) return fail(ErrorCode::kInvalidRequest, "models: duplicate id '" + m.id + "'");
    for (const auto& a : m.aliases) {
      if (!model_names.insert(a).second) return fail(ErrorCode::kInvalidRequest, "models: alias '" + a + "' is used twice");
    }
    if (m.channels.empty()) return fail(ErrorCode::kInvalidRequest, "models '" + m.id + "': channels must name at least one provider");
    for (const auto& c : m.channels) {
      if (!provider_names.contains(c)) {
        return fail(ErrorCode::kInvalidRequest, "models '" + m.id + "': channel '" + c + "' is not a configured provider");
      }
    }
    if (auto ok = jobs::validate_capabilities(m.capabilities); !ok) {
      return fail(ErrorCode::kInvalidRequest, "models '" + m.id + "'.capabilities: " + ok.error().message);
    }
  }
  const auto& style = s.images.api.url_style;
  if (s.tasks.profile != "seed001" && s.tasks.profile != "seed002") {
    return fail(ErrorCode::kInvalidRequest, "tasks.profile must be seed001 or seed002");
  }
  if (s.callbacks.retry_schedule_ms.empty()) {
    return fail(ErrorCode::kInvalidRequest, "callbacks.retry_schedule_ms needs at least one entry");
  }
  if (style != "job" && style != "signed") return fail(ErrorCode::kInvalidRequest, "images.url_style must be job or signed");
  const auto& rf = s.images.api.default_response_format;
  if (rf != "b64_json" && rf != "url" && rf != "both") {
    return fail(ErrorCode::kInvalidRequest, "images.default_response_format must be b64_json, url or both");
  }
  return {};
}

}  // namespace

std::string Settings::store_path() const {
  return store.path.empty() ? data_dir + "/imagegate.db" : store.path;
}

std::optional<std::string> real_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

Result<Settings> parse_settings(std::string_view toml_text, std::string_view source_name,
                                EnvLookup env) {
  Settings s;
  s.models = {jobs::default_model_entry()};
  s.providers = {default_local_provider()};
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << source_name << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
        << e.description();
    return fail(ErrorCode::kInvalidRequest, msg.str());
  }
  TomlReader r(root);
  std::vector<std::string>& errors = r.errors();

  r.read(root, "", "data_dir", s.data_dir);
  r.read(root, "", "public_base_url", s.public_base_url);
  r.read(root, "", "log_level", s.log_level);

  const auto& server = section(root, "server", r, errors);
  r.read(server, "server", "host", s.server.host);
  r.read(server, "server", "port", s.server.port, std::pair<std::int64_t, std::int64_t>{0, 65535});
  r.read(server, "server", "io_threads", s.io_threads, std::pair<std::int64_t, std::int64_t>{0, 256});
  r.read(server, "server", "blocking_threads", s.blocking_threads, std::pair<std::int64_t, std::int64_t>{1, 256});
  r.read(server, "server", "max_header_bytes", s.server.max_header_bytes, std::pair<std::int64_t, std::int64_t>{1024, 1 << 20});
  r.read(server, "server", "max_body_bytes", s.server.max_body_bytes, std::pair<std::int64_t, std::int64_t>{1024, 1LL << 32});
  r.read(server, "server", "header_timeout_ms", s.server.header_timeout_ms, std::pair<std::int64_t, std::int64_t>{100, 3'600'000});
  r.read(server, "server", "body_timeout_ms", s.server.body_timeout_ms, std::pair<std::int64_t, std::int64_t>{100, 3'600'000});
  r.read(server, "server", "idle_timeout_ms", s.server.idle_timeout_ms, std::pair<std::int64_t, std::int64_t>{100, 3'600'000});
  r.read(server, "server", "write_timeout_ms", s.server.write_timeout_ms, std::pair<std::int64_t, std::int64_t>{100, 3'600'000});
  r.read(server, "server", "shutdown_grace_ms", s.server.shutdown_grace_ms, std::pair<std::int64_t, std::int64_t>{0, 3'600'000});
  r.read(server, "server", "max_connections", s.server.max_connections, std::pair<std::int64_t, std::int64_t>{1, 1'000'000});
  r.read(server, "server", "access_log", s.server.access_log);

  const auto& store = section(root, "store", r, errors);
  r.read(store, "store", "backend", s.store.backend);
  r.read(store, "store", "path", s.store.path);
  r.read(store, "store", "busy_timeout_ms", s.store.busy_timeout_ms, std::pair<std::int64_t, std::int64_t>{0, 600'000});
  r.read(store, "store", "pool_size", s.store.pool_size, std::pair<std::int64_t, std::int64_t>{1, 64});
  r.read(store, "store", "synchronous", s.store.synchronous);
  r.read(store, "store", "blob_inline_max_bytes", s.store.blob_inline_max_bytes, std::pair<std::int64_t, std::int64_t>{0, 64LL << 20});

  const auto& auth = section(root, "auth", r, errors);
  r.read(auth, "auth", "cache_ttl_ms", s.auth.cache_ttl_ms, std::pair<std::int64_t, std::int64_t>{0, 3'600'000});
  r.read(auth, "auth", "negative_ttl_ms", s.auth.negative_ttl_ms, std::pair<std::int64_t, std::int64_t>{0, 3'600'000});
  r.read(auth, "auth", "revocation_poll_ms", s.auth.revocation_poll_ms, std::pair<std::int64_t, std::int64_t>{10, 1'000});
  r.read(auth, "auth", "last_used_flush_ms", s.auth.last_used_flush_ms, std::pair<std::int64_t, std::int64_t>{100, 3'600'000});
  r.read(auth, "auth", "max_cache_entries", s.auth.max_cache_entries, std::pair<std::int64_t, std::int64_t>{1, 100'000'000});

  const auto& boot = section(root, "bootstrap", r, errors);
  r.read(boot, "bootstrap", "enabled", s.bootstrap.enabled);
  r.read(boot, "bootstrap", "admin_email", s.bootstrap.admin_email);
  r.read_money(boot, "bootstrap", "free_credits", s.bootstrap.free_credits);

  const auto& images = section(root, "images", r, errors);
  r.read(images, "images", "default_response_format", s.images.api.default_response_format);
  r.read(images, "images", "url_style", s.images.api.url_style);
  r.read(images, "images", "signed_url_ttl_s", s.images.api.signed_url_ttl_s, std::pair<std::int64_t, std::int64_t>{1, 365LL * 86400});
  r.read_strings(images, "images", "trusted_proxies", s.images.api.trusted_proxies);
  r.read(images, "images", "reference_max_bytes", s.images.reference_max_bytes, std::pair<std::int64_t, std::int64_t>{1024, 1LL << 30});
  r.read(images, "images", "reference_connect_timeout_ms", s.images.reference_connect_timeout_ms, std::pair<std::int64_t, std::int64_t>{100, 600'000});
  r.read(images, "images", "reference_timeout_ms", s.images.reference_timeout_ms, std::pair<std::int64_t, std::int64_t>{100, 600'000});
  r.read(images, "images", "reference_max_redirects", s.images.reference_max_redirects, std::pair<std::int64_t, std::int64_t>{0, 10});
  r.read(images, "images", "allow_private_reference_urls", s.images.allow_private_reference_urls);
  r.read(images, "images", "upstream_max_connections_per_host", s.images.upstream_max_connections_per_host, std::pair<std::int64_t, std::int64_t>{1, 100'000});
  r.read(images, "images", "result_retention_s", s.images.result_retention_s,
         std::pair<std::int64_t, std::int64_t>{0, 100LL * 365 * 86400});
  r.read(images, "images", "result_sweep_interval_ms", s.images.result_sweep_interval_ms,
         std::pair<std::int64_t, std::int64_t>{100, 86'400'000});

  const auto& tasks = section(root, "tasks", r, errors);
  r.read(tasks, "tasks", "profile", s.tasks.profile);
  r.read(tasks, "tasks", "max_running", s.tasks.max_running, std::pair<std::int64_t, std::int64_t>{1, 100'000});
  r.read(tasks, "tasks", "deadline_ms", s.tasks.deadline_ms, std::pair<std::int64_t, std::int64_t>{1'000, 7LL * 86'400'000});
  r.read(tasks, "tasks", "sweep_interval_ms", s.tasks.sweep_interval_ms, std::pair<std::int64_t, std::int64_t>{50, 3'600'000});

  const auto& callbacks = section(root, "callbacks", r, errors);
  r.read_ints(callbacks, "callbacks", "retry_schedule_ms", s.callbacks.retry_schedule_ms, 0, 7LL * 86'400'000);
  r.read(callbacks, "callbacks", "jitter_percent", s.callbacks.jitter_percent, std::pair<std::int64_t, std::int64_t>{0, 100});
  r.read(callbacks, "callbacks", "timeout_ms", s.callbacks.timeout_ms, std::pair<std::int64_t, std::int64_t>{100, 600'000});
  r.read(callbacks, "callbacks", "connect_timeout_ms", s.callbacks.connect_timeout_ms, std::pair<std::int64_t, std::int64_t>{100, 600'000});
  r.read(callbacks, "callbacks", "max_concurrent", s.callbacks.max_concurrent, std::pair<std::int64_t, std::int64_t>{1, 100'000});
  r.read(callbacks, "callbacks", "poll_interval_ms", s.callbacks.poll_interval_ms, std::pair<std::int64_t, std::int64_t>{10, 60'000});

  r.mark("providers");
  if (const toml::node* node = root.get("providers")) {
    const auto* arr = node->as_array();
    if (arr == nullptr || (!arr->empty() && !arr->is_array_of_tables())) {
      errors.push_back("providers: expected an array of tables [[providers]]");
    } else {
      s.providers.clear();
      for (std::size_t i = 0; i < arr->size(); ++i) {
        const auto& t = *arr->get(i)->as_table();
        const std::string prefix = "providers[" + std::to_string(i) + "]";
        ProviderSettings p;
        r.read(t, prefix, "name", p.name);
        r.read(t, prefix, "type", p.type);
        r.read(t, prefix, "latency_ms", p.latency_ms, std::pair<std::int64_t, std::int64_t>{0, 3'600'000});
        r.read(t, prefix, "failure_percent", p.failure_percent, std::pair<std::int64_t, std::int64_t>{0, 100});
        r.read(t, prefix, "failures_retryable", p.failures_retryable);
        r.read(t, prefix, "base_url", p.base_url);
        r.read(t, prefix, "api_key", p.api_key);
        r.read(t, prefix, "timeout_ms", p.timeout_ms, std::pair<std::int64_t, std::int64_t>{100, 3'600'000});
        r.read(t, prefix, "connect_timeout_ms", p.connect_timeout_ms, std::pair<std::int64_t, std::int64_t>{100, 600'000});
        r.read(t, prefix, "proxy", p.proxy);
        r.read(t, prefix, "allow_private_network", p.allow_private_network);
        r.read_string_table(t, prefix, "headers", p.headers);
        r.read_string_table(t, prefix, "model_map", p.model_map);
        r.read(t, prefix, "max_concurrent", p.max_concurrent, std::pair<std::int64_t, std::int64_t>{0, 1'000'000});
        r.read(t, prefix, "poll_interval_ms", p.poll_interval_ms, std::pair<std::int64_t, std::int64_t>{10, 600'000});
        r.read(t, prefix, "task_timeout_ms", p.task_timeout_ms, std::pair<std::int64_t, std::int64_t>{1'000, 7LL * 86'400'000});
        r.read_string_table(t, prefix, "text_to_image_models", p.text_to_image_models);
        r.read_string_table(t, prefix, "image_to_image_models", p.image_to_image_models);
        if (p.name.empty()) errors.push_back(prefix + ".name: required");
        if (p.type.empty()) errors.push_back(prefix + ".type: required");
        s.providers.push_back(std::move(p));
      }
    }
  }

  r.mark("models");
  if (const toml::node* node = root.get("models")) {
    const auto* arr = node->as_array();
    if (arr == nullptr || (!arr->empty() && !arr->is_array_of_tables())) {
      errors.push_back("models: expected an array of tables [[models]]");
    } else {
      s.models.clear();
      for (std::size_t i = 0; i < arr->size(); ++i) {
        const auto& t = *arr->get(i)->as_table();
        const std::string prefix = "models[" + std::to_string(i) + "]";
        jobs::ModelEntry m = jobs::default_model_entry();
        m.id.clear();
        m.aliases.clear();
        r.read(t, prefix, "id", m.id);
        r.read(t, prefix, "owned_by", m.owned_by);
        r.read(t, prefix, "created", m.created, std::pair<std::int64_t, std::int64_t>{0, INT64_MAX});
        r.read_strings(t, prefix, "aliases", m.aliases);
        r.read_strings(t, prefix, "channels", m.channels);
        if (m.id.empty()) errors.push_back(prefix + ".id: required");
        const std::string caps_prefix = prefix + ".capabilities";
        r.mark(caps_prefix);
        if (const toml::node* cn = t.get("capabilities")) {
          if (const auto* ct = cn->as_table()) {
            auto& c = m.capabilities;
            r.read_strings(*ct, caps_prefix, "allowed_sizes", c.allowed_sizes);
            r.read_strings(*ct, caps_prefix, "ratios_at_4k", c.ratios_at_4k);
            r.read(*ct, caps_prefix, "max_n", c.max_n, std::pair<std::int64_t, std::int64_t>{1, 10});
            r.read(*ct, caps_prefix, "max_reference_images", c.max_reference_images, std::pair<std::int64_t, std::int64_t>{0, 16});
            r.read(*ct, caps_prefix, "max_prompt_chars", c.max_prompt_chars, std::pair<std::int64_t, std::int64_t>{1, 32'000});
            r.read_strings(*ct, caps_prefix, "qualities", c.qualities);
            r.read_strings(*ct, caps_prefix, "output_formats", c.output_formats);
            r.read(*ct, caps_prefix, "default_size", c.default_size);
          } else {
            errors.push_back(caps_prefix + ": expected a table");
          }
        }
        const std::string price_prefix = prefix + ".price";
        r.mark_subtree(price_prefix);
        if (const toml::node* pn = t.get("price")) {
          if (const auto* pt = pn->as_table()) {
            auto rule = billing::parse_price_rule(*pt);
            if (rule) {
              m.price = std::move(*rule);
            } else {
              errors.push_back(price_prefix + "." + rule.error().message);
            }
          } else {
            errors.push_back(price_prefix + ": expected a table");
          }
        }
        s.models.push_back(std::move(m));
      }
    }
  }

  r.collect_unknown(root, "");
  if (!errors.empty()) {
    std::string msg = std::string(source_name) + ": ";
    for (std::size_t i = 0; i < errors.size(); ++i) msg += (i ? "; " : "") + errors[i];
    return fail(ErrorCode::kInvalidRequest, msg);
  }
  if (auto ok = apply_env(s, env); !ok) return std::unexpected(ok.error());
  if (auto ok = validate(s); !ok) return std::unexpected(ok.error());
  s.account.models.clear();
  for (const auto& m : s.models) {
    s.account.models.push_back({m.id, m.owned_by, m.created});
    for (const auto& alias : m.aliases) s.account.models.push_back({alias, m.owned_by, m.created});
  }
  return s;
}

Result<Settings> load_settings(const std::optional<std::string>& path, EnvLookup env) {
  std::optional<std::string> chosen = path;
  if (!chosen) chosen = env("IMAGEGATE_CONFIG");
  if (!chosen) return parse_settings("", "<defaults>", env);
  std::ifstream in(*chosen, std::ios::binary);
  if (!in) return fail(ErrorCode::kInvalidRequest, "cannot read config file '" + *chosen + "'");
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_settings(buf.str(), *chosen, env);
}

}  // namespace ig::app
