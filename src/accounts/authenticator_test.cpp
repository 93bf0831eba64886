#include "accounts/authenticator.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include "accounts/api_key.h"
#include "store/memory/memory_store.h"

namespace ig::accounts {
namespace {

namespace asio = boost::asio;

// Counts lookups so the tests can prove cache hits never touch the store.
class CountingStore : public store::MemoryStore {
 public:
  using MemoryStore::MemoryStore;
  store::StoreResult<store::AuthRecord> find_auth_by_key_hash(std::string_view hash) override {
    ++lookups;
    return MemoryStore::find_auth_by_key_hash(hash);
  }
  int lookups = 0;
};

class AuthenticatorTest : public ::testing::Test {
 protected:
  AuthenticatorTest() : store_(clock_), pool_(2), auth_(store_, pool_, clock_, AuthSettings{}) {
    auto user = store_.create_user({"a@example.com", "x", false});
    user_id_ = user->id;
    auto key = generate_api_key(random_);
    secret_ = key.secret;
    key_id_ = store_.create_api_key({user_id_, "k", key.prefix, key.last4, key.hash})->id;
    auth_.poll_revocations();
  }

  Result<Principal> run(const std::string& header) {
    asio::io_context ioc;
    auto fut = asio::co_spawn(ioc, auth_.authenticate(header), asio::use_future);
    ioc.run();
    return fut.get();
  }

  FakeClock clock_;
  SeededRandom random_{42};
  CountingStore store_;
  BlockingPool pool_;
  Authenticator auth_;
  std::int64_t user_id_ = 0;
  std::int64_t key_id_ = 0;
  std::string secret_;
};

TEST_F(AuthenticatorTest, ValidKeyAuthenticatesAndIsCached) {
  auto p = run("Bearer " + secret_);
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->user_id, user_id_);
  EXPECT_EQ(p->key_prefix, secret_.substr(0, 11));
  EXPECT_EQ(store_.lookups, 1);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(run("Bearer " + secret_).has_value());
  EXPECT_EQ(store_.lookups, 1);
}

TEST_F(AuthenticatorTest, CacheEntriesExpire) {
  ASSERT_TRUE(run("Bearer " + secret_).has_value());
  clock_.advance_ms(AuthSettings{}.cache_ttl_ms + 1);
  ASSERT_TRUE(run("Bearer " + secret_).has_value());
  EXPECT_EQ(store_.lookups, 2);
}

TEST_F(AuthenticatorTest, RevocationSeenAfterPoll) {
  ASSERT_TRUE(run("Bearer " + secret_).has_value());
  ASSERT_TRUE(store_.revoke_api_key(key_id_).has_value());
  auth_.poll_revocations();
  auto p = run("Bearer " + secret_);
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().code, ErrorCode::kInvalidApiKey);
  EXPECT_NE(p.error().message.find("revoked"), std::string::npos);
}

TEST_F(AuthenticatorTest, DisabledUserRejected) {
  ASSERT_TRUE(run("Bearer " + secret_).has_value());
  ASSERT_TRUE(store_.set_user_disabled(user_id_, true).has_value());
  auth_.poll_revocations();
  auto p = run("Bearer " + secret_);
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().code, ErrorCode::kInvalidApiKey);
}

TEST_F(AuthenticatorTest, UnknownAndMalformedKeys) {
  auto unknown = run("Bearer sk-" + std::string(43, 'Z'));
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, ErrorCode::kInvalidApiKey);
  EXPECT_EQ(store_.lookups, 1);
  ASSERT_FALSE(run("Bearer sk-" + std::string(43, 'Z')).has_value());
  EXPECT_EQ(store_.lookups, 1) << "negative entries are cached";
  ASSERT_FALSE(run("").has_value());
  ASSERT_FALSE(run("Bearer sk-" + std::string(10'000, 'a')).has_value());
  EXPECT_EQ(store_.lookups, 1) << "malformed keys never reach the store";
}

TEST_F(AuthenticatorTest, LastUsedIsBatched) {
  clock_.set_ms(1'800'000'000'000);
  ASSERT_TRUE(run("Bearer " + secret_).has_value());
  EXPECT_FALSE(store_.list_api_keys(user_id_)->front().last_used_at.has_value());
  auth_.flush_last_used();
  EXPECT_EQ(store_.list_api_keys(user_id_)->front().last_used_at, 1'800'000'000);
}

}  // namespace
}  // namespace ig::accounts
