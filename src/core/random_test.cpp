#include "core/random.h"

#include <gtest/gtest.h>

#include <array>
#include <string>

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
