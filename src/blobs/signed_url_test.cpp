#include "blobs/signed_url.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <latch>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/random.h"
#include "core/temp_dir_for_tests.h"

namespace ig::blobs {
namespace {

namespace fs = std::filesystem;

const std::string kKey(32, 'k');
constexpr std::string_view kResource = "/v1/files/AbCdEfGhIjKlMnOpQrStUv/content";

std::string code_of(const Result<void>& result) {
  if (result) return "ok";
  switch (result.error().code) {
    case ErrorCode::kPermissionDenied:
      return "kPermissionDenied";
    case ErrorCode::kInternal:
      return "kInternal";
    default:
      return "other: " + result.error().message;
  }
}

// "exp=...&sig=..." → the two values.
std::pair<std::string, std::string> split_token(const std::string& token) {
  std::size_t amp = token.find('&');
  return {token.substr(4, amp - 4), token.substr(amp + 5)};
}

class UrlSignerTest : public testing::Test {
 protected:
  FakeClock clock_;
  UrlSigner signer_{kKey, clock_};
  std::int64_t later() const { return clock_.now_s() + 600; }
};

TEST_F(UrlSignerTest, SignsIntoAQueryStringThatVerifies) {
  const std::int64_t exp = later();
  std::string token = signer_.sign(kResource, exp);
  auto [exp_text, sig] = split_token(token);
  EXPECT_TRUE(token.starts_with("exp=" + std::to_string(exp) + "&sig="));
  EXPECT_EQ(exp_text, std::to_string(exp));
  EXPECT_EQ(sig, signer_.signature(kResource, exp));
  EXPECT_EQ(sig.size(), 43u);  // 32 bytes, base64url without padding
  for (char c : sig) {
    bool url_safe = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
    EXPECT_TRUE(url_safe) << sig;
  }
  EXPECT_EQ(code_of(signer_.verify(kResource, exp, sig)), "ok");
}

TEST_F(UrlSignerTest, SignatureIsDeterministicAndKeyed) {
  const std::int64_t exp = later();
  UrlSigner same(kKey, clock_);
  UrlSigner other(std::string(32, 'o'), clock_);
  EXPECT_EQ(signer_.signature(kResource, exp), same.signature(kResource, exp));
  EXPECT_NE(signer_.signature(kResource, exp), other.signature(kResource, exp));
  EXPECT_EQ(code_of(other.verify(kResource, exp, signer_.signature(kResource, exp))),
            "kPermissionDenied");
}

TEST_F(UrlSignerTest, TamperingWithAnyPartFails) {
  const std::int64_t exp = later();
  const std::string sig = signer_.signature(kResource, exp);
  std::string other_resource(kResource);
  other_resource[10] ^= 1;
  EXPECT_EQ(code_of(signer_.verify(other_resource, exp, sig)), "kPermissionDenied");
  EXPECT_EQ(code_of(signer_.verify(std::string(kResource) + "x", exp, sig)), "kPermissionDenied");
  EXPECT_EQ(code_of(signer_.verify(kResource.substr(1), exp, sig)), "kPermissionDenied");
  EXPECT_EQ(code_of(signer_.verify(kResource, exp + 1, sig)), "kPermissionDenied");
  EXPECT_EQ(code_of(signer_.verify(kResource, exp - 1, sig)), "kPermissionDenied");
  for (std::size_t i = 0; i < sig.size(); ++i) {
    std::string bad = sig;
    bad[i] = bad[i] == 'A' ? 'B' : 'A';
    EXPECT_EQ(code_of(signer_.verify(kResource, exp, bad)), "kPermissionDenied") << i;
  }
  for (const std::string& bad : {std::string(), sig.substr(1), sig + "A", sig + "=",
                                 std::string(43, '\0'), signer_.sign(kResource, exp)}) {
    EXPECT_EQ(code_of(signer_.verify(kResource, exp, bad)), "kPermissionDenied") << bad;
  }
}

// Moving bytes between the resource and the expiry never yields the same message.
TEST_F(UrlSignerTest, MessageFramingIsUnambiguous) {
  EXPECT_NE(signer_.signature("1", 23), signer_.signature("21", 3));
  EXPECT_NE(signer_.signature("\n1", 2), signer_.signature("1", 2));
  EXPECT_NE(signer_.signature("/a", 1), signer_.signature("/a", 10));
}

TEST_F(UrlSignerTest, ExpiresAtTheGivenSecond) {
  const std::int64_t exp = clock_.now_s() + 60;
  const std::string sig = signer_.signature(kResource, exp);
  clock_.advance_ms(59'999);
  EXPECT_EQ(code_of(signer_.verify(kResource, exp, sig)), "ok");
  clock_.set_ms(exp * 1000);
  auto expired = signer_.verify(kResource, exp, sig);
  EXPECT_EQ(code_of(expired), "kPermissionDenied");
  EXPECT_NE(expired.error().message.find("expired"), std::string::npos);
  clock_.advance_ms(86'400'000);
  EXPECT_EQ(code_of(signer_.verify(kResource, exp, sig)), "kPermissionDenied");
  // A signature already in the past when made never verifies.
  const std::int64_t past = clock_.now_s() - 1;
  EXPECT_EQ(code_of(signer_.verify(kResource, past, signer_.signature(kResource, past))),
            "kPermissionDenied");
}

TEST_F(UrlSignerTest, AShortKeyFailsClosed) {
  UrlSigner weak(std::string(31, 'k'), clock_);
  const std::int64_t exp = later();
  EXPECT_EQ(code_of(weak.verify(kResource, exp, weak.signature(kResource, exp))), "kInternal");
  UrlSigner empty("", clock_);
  EXPECT_EQ(code_of(empty.verify(kResource, exp, empty.signature(kResource, exp))), "kInternal");
}

// --- the persistent secret ---

class SigningSecretFileTest : public testing::Test {
 protected:
  fs::path key_path() const { return dir_.path() / "data" / "url_signing.key"; }

  TempDir dir_{"sign"};
  SodiumRandom random_;
};

TEST_F(SigningSecretFileTest, CreatesA32ByteOwnerOnlyFileAndReusesIt) {
  auto created = load_or_create_secret(key_path(), random_);
  ASSERT_TRUE(created) << created.error().message;
  EXPECT_EQ(created->size(), 32u);
  struct stat st {};
  ASSERT_EQ(::stat(key_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);

  auto loaded = load_or_create_secret(key_path(), random_);
  ASSERT_TRUE(loaded) << loaded.error().message;
  EXPECT_EQ(*loaded, *created);

  std::set<std::string> entries;
  for (const auto& entry : fs::directory_iterator(key_path().parent_path())) {
    entries.insert(entry.path().filename().string());
  }
  EXPECT_EQ(entries, std::set<std::string>{"url_signing.key"});  // no temp file left
}

TEST_F(SigningSecretFileTest, UrlsSurviveARestart) {
  FakeClock clock;
  auto key = load_or_create_secret(key_path(), random_);
  ASSERT_TRUE(key);
  const std::int64_t exp = clock.now_s() + 3600;
  std::string sig = UrlSigner(*key, clock).signature(kResource, exp);

  auto reloaded = load_or_create_secret(key_path(), random_);
  ASSERT_TRUE(reloaded);
  EXPECT_EQ(code_of(UrlSigner(*reloaded, clock).verify(kResource, exp, sig)), "ok");
}

TEST_F(SigningSecretFileTest, AWrongSizedFileIsAnErrorNotSilentlyReplaced) {
  fs::create_directories(key_path().parent_path());
  for (std::string content : {std::string(), std::string(31, 'x'), std::string(33, 'x')}) {
    std::ofstream(key_path(), std::ios::binary | std::ios::trunc) << content;
    auto loaded = load_or_create_secret(key_path(), random_);
    ASSERT_FALSE(loaded) << content.size();
    EXPECT_EQ(loaded.error().code, ErrorCode::kInternal);
    EXPECT_EQ(fs::file_size(key_path()), content.size());
  }
}

TEST_F(SigningSecretFileTest, ConcurrentFirstStartsAgreeOnOneKey) {
  constexpr int kThreads = 8;
  std::vector<std::string> keys(kThreads);
  std::vector<std::string> errors(kThreads);
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      SodiumRandom random;
      start.arrive_and_wait();
      auto key = load_or_create_secret(key_path(), random);
      if (key) {
        keys[t] = *key;
      } else {
        errors[t] = key.error().message;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], "") << t;
    EXPECT_EQ(keys[t], keys[0]) << t;
  }
  EXPECT_EQ(keys[0].size(), 32u);
}

}  // namespace
}  // namespace ig::blobs
