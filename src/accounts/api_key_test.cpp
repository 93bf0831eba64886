#include "accounts/api_key.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "accounts/password.h"

namespace ig::accounts {
namespace {

TEST(ApiKeyTest, GeneratedKeysHaveTheDocumentedShape) {
  SodiumRandom random;
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    auto key = generate_api_key(random);
    EXPECT_TRUE(std::regex_match(key.secret, std::regex("^sk-[0-9A-Za-z]{43}$"))) << key.secret;
    EXPECT_EQ(key.prefix, key.secret.substr(0, 11));
    EXPECT_EQ(key.last4, key.secret.substr(key.secret.size() - 4));
    EXPECT_EQ(key.hash, hash_api_key(key.secret));
    EXPECT_EQ(key.hash.size(), 64u);
    EXPECT_TRUE(looks_like_api_key(key.secret));
    EXPECT_TRUE(seen.insert(key.secret).second);
  }
}

TEST(ApiKeyTest, DeterministicWithSeededRandom) {
  SeededRandom a(7), b(7);
  EXPECT_EQ(generate_api_key(a).secret, generate_api_key(b).secret);
}

TEST(ApiKeyTest, HashIsSha256) {
  EXPECT_EQ(hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ApiKeyTest, ParsesBearer) {
  const std::string key = "sk-" + std::string(43, 'a');
  EXPECT_EQ(*parse_bearer("Bearer " + key), key);
  EXPECT_EQ(*parse_bearer("bearer   " + key + "  "), key);
  EXPECT_EQ(*parse_bearer("BEARER\t" + key), key);
}

TEST(ApiKeyTest, RejectsMalformedAuthorization) {
  const std::string key = "sk-" + std::string(43, 'a');
  for (const std::string& bad :
       {std::string(""), std::string("Bearer"), std::string("Bearer "), "Basic " + key, key,
        std::string("Bearer sk-short"), std::string("Bearer not-a-key"),
        "Bearer sk-" + std::string(10'000, 'a'), "Bearer " + key + "\xff",
        "Bearer sk-" + std::string(40, 'a') + " x", "Bearerx" + key}) {
    auto r = parse_bearer(bad);
    EXPECT_FALSE(r.has_value()) << bad.substr(0, 40);
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::kInvalidApiKey);
    }
  }
}

TEST(PasswordTest, HashesWithArgon2idAndVerifies) {
  auto hash = hash_password("correct horse");
  ASSERT_TRUE(hash.has_value());
  EXPECT_TRUE(hash->starts_with("$argon2id$v=19$m=19456,t=2,p=1$")) << *hash;
  EXPECT_TRUE(verify_password(*hash, "correct horse"));
  EXPECT_FALSE(verify_password(*hash, "wrong horse"));
  EXPECT_FALSE(hash_password("short").has_value());
}

}  // namespace
}  // namespace ig::accounts
