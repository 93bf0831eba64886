#include "core/json.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <random>
#include <string>

namespace ig {
namespace {

// Strings are escaped by hand for speed; Boost.JSON's serializer is the reference for the bytes.
TEST(JsonTextTest, StringsEscapeByteForByteLikeBoostJson) {
  std::mt19937 rng(20261121);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> length(0, 40);
  std::string every_byte;
  for (int c = 0; c < 256; ++c) every_byte += static_cast<char>(c);
  std::vector<std::string> cases = {
      "", "plain", "\"quoted\"", "back\\slash", "\x7f\x1f\t\n", "日本語 prompt", every_byte};
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    for (int n = length(rng); n > 0; --n) s += static_cast<char>(byte(rng));
    cases.push_back(s);
  }
  for (const auto& s : cases) {
    const boost::json::value v = boost::json::string(s);
    EXPECT_EQ(to_json_text(v), boost::json::serialize(v)) << "input bytes: " << s.size();
    const boost::json::value keyed = boost::json::object{{s, 1}};
    EXPECT_EQ(to_json_text(keyed), boost::json::serialize(keyed));
  }
}

// Strings are scanned eight bytes at a time: one byte to escape at every offset of long clean
// text (ASCII and UTF-8), each escape kind, must come out as Boost.JSON writes it.
TEST(JsonTextTest, EscapesAtEveryOffsetOfLongCleanText) {
  const std::string clean = "The quick brown fox, 日本語 \x7f\xff~ jumps over 0123456789";
  const std::string specials = std::string("\"\\\b\f\n\r\t\x01\x1f", 9) + std::string(1, '\0');
  for (char special : specials) {
    for (std::size_t at = 0; at <= clean.size(); ++at) {
      std::string s = clean;
      s.insert(at, 1, special);
      const boost::json::value v = boost::json::string(s);
      ASSERT_EQ(to_json_text(v), boost::json::serialize(v)) << "escape at " << at;
    }
  }
  const boost::json::value plain = boost::json::string(clean + clean + clean);
  EXPECT_EQ(to_json_text(plain), boost::json::serialize(plain));
}

TEST(JsonTextTest, NumbersUsePlainShortestDigits) {
  EXPECT_EQ(to_json_text(boost::json::value(4.7)), "4.7");
  EXPECT_EQ(to_json_text(boost::json::value(-12)), "-12");
  EXPECT_EQ(to_json_text(boost::json::value(18446744073709551615ull)), "18446744073709551615");
  EXPECT_EQ(to_json_text(boost::json::value(1e300)), "1e+300");
  EXPECT_EQ(to_json_text(boost::json::array{nullptr, true, "x"}), R"([null,true,"x"])");
}

// The writer must produce what building the same value and rendering it would: same bytes, and
// text Boost.JSON parses back to an equal value.
TEST(JsonWriterTest, MatchesRenderingTheBuiltValue) {
  JsonWriter w;
  w.begin_object()
      .str("prompt", "a \"quoted\" cat\n日本")
      .num("n", -3)
      .flag("stream", false)
      .key("empty_object")
      .begin_object()
      .end_object()
      .key("list")
      .begin_array()
      .number(1)
      .string("x")
      .begin_object()
      .flag("y", true)
      .end_object()
      .begin_array()
      .end_array()
      .end_array()
      .key("raw")
      .value(boost::json::value(4.7))
      .end_object();
  const boost::json::value expected = {
      {"prompt", "a \"quoted\" cat\n日本"},
      {"n", -3},
      {"stream", false},
      {"empty_object", boost::json::object{}},
      {"list", boost::json::array{1, "x", boost::json::object{{"y", true}}, boost::json::array{}}},
      {"raw", 4.7}};
  EXPECT_EQ(w.text(), to_json_text(expected));
  EXPECT_EQ(boost::json::parse(w.text()), expected);
  EXPECT_EQ(w.take(), to_json_text(expected));
}

TEST(JsonWriterTest, TopLevelScalarsAndEmptyContainers) {
  EXPECT_EQ(JsonWriter().begin_array().end_array().text(), "[]");
  EXPECT_EQ(JsonWriter().begin_object().end_object().text(), "{}");
  EXPECT_EQ(JsonWriter().number(INT64_MIN).text(), "-9223372036854775808");
  EXPECT_EQ(JsonWriter().string("").text(), R"("")");
}

}  // namespace
}  // namespace ig
