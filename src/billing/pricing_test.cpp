#include "billing/pricing.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "billing/price_config.h"

namespace ig::billing {
namespace {

constexpr Micros kMicro = 1;

// The [models.price] table of the first model in examples/prices/<file>.
Result<PriceRule> load_sheet(const std::string& file) {
  const std::string path = std::string(IMAGEGATE_SOURCE_DIR) + "/examples/prices/" + file;
  try {
    toml::table root = toml::parse_file(path);
    const toml::table* price = root["models"][0]["price"].as_table();
    if (price == nullptr) return fail(ErrorCode::kInternal, path + ": no [models.price]");
    return parse_price_rule(*price);
  } catch (const toml::parse_error& e) {
    return fail(ErrorCode::kInternal, path + ": " + std::string(e.description()));
  }
}

PriceRule sheet(const std::string& file) {
  auto rule = load_sheet(file);
  EXPECT_TRUE(rule.has_value()) << file << ": " << rule.error().message;
  return rule.value_or(PriceRule{});
}

Result<PriceRule> parse_text(std::string_view text) {
  try {
    return parse_price_rule(toml::parse(text));
  } catch (const toml::parse_error& e) {
    return fail(ErrorCode::kInternal, std::string(e.description()));
  }
}

// The param of the error parsing `text` ("ok" when it parses).
std::string parse_error_param(std::string_view text) {
  auto rule = parse_text(text);
  if (rule) return "ok";
  EXPECT_EQ(rule.error().code, ErrorCode::kInvalidRequest) << rule.error().message;
  EXPECT_EQ(rule.error().message.rfind(rule.error().param.value_or("?") + ":", 0), 0u)
      << "message should start with the key: " << rule.error().message;
  return rule.error().param.value_or("");
}

Micros q(const PriceRule& rule, Tier tier, std::string quality = "", std::int64_t n = 1) {
  auto r = quote(rule, {.tier = tier, .quality = std::move(quality), .n = n});
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return r.value_or(-1);
}

TEST(PricingTest, Seed000OneTwoThreeCredits) {
  const auto rule = sheet("seed000.toml");
  EXPECT_EQ(q(rule, Tier::k1K), credits(1));  // standard
  EXPECT_EQ(q(rule, Tier::k2K), credits(2));  // hd
  EXPECT_EQ(q(rule, Tier::k4K), credits(3));  // uhd
  EXPECT_EQ(q(rule, Tier::k2K, "high", 3), credits(6));
  EXPECT_EQ(*settle_amount(rule, {.tier = Tier::k4K}, std::nullopt), credits(3));
}

TEST(PricingTest, Seed001MatrixWithAutoAsMedium) {
  const auto rule = sheet("seed001.toml");
  struct Cell {
    Tier tier;
    const char* quality;
    Micros micros;  // USD x 1e6, 1 credit = 1 USD
  };
  for (const Cell& c : {Cell{Tier::k1K, "low", 5'000}, Cell{Tier::k1K, "medium", 25'000},
                        Cell{Tier::k1K, "high", 70'000}, Cell{Tier::k2K, "low", 10'000},
                        Cell{Tier::k2K, "medium", 40'000}, Cell{Tier::k2K, "high", 100'000},
                        Cell{Tier::k4K, "low", 15'000}, Cell{Tier::k4K, "medium", 60'000},
                        Cell{Tier::k4K, "high", 230'000}}) {
    EXPECT_EQ(q(rule, c.tier, c.quality), c.micros) << jobs::to_string(c.tier) << c.quality;
  }
  // auto bills as medium; no quality (seed 001's default) and the tier words bill as medium.
  EXPECT_EQ(q(rule, Tier::k1K, "auto"), 25'000);
  EXPECT_EQ(q(rule, Tier::k2K, "auto"), 40'000);
  EXPECT_EQ(q(rule, Tier::k4K, "auto"), 60'000);
  EXPECT_EQ(q(rule, Tier::k4K, ""), 60'000);
  EXPECT_EQ(q(rule, Tier::k2K, "hd"), 40'000);
  // x n: 10 x $0.23 = $2.30; 3 x $0.025 = $0.075.
  EXPECT_EQ(q(rule, Tier::k4K, "high", 10), 2'300'000);
  EXPECT_EQ(q(rule, Tier::k1K, "auto", 3), 75'000);
  // Unknown quality: not priced, named.
  auto r = quote(rule, {.tier = Tier::k1K, .quality = "ultra"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, "quality");
}

TEST(PricingTest, Seed002FlatTenCredits) {
  const auto rule = sheet("seed002.toml");
  for (Tier tier : jobs::kTiers) {
    for (const char* quality : {"", "low", "high", "auto"}) {
      EXPECT_EQ(q(rule, tier, quality), credits(10));
    }
  }
  EXPECT_EQ(q(rule, Tier::k1K, "", 10), credits(100));
}

TEST(PricingTest, Seed003PerResolutionExactDecimals) {
  const auto rule = sheet("seed003.toml");
  EXPECT_EQ(q(rule, Tier::k1K), 4'700'000);
  EXPECT_EQ(q(rule, Tier::k2K), 9'400'000);
  EXPECT_EQ(q(rule, Tier::k4K), 14'100'000);
  EXPECT_EQ(format_credits(q(rule, Tier::k1K)), "4.7");
  EXPECT_EQ(format_credits(q(rule, Tier::k4K, "", 3)), "42.3");  // 3 x 14.1
  EXPECT_EQ(format_credits(q(rule, Tier::k2K, "", 7)), "65.8");  // 7 x 9.4
}

TEST(PricingTest, Seed004TokenFormulaExact) {
  const auto rule = sheet("seed004.toml");
  const auto& tokens = std::get<ByTokens>(rule.rule);
  // 5 / 10 / 40 per 1M tokens x 71000 credits per unit = 355,000 / 710,000 / 2,840,000 credits
  // per 1M tokens, i.e. 0.355 / 0.71 / 2.84 credits per token.
  EXPECT_EQ(tokens.rates.per_million_text_in, 355'000 * kMicrosPerCredit);
  EXPECT_EQ(tokens.rates.per_million_image_in, 710'000 * kMicrosPerCredit);
  EXPECT_EQ(tokens.rates.per_million_image_out, 2'840'000 * kMicrosPerCredit);
  EXPECT_EQ(tokens.rates.per_million_text_out, 0);

  struct Example {
    TokenUsage usage;
    const char* credits;
  };
  for (const Example& e : {
           // Seed 004's own response: text 6, image 0, output 275:
           // (6*5 + 0*10 + 275*40) * 7.1 * 10000 / 1e6 = 11030 * 0.071 = 783.13
           Example{{.text_in = 6, .image_in = 0, .image_out = 275}, "783.13"},
           // "1024x1024 low ~800": 20 text + 272 out: (100 + 10880) * 0.071 = 779.58
           Example{{.text_in = 20, .image_out = 272}, "779.58"},
           // "medium ~3000": 20 text + 1056 out: (100 + 42240) * 0.071 = 3006.14
           Example{{.text_in = 20, .image_out = 1056}, "3006.14"},
           // An edit: 50 text + 1000 image in + 1056 out: (250 + 10000 + 42240) * 0.071 =
           // 52490 * 0.071 = 3726.79
           Example{{.text_in = 50, .image_in = 1000, .image_out = 1056}, "3726.79"},
           // One text token: 5 * 0.071 = 0.355
           Example{{.text_in = 1}, "0.355"},
           Example{{}, "0"},
       }) {
    auto cost = token_cost(tokens.rates, e.usage);
    ASSERT_TRUE(cost);
    EXPECT_EQ(format_credits(*cost), e.credits);
  }
}

TEST(PricingTest, Seed004ReserveAndSettle) {
  const auto rule = sheet("seed004.toml");
  // default_quality = auto -> medium: the 1K medium cell, 5000 credits.
  EXPECT_EQ(q(rule, Tier::k1K), credits(5'000));
  EXPECT_EQ(q(rule, Tier::k1K, "low", 2), credits(3'000));
  EXPECT_EQ(q(rule, Tier::k4K, "high"), credits(95'000));
  // Inputs count once per call: 5000 + 2 refs x 5000 + 100 chars x 0.71 = 15071.
  const PriceInput edit{
      .tier = Tier::k1K, .quality = "medium", .n = 1, .reference_images = 2, .prompt_chars = 100};
  EXPECT_EQ(*quote(rule, edit), credits(15'071));

  const PriceInput one{.tier = Tier::k1K, .quality = "auto"};
  // Usage under the hold: charged exactly (783.13).
  EXPECT_EQ(*settle_amount(rule, one, TokenUsage{.text_in = 6, .image_out = 275}), 783'130'000);
  // Usage over the hold: 10000 out tokens = 28400 credits, capped at the 5000 held.
  EXPECT_EQ(*settle_amount(rule, one, TokenUsage{.image_out = 10'000}), credits(5'000));
  // Absurd usage cannot overflow: still the hold.
  const auto max = std::numeric_limits<std::int64_t>::max();
  EXPECT_EQ(*settle_amount(rule, one, TokenUsage{max, max, max, max}), credits(5'000));
  // No usage reported: the hold is charged.
  EXPECT_EQ(*settle_amount(rule, one, std::nullopt), credits(5'000));
  // Negative usage is an upstream fault.
  auto bad = settle_amount(rule, one, TokenUsage{.image_out = -1});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kUpstream);
}

TEST(PricingTest, TokenCostRoundsUpToTheMicro) {
  // 0.5 credits per 1M text tokens = 0.5 micros per token.
  const TokenRates rates{.per_million_text_in = 500'000};
  EXPECT_EQ(*token_cost(rates, {.text_in = 1}), 1);  // 0.5 -> 1
  EXPECT_EQ(*token_cost(rates, {.text_in = 2}), 1);  // exact
  EXPECT_EQ(*token_cost(rates, {.text_in = 3}), 2);  // 1.5 -> 2
  EXPECT_EQ(*token_cost(rates, {.text_in = 0}), 0);
  // Rounding applies to the sum, not per kind: 1 text (0.5) + 1 image in (0.5) = 1.
  const TokenRates both{.per_million_text_in = 500'000, .per_million_image_in = 500'000};
  EXPECT_EQ(*token_cost(both, {.text_in = 1, .image_in = 1}), 1);
  // Above the largest single amount: an error, not a wrap.
  const auto max = std::numeric_limits<std::int64_t>::max();
  auto huge = token_cost({.per_million_image_out = kMaxMicros}, {.image_out = max});
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, ErrorCode::kUpstream);
}

TEST(PricingTest, OverflowAndBadInputsAreRejected) {
  const PriceRule flat{FlatPerImage{kMaxMicros}};
  EXPECT_EQ(*quote(flat, {.n = 1}), kMaxMicros);
  auto r = quote(flat, {.n = 2});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, "n");
  const PriceRule micro{FlatPerImage{kMicro}};
  r = quote(micro, {.n = std::numeric_limits<std::int64_t>::max()});
  ASSERT_FALSE(r);  // 2^63 - 1 micros > kMaxMicros
  EXPECT_EQ(*quote(micro, {.n = 1'000'000}), credits(1));
  for (std::int64_t n :
       {std::int64_t{0}, std::int64_t{-1}, std::numeric_limits<std::int64_t>::min()}) {
    r = quote(micro, {.n = n});
    ASSERT_FALSE(r) << n;
    EXPECT_EQ(r.error().param, "n");
  }
  EXPECT_FALSE(quote(micro, {.reference_images = -1}));
  EXPECT_FALSE(quote(micro, {.prompt_chars = -1}));
  // Reserve inputs overflowing too.
  ByTokens tokens;
  tokens.reserve.per_image = 1;
  tokens.reserve.per_prompt_char = kMaxMicros;
  EXPECT_FALSE(quote(PriceRule{tokens}, {.prompt_chars = 2}));
  EXPECT_FALSE(
      settle_amount(PriceRule{tokens}, {.prompt_chars = 2}, TokenUsage{.text_in = 1}).has_value());
  // A tier the rule does not sell.
  PerImageByTier partial;
  partial.per_image[0] = credits(1);
  r = quote(PriceRule{partial}, {.tier = Tier::k4K});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, "size");
}

TEST(PricingTest, SettleForPerImageRulesIsTheQuoteForDeliveredImages) {
  const auto rule = sheet("seed003.toml");
  // Asked for 4, 3 delivered: settle with n = 3; usage is ignored by non-token rules.
  EXPECT_EQ(*settle_amount(rule, {.tier = Tier::k1K, .n = 3}, TokenUsage{.image_out = 999}),
            14'100'000);
}

TEST(PriceConfigTest, AllSheetsParse) {
  for (const char* file :
       {"seed000.toml", "seed001.toml", "seed002.toml", "seed003.toml", "seed004.toml"}) {
    auto rule = load_sheet(file);
    EXPECT_TRUE(rule.has_value()) << file << ": " << (rule ? "" : rule.error().message);
  }
  EXPECT_TRUE(std::holds_alternative<PerImageByTier>(sheet("seed000.toml").rule));
  EXPECT_TRUE(std::holds_alternative<PerImageByTierQuality>(sheet("seed001.toml").rule));
  EXPECT_TRUE(std::holds_alternative<FlatPerImage>(sheet("seed002.toml").rule));
  EXPECT_TRUE(std::holds_alternative<PerImageByTier>(sheet("seed003.toml").rule));
  EXPECT_TRUE(std::holds_alternative<ByTokens>(sheet("seed004.toml").rule));
}

TEST(PriceConfigTest, AmountForms) {
  auto flat = [](std::string_view value) -> Micros {
    auto rule = parse_text("kind = \"flat\"\nper_image = " + std::string(value) + "\n");
    if (!rule) return -1;
    return std::get<FlatPerImage>(rule->rule).per_image;
  };
  EXPECT_EQ(flat("10"), credits(10));
  EXPECT_EQ(flat("\"4.7\""), 4'700'000);
  EXPECT_EQ(flat("4.7"), 4'700'000);  // float read as its shortest decimal text
  EXPECT_EQ(flat("0.0235"), 23'500);
  EXPECT_EQ(flat("14.1"), 14'100'000);
  EXPECT_EQ(flat("0"), 0);
  EXPECT_EQ(flat("\"0.000001\""), 1);
  EXPECT_EQ(flat("-1"), -1);             // rejected
  EXPECT_EQ(flat("\"0.0000001\""), -1);  // 7 decimals
  EXPECT_EQ(flat("1e20"), -1);
  EXPECT_EQ(flat("inf"), -1);
  EXPECT_EQ(flat("nan"), -1);
  EXPECT_EQ(flat("true"), -1);
  EXPECT_EQ(flat("\"ten\""), -1);
  EXPECT_EQ(flat("99999999999"), -1);  // above kMaxMicros
}

TEST(PriceConfigTest, ErrorsNameTheKey) {
  EXPECT_EQ(parse_error_param(""), "kind");
  EXPECT_EQ(parse_error_param("kind = 3"), "kind");
  EXPECT_EQ(parse_error_param("kind = \"per_video_second\""), "kind");
  EXPECT_EQ(parse_error_param("kind = \"flat\""), "per_image");
  EXPECT_EQ(parse_error_param("kind = \"flat\"\nper_image = -1"), "per_image");
  EXPECT_EQ(parse_error_param("kind = \"flat\"\nper_image = 1\nper_imgae = 2"), "per_imgae");
  EXPECT_EQ(parse_error_param("kind = \"per_tier\""), "prices");
  EXPECT_EQ(parse_error_param("kind = \"per_tier\"\nprices = 3"), "prices");
  EXPECT_EQ(parse_error_param("kind = \"per_tier\"\nprices = {}"), "prices");
  EXPECT_EQ(parse_error_param("kind = \"per_tier\"\nprices = { 8K = 1 }"), "prices.8K");
  EXPECT_EQ(parse_error_param("kind = \"per_tier\"\nprices = { 1K = 1, 1k = 2 }"), "prices.1k");
  EXPECT_EQ(parse_error_param("kind = \"per_tier\"\nprices = { 2k = \"x\" }"), "prices.2k");
  EXPECT_EQ(parse_error_param("kind = \"per_tier_quality\"\nprices = { 1K = { ultra = 1 } }"),
            "prices.1K.ultra");
  EXPECT_EQ(parse_error_param("kind = \"per_tier_quality\"\nprices = { 1K = { auto = 1 } }"),
            "prices.1K.auto");
  EXPECT_EQ(parse_error_param("kind = \"per_tier_quality\"\nprices = { 1K = 1 }"), "prices.1K");
  EXPECT_EQ(parse_error_param(
                "kind = \"per_tier_quality\"\nauto_as = \"auto\"\nprices = { 1K = { low = 1 } }"),
            "auto_as");
  EXPECT_EQ(parse_error_param("kind = \"per_tier_quality\"\ndefault_quality = \"hd\"\n"
                              "prices = { 1K = { low = 1 } }"),
            "default_quality");
  const std::string tokens =
      "kind = \"tokens\"\ntext_in_per_million = 5\nimage_in_per_million = 10\n"
      "image_out_per_million = 40\n";
  EXPECT_EQ(parse_error_param(tokens), "reserve");
  EXPECT_EQ(parse_error_param(tokens + "[reserve]\n"), "reserve.per_image");
  EXPECT_EQ(parse_error_param(tokens + "[reserve]\nper_image = 0\n"), "reserve.per_image");
  EXPECT_EQ(parse_error_param(tokens + "[reserve]\nper_image = 1\nper_call = 1\n"),
            "reserve.per_call");
  EXPECT_EQ(parse_error_param(tokens + "[reserve]\nper_image = 1\ntable = { 3K = {} }\n"),
            "reserve.table.3K");
  EXPECT_EQ(parse_error_param(tokens + "unit = 0\n[reserve]\nper_image = 1\n"), "unit");
  // 0.000001 x 0.5 is half a micro-credit per million tokens: not exact.
  EXPECT_EQ(parse_error_param("kind = \"tokens\"\nunit = \"0.5\"\ntext_in_per_million = "
                              "\"0.000001\"\nimage_in_per_million = 10\n"
                              "image_out_per_million = 40\n[reserve]\nper_image = 1\n"),
            "text_in_per_million");
  EXPECT_EQ(parse_error_param("kind = \"tokens\"\nimage_in_per_million = 10\n"
                              "image_out_per_million = 40\n[reserve]\nper_image = 1\n"),
            "text_in_per_million");
  // Rate x unit above the largest amount.
  EXPECT_EQ(parse_error_param("kind = \"tokens\"\nunit = 1000000000\ntext_in_per_million = 2\n"
                              "image_in_per_million = 1\nimage_out_per_million = 1\n"
                              "[reserve]\nper_image = 1\n"),
            "text_in_per_million");
  EXPECT_EQ(parse_error_param(tokens + "[reserve]\nper_image = 1\n"), "ok");
}

TEST(PriceConfigTest, TokensWithoutUnitAreCreditsPerMillion) {
  auto rule = parse_text(
      "kind = \"tokens\"\ntext_in_per_million = \"0.5\"\nimage_in_per_million = 10\n"
      "image_out_per_million = 40\ntext_out_per_million = 1\n[reserve]\nper_image = 1\n");
  ASSERT_TRUE(rule) << rule.error().message;
  const auto& t = std::get<ByTokens>(rule->rule);
  EXPECT_EQ(t.rates.per_million_text_in, 500'000);
  EXPECT_EQ(t.rates.per_million_text_out, credits(1));
  EXPECT_FALSE(t.reserve.per_image_table.has_value());
  EXPECT_EQ(*quote(*rule, {.n = 4}), credits(4));
}

}  // namespace
}  // namespace ig::billing
