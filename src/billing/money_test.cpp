#include "billing/money.h"

#include <gtest/gtest.h>

#include "core/json.h"

namespace ig {
namespace {

TEST(MoneyTest, ParsesExactDecimals) {
  EXPECT_EQ(*parse_credits("4.7"), 4'700'000);
  EXPECT_EQ(*parse_credits("100"), credits(100));
  EXPECT_EQ(*parse_credits("0.0235"), 23'500);
  EXPECT_EQ(*parse_credits("0.000001"), 1);
  EXPECT_EQ(*parse_credits("-2.5"), -2'500'000);
  EXPECT_EQ(*parse_credits("+3"), credits(3));
  EXPECT_EQ(*parse_credits(".5"), 500'000);
  EXPECT_EQ(*parse_credits("1000000000"), kMaxMicros);
  EXPECT_EQ(*parse_credits("0"), 0);
  EXPECT_EQ(*parse_credits("007.10"), 7'100'000);
}

TEST(MoneyTest, RejectsBadInput) {
  for (const char* bad : {"", "abc", "1e999", "1e3", "-0", "+0", "-0.0", "1.0000001", "1.", "1..2",
                          "1,5", " 1", "1 ", "--1", "0x10", "NaN", "inf", "1000000000.000001",
                          "99999999999", "-", "."}) {
    auto r = parse_credits(bad);
    EXPECT_FALSE(r.has_value()) << "accepted '" << bad << "'";
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest);
    }
  }
}

TEST(MoneyTest, FormatsCanonically) {
  EXPECT_EQ(format_credits(4'700'000), "4.7");
  EXPECT_EQ(format_credits(credits(100)), "100");
  EXPECT_EQ(format_credits(23'500), "0.0235");
  EXPECT_EQ(format_credits(1), "0.000001");
  EXPECT_EQ(format_credits(-2'500'000), "-2.5");
  EXPECT_EQ(format_credits(0), "0");
  EXPECT_EQ(format_credits(kMaxMicros), "1000000000");
}

TEST(MoneyTest, JsonNumberTextIsExact) {
  EXPECT_EQ(to_json_text(credits_json(4'700'000)), "4.7");
  EXPECT_EQ(to_json_text(credits_json(credits(42))), "42");
  EXPECT_EQ(to_json_text(credits_json(14'100'000)), "14.1");
  EXPECT_EQ(to_json_text(credits_json(kMaxMicros - 1)), "999999999.999999");
  // Every amount up to the cap renders as its exact decimal; sample across magnitudes.
  for (Micros m = 1; m < kMaxMicros; m = m * 7 + 13) {
    ASSERT_EQ(to_json_text(credits_json(m)), format_credits(m)) << m;
    ASSERT_EQ(to_json_text(credits_json(-m)), format_credits(-m)) << m;
  }
}

TEST(MoneyTest, RoundTrips) {
  for (Micros m : {Micros{1}, Micros{999'999}, Micros{4'700'000}, Micros{123'456'789'012},
                   kMaxMicros}) {
    EXPECT_EQ(*parse_credits(format_credits(m)), m);
    EXPECT_EQ(*parse_credits(format_credits(-m)), -m);
  }
}

}  // namespace
}  // namespace ig
