#include "core/standard_webhooks.h"

#include <gtest/gtest.h>

#include "core/base64.h"

namespace ig {
namespace {

// The test vector published with the Standard Webhooks specification.
constexpr std::string_view kSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr std::string_view kMsgId = "msg_p5jXN8AQM9LWM0D4loKWxJek";
constexpr std::int64_t kTimestamp = 1614265330;
constexpr std::string_view kBody = R"({"test": 2432232314})";
constexpr std::string_view kSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

TEST(StandardWebhooks, SignsTheSpecTestVector) {
  EXPECT_EQ(sign_webhook(kSecret, kMsgId, kTimestamp, kBody), kSignature);
}

TEST(StandardWebhooks, VerifiesTheSpecTestVector) {
  EXPECT_TRUE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody, kSignature));
  EXPECT_TRUE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody, kSignature, kTimestamp + 299));
  EXPECT_TRUE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody, kSignature, kTimestamp - 300));
}

TEST(StandardWebhooks, WrongKeyFails) {
  SeededRandom random(3);
  const std::string other = generate_webhook_secret(random);
  EXPECT_FALSE(verify_webhook(other, kMsgId, kTimestamp, kBody, kSignature));
  EXPECT_NE(sign_webhook(other, kMsgId, kTimestamp, kBody), kSignature);
}

TEST(StandardWebhooks, TamperedContentFails) {
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp, R"({"test": 2432232315})", kSignature));
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp + 1, kBody, kSignature));
  EXPECT_FALSE(
      verify_webhook(kSecret, "msg_p5jXN8AQM9LWM0D4loKWxJel", kTimestamp, kBody, kSignature));
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody,
                              "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="));
}

TEST(StandardWebhooks, TimestampOutsideToleranceFails) {
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody, kSignature, kTimestamp + 301));
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody, kSignature, kTimestamp - 301));
  EXPECT_TRUE(
      verify_webhook(kSecret, kMsgId, kTimestamp, kBody, kSignature, kTimestamp + 3000, 3600));
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody, kSignature, kTimestamp, -1));
}

TEST(StandardWebhooks, AcceptsAnyOfSeveralSignatures) {
  const std::string stale = "v1,Qm9ndXNfc2lnbmF0dXJlX29mX3RoaXJ0eV90d29fYnk=";
  EXPECT_TRUE(
      verify_webhook(kSecret, kMsgId, kTimestamp, kBody, stale + " " + std::string(kSignature)));
  EXPECT_TRUE(
      verify_webhook(kSecret, kMsgId, kTimestamp, kBody, std::string(kSignature) + " " + stale));
  EXPECT_TRUE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody,
                             "v1a,c29tZXRoaW5nIGVsc2U= " + std::string(kSignature)));
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody, stale));
  // Only v1 entries count: the right MAC under another version label is not accepted.
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody,
                              "v2," + std::string(kSignature.substr(3))));
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody, ""));
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody, "v1,"));
  EXPECT_FALSE(verify_webhook(kSecret, kMsgId, kTimestamp, kBody, "v1,not base64!"));
}

TEST(StandardWebhooks, GeneratedSecretsRoundTrip) {
  SeededRandom random(11);
  const std::string a = generate_webhook_secret(random);
  const std::string b = generate_webhook_secret(random);
  EXPECT_NE(a, b);
  ASSERT_TRUE(a.starts_with("whsec_"));
  EXPECT_EQ(a.size(), 6u + 32u);
  auto key = webhook_secret_key(a);
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->size(), 24u);
  const std::string sig = sign_webhook(a, "msg_1", 1700000000, "{}");
  ASSERT_TRUE(sig.starts_with("v1,"));
  EXPECT_TRUE(verify_webhook(a, "msg_1", 1700000000, "{}", sig, 1700000010));
  EXPECT_FALSE(verify_webhook(b, "msg_1", 1700000000, "{}", sig));
}

TEST(StandardWebhooks, SecretKeyIsTheDecodedSuffix) {
  auto key = webhook_secret_key(kSecret);
  ASSERT_TRUE(key.has_value());
  auto expected = base64_decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  ASSERT_TRUE(expected.has_value());
  EXPECT_EQ(*key, *expected);
  // 64-byte keys are the spec's maximum.
  const std::string big = "whsec_" + base64_encode(std::string(64, 'k'));
  EXPECT_TRUE(webhook_secret_key(big).has_value());
}

TEST(StandardWebhooks, MalformedSecretsAreRejected) {
  for (std::string_view bad : {
           "",                                         // empty
           "whsec_",                                   // no key
           "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",         // no prefix
           "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",   // prefix is case-sensitive
           "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",   // not base64
           "whsec_MfKQ9r8GKYqrTwjUPD8I LPZIo2LaLaSw",  // whitespace
           "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",    // truncated quantum
           "whsec_MfKQ9r8GKYqrTwjUPD8I-PZIo2LaLaSw",   // base64url alphabet
           "whsec_c2hvcnQ=",                           // 5-byte key: too short
       }) {
    EXPECT_FALSE(webhook_secret_key(bad).has_value()) << bad;
    EXPECT_EQ(sign_webhook(bad, kMsgId, kTimestamp, kBody), "") << bad;
    EXPECT_FALSE(verify_webhook(bad, kMsgId, kTimestamp, kBody, kSignature)) << bad;
  }
  const std::string huge = "whsec_" + base64_encode(std::string(65, 'k'));
  EXPECT_FALSE(webhook_secret_key(huge).has_value());
}

}  // namespace
}  // namespace ig
