#include "api/public_url.h"

#include <gtest/gtest.h>

namespace ig::api {
namespace {

TEST(ForwardedBaseUrl, ProtoAloneChangesOnlyTheScheme) {
  EXPECT_EQ(forwarded_base_url("http://img.example.com/gw", false, {.proto = "https"}),
            "https://img.example.com/gw");
}

TEST(ForwardedBaseUrl, HostKeepsTheConfiguredPathPrefixAndScheme) {
  EXPECT_EQ(forwarded_base_url("https://img.example.com/gw", false, {.host = "cdn.example.org"}),
            "https://cdn.example.org/gw");
  EXPECT_EQ(
      forwarded_base_url("http://a:8080", false, {.proto = "https", .host = "b.example.com:8443"}),
      "https://b.example.com:8443");
}

TEST(ForwardedBaseUrl, FirstEntryOfAListWins) {
  EXPECT_EQ(forwarded_base_url("http://a", false,
                               {.proto = "https, http", .host = " x.example.com , proxy.local"}),
            "https://x.example.com");
}

TEST(ForwardedBaseUrl, HostHeaderOnlyWhenNoBaseWasConfigured) {
  const ForwardedHeaders h{.proto = "https", .plain_host = "gw.example.com"};
  EXPECT_EQ(forwarded_base_url("http://127.0.0.1:8080", true, h), "https://gw.example.com");
  EXPECT_EQ(forwarded_base_url("http://img.example.com", false, h), "https://img.example.com");
}

TEST(ForwardedBaseUrl, IgnoresValuesThatAreNotAPlainSchemeOrHost) {
  for (std::string_view bad : {"evil.com\"><script>", "a/b", "user@host", "host:99999", "host:", "",
                               ".x", "-x", "[zz::1]", "[::1", "a b", "h\r\nSet-Cookie: x"}) {
    EXPECT_EQ(
        forwarded_base_url("http://img.example.com/p", true, {.host = bad, .plain_host = bad}),
        "http://img.example.com/p")
        << bad;
  }
  EXPECT_EQ(forwarded_base_url("http://a", false, {.proto = "javascript"}), "http://a");
  EXPECT_EQ(forwarded_base_url("http://a", false, {.proto = "HTTPS"}), "https://a");
}

TEST(ForwardedBaseUrl, AcceptsIpLiterals) {
  EXPECT_EQ(forwarded_base_url("http://a", false, {.host = "[2001:db8::1]:8443"}),
            "http://[2001:db8::1]:8443");
  EXPECT_EQ(forwarded_base_url("http://a", false, {.host = "10.0.0.5:80"}), "http://10.0.0.5:80");
}

}  // namespace
}  // namespace ig::api
