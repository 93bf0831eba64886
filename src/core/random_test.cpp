#include "core/random.h"

#include <gtest/gtest.h>

#include <array>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace ig {
namespace {

bool is_base62(const std::string& s) {
  for (char c : s) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    if (!ok) return false;
  }
  return true;
}

TEST(RandomTest, Base62HasTheAskedLengthAndAlphabet) {
  SodiumRandom random;
  for (std::size_t length : {0u, 1u, 24u, 43u, 64u, 65u, 300u}) {
    const std::string s = random.base62(length);
    EXPECT_EQ(s.size(), length);
    EXPECT_TRUE(is_base62(s)) << s;
  }
}

// Draws come from a shared buffer: concurrent callers must never be handed the same bytes, and
// a draw that spans a refill must still be whole.
TEST(RandomTest, SodiumDrawsAreNeverHandedOutTwiceAcrossThreads) {
  SodiumRandom random;
  constexpr int kThreads = 4;
  constexpr int kDraws = 5'000;
  std::vector<std::vector<std::string>> drawn(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&random, &out = drawn[t], t] {
      for (int i = 0; i < kDraws; ++i) {
        // 7, 16, 33 or 60 bytes: sizes that straddle the 256-byte refills at varying offsets.
        std::string bytes(std::array<std::size_t, 4>{7, 16, 33, 60}[(i + t) % 4], '\0');
        random.fill({reinterpret_cast<std::uint8_t*>(bytes.data()), bytes.size()});
        out.push_back(std::move(bytes));
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::string> unique;
  for (const auto& list : drawn) {
    for (const auto& bytes : list) {
      if (bytes.size() >= 16) EXPECT_TRUE(unique.insert(bytes).second);
    }
  }
  EXPECT_GT(unique.size(), 10'000u);
}

TEST(RandomTest, SodiumUniformStaysInRangeAndCoversIt) {
  SodiumRandom random;
  EXPECT_EQ(random.uniform(0), 0u);
  EXPECT_EQ(random.uniform(1), 0u);
  std::array<int, 7> counts{};
  for (int i = 0; i < 7'000; ++i) {
    const std::uint32_t r = random.uniform(7);
    ASSERT_LT(r, 7u);
    ++counts[r];
  }
  for (int c : counts) {
    EXPECT_GT(c, 800);  // ~1,000 each; +-200 is over 6 standard deviations
    EXPECT_LT(c, 1200);
  }
  for (int i = 0; i < 1'000; ++i) EXPECT_LT(random.uniform(0x80000001u), 0x80000001u);
}

TEST(RandomTest, Base62IsDeterministicForASeedAndDiffersAcrossSeeds) {
  SeededRandom a(5), b(5), c(6);
  const std::string first = a.base62(40);
  EXPECT_EQ(first, b.base62(40));
  EXPECT_NE(first, c.base62(40));
}

TEST(RandomTest, Base62UsesEveryCharacterAboutEqually) {
  // 62,000 characters: each should appear ~1,000 times. A modulo bias (256 % 62 = 8 symbols
  // drawn 5/4 as often) would put those near 1,211; +-150 is ~4.7 standard deviations.
  SeededRandom random(42);
  const std::string s = random.base62(62'000);
  std::array<int, 128> counts{};
  for (char c : s) ++counts[static_cast<unsigned char>(c)];
  for (char c : std::string("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")) {
    EXPECT_GT(counts[static_cast<unsigned char>(c)], 850) << c;
    EXPECT_LT(counts[static_cast<unsigned char>(c)], 1150) << c;
  }
}

TEST(RandomTest, TimePrefixIsFixedWidthAndSortsLikeTheTime) {
  EXPECT_EQ(time_prefix(0), "00000000");
  EXPECT_EQ(time_prefix(-5), "00000000");
  EXPECT_EQ(time_prefix(61), "0000000z");
  EXPECT_EQ(time_prefix(62), "00000010");
  std::string previous = time_prefix(1'700'000'000'000);
  EXPECT_EQ(previous.size(), kTimePrefixLength);
  for (std::int64_t ms :
       {1'700'000'000'001LL, 1'700'000'000'062LL, 1'800'000'000'000LL, 4'000'000'000'000LL}) {
    std::string next = time_prefix(ms);
    EXPECT_EQ(next.size(), kTimePrefixLength);
    EXPECT_LT(previous, next) << ms;
    previous = next;
  }
}

}  // namespace
}  // namespace ig
