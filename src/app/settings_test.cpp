#include "app/settings.h"

#include <gtest/gtest.h>

#include <fstream>

namespace ig::app {
namespace {

std::optional<std::string> no_env(const char*) { return std::nullopt; }

std::optional<std::string> some_env(const char* name) {
  std::string n = name;
  if (n == "IMAGEGATE_LISTEN") return "0.0.0.0:9999";
  if (n == "IMAGEGATE_DATA_DIR") return "/tmp/ig-data";
  if (n == "IMAGEGATE_LOG_LEVEL") return "debug";
  if (n == "IMAGEGATE_PUBLIC_BASE_URL") return "https://img.example.com";
  return std::nullopt;
}

TEST(SettingsTest, DefaultsServeWithoutAFile) {
  auto s = parse_settings("", "<defaults>", no_env);
  ASSERT_TRUE(s.has_value()) << s.error().message;
  EXPECT_EQ(s->server.host, "127.0.0.1");
  EXPECT_EQ(s->server.port, 8080);
  EXPECT_EQ(s->data_dir, "./data");
  EXPECT_EQ(s->store_path(), "./data/imagegate.db");
  EXPECT_EQ(s->bootstrap.free_credits, credits(100));
  ASSERT_EQ(s->models.size(), 1u);
  EXPECT_EQ(s->models[0].id, "gpt-image-2");
  EXPECT_EQ(s->models[0].channels, std::vector<std::string>{"local"});
  ASSERT_EQ(s->providers.size(), 1u);
  EXPECT_EQ(s->providers[0].type, "local");
  // /v1/models lists the id and its aliases.
  ASSERT_EQ(s->account.models.size(), 4u);
  EXPECT_EQ(s->account.models[0].id, "gpt-image-2");
  EXPECT_EQ(s->account.models[1].id, "gpt-image-2-all");
}

TEST(SettingsTest, ReadsEveryDocumentedKeyFromTheExampleFile) {
  // The shipped example lists every key with its default: it must parse to the defaults.
  auto s = load_settings(std::string(IMAGEGATE_SOURCE_DIR "/imagegate.example.toml"), no_env);
  ASSERT_TRUE(s.has_value()) << s.error().message;
  auto d = parse_settings("", "<defaults>", no_env);
  EXPECT_EQ(s->server.max_body_bytes, d->server.max_body_bytes);
  EXPECT_EQ(s->server.header_timeout_ms, d->server.header_timeout_ms);
  EXPECT_EQ(s->auth.revocation_poll_ms, d->auth.revocation_poll_ms);
  EXPECT_EQ(s->bootstrap.free_credits, d->bootstrap.free_credits);
  EXPECT_EQ(s->account.models.size(), d->account.models.size());
  EXPECT_EQ(s->models[0].aliases, d->models[0].aliases);
  EXPECT_EQ(s->models[0].capabilities.ratios_at_4k, d->models[0].capabilities.ratios_at_4k);
  EXPECT_EQ(s->images.api.default_response_format, d->images.api.default_response_format);
  EXPECT_EQ(s->providers.size(), d->providers.size());
}

TEST(SettingsTest, ParsesValues) {
  auto s = parse_settings(R"(
data_dir = "/var/lib/ig"
[server]
port = 0
max_body_bytes = 4096
access_log = false
[bootstrap]
free_credits = "4.7"
[[models]]
id = "a"
[[models]]
id = "b"
owned_by = "x"
)", "t.toml", no_env);
  ASSERT_TRUE(s.has_value()) << s.error().message;
  EXPECT_EQ(s->data_dir, "/var/lib/ig");
  EXPECT_EQ(s->server.port, 0);
  EXPECT_EQ(s->server.max_body_bytes, 4096u);
  EXPECT_FALSE(s->server.access_log);
  EXPECT_EQ(s->bootstrap.free_credits, 4'700'000);
  ASSERT_EQ(s->account.models.size(), 2u);
  EXPECT_EQ(s->account.models[1].owned_by, "x");
}

TEST(SettingsTest, EnvironmentOverrides) {
  auto s = parse_settings("[server]\nport = 1\n", "t.toml", some_env);
  ASSERT_TRUE(s.has_value()) << s.error().message;
  EXPECT_EQ(s->server.host, "0.0.0.0");
  EXPECT_EQ(s->server.port, 9999);
  EXPECT_EQ(s->data_dir, "/tmp/ig-data");
  EXPECT_EQ(s->log_level, "debug");
  EXPECT_EQ(s->public_base_url, "https://img.example.com");
}

TEST(SettingsTest, NamesUnknownAndIllTypedKeys) {
  struct Case {
    const char* toml;
    const char* expect;
  };
  for (const Case& c : {
           Case{"[server]\nprot = 1\n", "unknown key 'server.prot'"},
           Case{"[server]\nport = \"80\"\n", "server.port: expected an integer, got string"},
           Case{"[server]\nport = 70000\n", "server.port: 70000 is out of range"},
           Case{"[sever]\nport = 1\n", "unknown section [sever]"},
           Case{"colour = 1\n", "unknown key 'colour'"},
           Case{"[server]\naccess_log = 1\n", "server.access_log: expected a boolean"},
           Case{"[bootstrap]\nfree_credits = \"1e9\"\n", "bootstrap.free_credits"},
           Case{"[[models]]\nname = \"x\"\n", "models[0].id: required"},
           Case{"log_level = \"loud\"\n", "log_level: unknown level"},
           Case{"[store]\nbackend = \"postgres\"\n", "store.backend"},
           Case{"[[models]]\nid = \"x\"\nchannels = [\"nope\"]\n", "channel 'nope' is not a configured provider"},
           Case{"[[models]]\nid = \"x\"\n[models.price]\nkind = \"flat\"\nper_image = \"abc\"\n", "models[0].price"},
           Case{"[[models]]\nid = \"x\"\n[models.capabilities]\nmax_n = 11\n", "models[0].capabilities.max_n"},
           Case{"[[providers]]\nname = \"p\"\ntype = \"warp\"\n", "unknown type 'warp'"},
           Case{"[images]\nurl_style = \"x\"\n", "images.url_style"},
           Case{"[server\n", "t.toml:"},
       }) {
    auto s = parse_settings(c.toml, "t.toml", no_env);
    ASSERT_FALSE(s.has_value()) << c.toml;
    EXPECT_NE(s.error().message.find(c.expect), std::string::npos)
        << "got: " << s.error().message << " want: " << c.expect;
  }
}

TEST(SettingsTest, MissingFileIsAnError) {
  auto s = load_settings(std::string("/nonexistent/imagegate.toml"), no_env);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message.find("/nonexistent/imagegate.toml"), std::string::npos);
}

}  // namespace
}  // namespace ig::app
