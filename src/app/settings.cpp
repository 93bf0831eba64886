#include "app/settings.h"

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

namespace ig::app {
namespace {

std::vector<api::ModelInfo> default_models() {
  return {{"gpt-image-2", "imagegate", 1'745'000'000}};
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

  void mark(const std::string& path) { seen_.insert(path); }

  void collect_unknown(const toml::table& table, const std::string& prefix) {
    for (const auto& [k, node] : table) {
      const std::string path = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
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
  if (s.data_dir.empty()) return fail(ErrorCode::kInvalidRequest, "data_dir must not be empty");
  if (!s.public_base_url.empty() && !s.public_base_url.starts_with("http://") &&
      !s.public_base_url.starts_with("https://")) {
    return fail(ErrorCode::kInvalidRequest, "public_base_url must start with http:// or https://");
  }
  if (s.account.models.empty()) return fail(ErrorCode::kInvalidRequest, "models: at least one model is required");
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
  s.account.models = default_models();
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

  r.mark("models");
  if (const toml::node* node = root.get("models")) {
    const auto* arr = node->as_array();
    if (arr == nullptr || (!arr->empty() && !arr->is_array_of_tables())) {
      errors.push_back("models: expected an array of tables [[models]]");
    } else {
      s.account.models.clear();
      for (std::size_t i = 0; i < arr->size(); ++i) {
        const auto& t = *arr->get(i)->as_table();
        const std::string prefix = "models[" + std::to_string(i) + "]";
        api::ModelInfo m;
        r.read(t, prefix, "id", m.id);
        r.read(t, prefix, "owned_by", m.owned_by);
        r.read(t, prefix, "created", m.created, std::pair<std::int64_t, std::int64_t>{0, INT64_MAX});
        if (m.id.empty()) errors.push_back(prefix + ".id: required");
        s.account.models.push_back(std::move(m));
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
