#include "blobs/http_range.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ig::blobs {
namespace {

constexpr std::uint64_t kSize = 1000;
const std::string kEtag = "\"0123456789abcdef\"";

struct RangeCase {
  std::string header;
  std::uint64_t size;
  RangeKind kind;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

std::string kind_name(RangeKind kind) {
  switch (kind) {
    case RangeKind::kIgnore:
      return "ignore";
    case RangeKind::kSatisfiable:
      return "satisfiable";
    case RangeKind::kUnsatisfiable:
      return "unsatisfiable";
  }
  return "?";
}

TEST(HttpRangeParse, EveryForm) {
  using enum RangeKind;
  const std::string huge = "99999999999999999999999999";  // > 2^64: saturates
  const std::vector<RangeCase> cases = {
      // int-range
      {"bytes=0-99", kSize, kSatisfiable, 0, 100},
      {"bytes=0-0", kSize, kSatisfiable, 0, 1},
      {"bytes=500-999", kSize, kSatisfiable, 500, 500},
      {"bytes=500-1500", kSize, kSatisfiable, 500, 500},  // last clamped
      {"bytes=999-999", kSize, kSatisfiable, 999, 1},
      {"bytes=0-" + huge, kSize, kSatisfiable, 0, kSize},
      // open-ended
      {"bytes=100-", kSize, kSatisfiable, 100, 900},
      {"bytes=0-", kSize, kSatisfiable, 0, kSize},
      {"bytes=999-", kSize, kSatisfiable, 999, 1},
      // suffix-range
      {"bytes=-500", kSize, kSatisfiable, 500, 500},
      {"bytes=-1", kSize, kSatisfiable, 999, 1},
      {"bytes=-1000", kSize, kSatisfiable, 0, kSize},
      {"bytes=-5000", kSize, kSatisfiable, 0, kSize},  // longer than the blob: all of it
      {"bytes=-" + huge, kSize, kSatisfiable, 0, kSize},
      // tolerated spelling
      {"Bytes=0-9", kSize, kSatisfiable, 0, 10},
      {"BYTES=0-9", kSize, kSatisfiable, 0, 10},
      {"  bytes=0-9\t", kSize, kSatisfiable, 0, 10},
      {"bytes=0-9,", kSize, kSatisfiable, 0, 10},  // empty list elements are allowed
      {"bytes=, 0-9 ,,", kSize, kSatisfiable, 0, 10},
      {"bytes=007-008", kSize, kSatisfiable, 7, 2},
      // unsatisfiable → 416
      {"bytes=1000-", kSize, kUnsatisfiable},
      {"bytes=1000-2000", kSize, kUnsatisfiable},
      {"bytes=5000-", kSize, kUnsatisfiable},
      {"bytes=" + huge + "-", kSize, kUnsatisfiable},
      {"bytes=-0", kSize, kUnsatisfiable},
      {"bytes=1-1", 1, kUnsatisfiable},
      // an empty blob ignores every range
      {"bytes=0-", 0, kIgnore},
      {"bytes=0-0", 0, kIgnore},
      {"bytes=-1", 0, kIgnore},
      {"bytes=-0", 0, kIgnore},
      // several ranges → ignored
      {"bytes=0-99,200-299", kSize, kIgnore},
      {"bytes=0-0,-1", kSize, kIgnore},
      {"bytes=0-99, 0-99", kSize, kIgnore},
      {"bytes=5000-,6000-", kSize, kIgnore},
      // malformed → ignored
      {"", kSize, kIgnore},
      {"bytes", kSize, kIgnore},
      {"bytes=", kSize, kIgnore},
      {"bytes=,", kSize, kIgnore},
      {"bytes=-", kSize, kIgnore},
      {"bytes=--5", kSize, kIgnore},
      {"bytes=abc", kSize, kIgnore},
      {"bytes=5", kSize, kIgnore},
      {"bytes=5-4", kSize, kIgnore},  // last < first is invalid
      {"bytes=1-2-3", kSize, kIgnore},
      {"bytes=+1-2", kSize, kIgnore},
      {"bytes=1 - 2", kSize, kIgnore},
      {"bytes = 0-9", kSize, kIgnore},
      {"bytes=0x10-20", kSize, kIgnore},
      {"bytes=-5a", kSize, kIgnore},
      {"bytes=0-9;x", kSize, kIgnore},
      {"items=0-9", kSize, kIgnore},
      {"byte=0-9", kSize, kIgnore},
      {"=0-9", kSize, kIgnore},
      {"0-9", kSize, kIgnore},
      {std::string("bytes=0-9\0", 10), kSize, kIgnore},
  };
  for (const auto& c : cases) {
    ParsedRange got = parse_range(c.header, c.size);
    EXPECT_EQ(kind_name(got.kind), kind_name(c.kind)) << "'" << c.header << "' size " << c.size;
    if (c.kind == RangeKind::kSatisfiable && got.kind == RangeKind::kSatisfiable) {
      EXPECT_EQ(got.range.offset, c.offset) << c.header;
      EXPECT_EQ(got.range.length, c.length) << c.header;
    }
  }
}

struct TagCase {
  std::string header;
  bool match;
};

TEST(HttpRangeIfNoneMatch, WeakComparisonOverLists) {
  const std::vector<TagCase> cases = {
      {"\"0123456789abcdef\"", true},
      {"W/\"0123456789abcdef\"", true},
      {"*", true},
      {"  *  ", true},
      {"\"other\"", false},
      {"\"other\", \"0123456789abcdef\"", true},
      {"\"other\",W/\"0123456789abcdef\"", true},
      {"\"a\" , \"b\" ,\t\"0123456789abcdef\"", true},
      {"\"a\", \"b\"", false},
      {", \"0123456789abcdef\",", true},        // empty elements
      {"\"a,b\", \"0123456789abcdef\"", true},  // commas inside a tag
      {"\"0123456789abcdef", false},            // unterminated
      {"0123456789abcdef", false},              // unquoted
      {"w/\"0123456789abcdef\"", false},        // W is case-sensitive
      {"\"0123456789ABCDEF\"", false},          // opaque-tags are case-sensitive
      {"\"0123456789abcdef\" \"x\"", false},    // missing comma
      {"*, \"0123456789abcdef\"", false},       // '*' only alone
      {"\"\"", false},
      {",", false},
      {"", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(if_none_match_matches(c.header, kEtag), c.match) << c.header;
  }
  // Our own tag being weak still matches weakly.
  EXPECT_TRUE(if_none_match_matches("\"x\"", "W/\"x\""));
}

TEST(HttpRangeIfRange, StrongComparisonOnly) {
  const std::vector<TagCase> cases = {
      {"\"0123456789abcdef\"", true},
      {" \"0123456789abcdef\" ", true},
      {"W/\"0123456789abcdef\"", false},  // weak tags never match strongly
      {"\"other\"", false},
      {"\"0123456789abcdef\", \"x\"", false},    // a single tag only
      {"Tue, 15 Nov 1994 08:12:31 GMT", false},  // dates are not compared
      {"*", false},
      {"", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(if_range_matches(c.header, kEtag), c.match) << c.header;
  }
  EXPECT_FALSE(if_range_matches("\"x\"", "W/\"x\""));
}

// Owns the header values that ConditionalHeaders only views.
struct Request {
  std::string range;
  std::string if_none_match;
  std::string if_range;
};

struct PlanCase {
  std::string name;
  Request headers;
  std::uint64_t size;
  int status;
  std::uint64_t offset;
  std::uint64_t length;
  std::string content_range;
};

TEST(HttpRangePlan, StatusBodyAndContentRange) {
  const std::string other = "\"zzz\"";
  const std::vector<PlanCase> cases = {
      {"plain GET", {}, kSize, 200, 0, kSize, ""},
      {"first 100", {.range = "bytes=0-99"}, kSize, 206, 0, 100, "bytes 0-99/1000"},
      {"from 100", {.range = "bytes=100-"}, kSize, 206, 100, 900, "bytes 100-999/1000"},
      {"last 500", {.range = "bytes=-500"}, kSize, 206, 500, 500, "bytes 500-999/1000"},
      {"clamped", {.range = "bytes=900-5000"}, kSize, 206, 900, 100, "bytes 900-999/1000"},
      {"one byte file", {.range = "bytes=0-"}, 1, 206, 0, 1, "bytes 0-0/1"},
      {"past the end", {.range = "bytes=1000-"}, kSize, 416, 0, 0, "bytes */1000"},
      {"zero suffix", {.range = "bytes=-0"}, kSize, 416, 0, 0, "bytes */1000"},
      {"multiple ranges", {.range = "bytes=0-1,5-6"}, kSize, 200, 0, kSize, ""},
      {"malformed", {.range = "bytes=oops"}, kSize, 200, 0, kSize, ""},
      {"other unit", {.range = "pages=1-2"}, kSize, 200, 0, kSize, ""},
      {"empty blob", {.range = "bytes=0-"}, 0, 200, 0, 0, ""},
      {"etag matches", {.if_none_match = kEtag}, kSize, 304, 0, 0, ""},
      {"star matches", {.if_none_match = "*"}, kSize, 304, 0, 0, ""},
      {"etag differs", {.if_none_match = other}, kSize, 200, 0, kSize, ""},
      {"304 wins over range",
       {.range = "bytes=0-9", .if_none_match = "W/" + kEtag},
       kSize,
       304,
       0,
       0,
       ""},
      {"304 wins over 416", {.range = "bytes=5000-", .if_none_match = kEtag}, kSize, 304, 0, 0, ""},
      {"stale etag then range",
       {.range = "bytes=0-9", .if_none_match = other},
       kSize,
       206,
       0,
       10,
       "bytes 0-9/1000"},
      {"if-range matches",
       {.range = "bytes=0-9", .if_range = kEtag},
       kSize,
       206,
       0,
       10,
       "bytes 0-9/1000"},
      {"if-range differs", {.range = "bytes=0-9", .if_range = other}, kSize, 200, 0, kSize, ""},
      {"if-range weak", {.range = "bytes=0-9", .if_range = "W/" + kEtag}, kSize, 200, 0, kSize, ""},
      {"if-range date",
       {.range = "bytes=0-9", .if_range = "Tue, 15 Nov 1994 08:12:31 GMT"},
       kSize,
       200,
       0,
       kSize,
       ""},
      {"if-range differs, unsatisfiable",
       {.range = "bytes=5000-", .if_range = other},
       kSize,
       200,
       0,
       kSize,
       ""},
      {"if-range without range", {.if_range = other}, kSize, 200, 0, kSize, ""},
  };
  for (const auto& c : cases) {
    const ConditionalHeaders headers{
        .range = c.headers.range,
        .if_none_match = c.headers.if_none_match,
        .if_range = c.headers.if_range,
    };
    ResponsePlan plan = plan_response(headers, c.size, kEtag);
    EXPECT_EQ(plan.status, c.status) << c.name;
    EXPECT_EQ(plan.offset, c.offset) << c.name;
    EXPECT_EQ(plan.length, c.length) << c.name;
    EXPECT_EQ(plan.content_range, c.content_range) << c.name;
  }
}

TEST(HttpRangePlan, HugeSizesFormatExactly) {
  const std::uint64_t size = UINT64_MAX;
  ResponsePlan plan = plan_response({.range = "bytes=-1"}, size, kEtag);
  EXPECT_EQ(plan.status, 206);
  EXPECT_EQ(plan.offset, UINT64_MAX - 1);
  EXPECT_EQ(plan.length, 1u);
  EXPECT_EQ(plan.content_range,
            "bytes 18446744073709551614-18446744073709551614/18446744073709551615");
}

}  // namespace
}  // namespace ig::blobs
