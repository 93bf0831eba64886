#include "billing/pricing.h"

#include <algorithm>
#include <type_traits>

namespace ig::billing {
namespace {

using Wide = __int128;

std::unexpected<Error> too_large() {
  return fail(ErrorCode::kInvalidRequest,
              "price exceeds the largest single amount (1000000000 credits)", "n");
}

Result<Micros> checked(Wide value) {
  if (value < 0 || value > kMaxMicros) return too_large();
  return static_cast<Micros>(value);
}

// Rendering quality after the rule's default / auto mapping.
std::string_view billed_quality(const TierQualityTable& t, std::string_view quality) {
  if (quality.empty() || quality == "standard" || quality == "hd" || quality == "uhd") {
    quality = t.default_quality;
  }
  if (quality == "auto") quality = t.auto_as;
  return quality;
}

Result<Micros> per_image_price(const PriceRule& rule, const PriceInput& in) {
  return std::visit(
      [&](const auto& r) -> Result<Micros> {
        using T = std::decay_t<decltype(r)>;
        if constexpr (std::is_same_v<T, PerImageByTierQuality>) {
          return r.prices.lookup(in.tier, in.quality);
        } else if constexpr (std::is_same_v<T, FlatPerImage>) {
          return r.per_image;
        } else if constexpr (std::is_same_v<T, PerImageByTier>) {
          const auto& price = r.per_image[static_cast<int>(in.tier)];
          if (!price) {
            return fail(
                ErrorCode::kInvalidRequest,
                std::string(jobs::to_string(in.tier)) + " output is not priced for " + "this model",
                "size");
          }
          return *price;
        } else {
          if (r.reserve.per_image_table) {
            if (auto cell = r.reserve.per_image_table->lookup(in.tier, in.quality)) return *cell;
          }
          return r.reserve.per_image;
        }
      },
      rule.rule);
}

}  // namespace

Result<Micros> TierQualityTable::lookup(Tier tier, std::string_view quality) const {
  const std::string_view billed = billed_quality(*this, quality);
  const auto& row = cells[static_cast<int>(tier)];
  auto it = row.find(billed);
  if (it == row.end()) {
    return fail(ErrorCode::kInvalidRequest,
                "quality '" + std::string(billed) + "' at " + std::string(jobs::to_string(tier)) +
                    " is not priced for this model",
                "quality");
  }
  return it->second;
}

Result<Micros> quote(const PriceRule& rule, const PriceInput& in) {
  if (in.n < 1) return fail(ErrorCode::kInvalidRequest, "n must be at least 1", "n");
  if (in.reference_images < 0) {
    return fail(ErrorCode::kInvalidRequest, "negative reference image count", "image");
  }
  if (in.prompt_chars < 0) {
    return fail(ErrorCode::kInvalidRequest, "negative prompt length", "prompt");
  }
  auto each = per_image_price(rule, in);
  if (!each) return each;
  if (*each < 0) return fail(ErrorCode::kInternal, "negative price in the price rule");
  Wide total = static_cast<Wide>(*each) * in.n;
  if (const auto* tokens = std::get_if<ByTokens>(&rule.rule)) {
    total += static_cast<Wide>(tokens->reserve.per_reference_image) * in.reference_images;
    total += static_cast<Wide>(tokens->reserve.per_prompt_char) * in.prompt_chars;
  }
  return checked(total);
}

namespace {

// Exact uncapped cost in micros (rounded up), or an error for bad counts or rates.
Result<Wide> wide_token_cost(const TokenRates& rates, const TokenUsage& usage) {
  if (usage.text_in < 0 || usage.image_in < 0 || usage.image_out < 0 || usage.text_out < 0) {
    return fail(ErrorCode::kUpstream, "upstream reported negative token usage");
  }
  // Rates <= kMaxMicros < 2^50 and counts < 2^63: each term < 2^113, the sum < 2^115.
  for (Micros rate : {rates.per_million_text_in, rates.per_million_image_in,
                      rates.per_million_image_out, rates.per_million_text_out}) {
    if (rate < 0 || rate > kMaxMicros) {
      return fail(ErrorCode::kInternal, "token rate out of range in the price rule");
    }
  }
  const Wide sum = static_cast<Wide>(usage.text_in) * rates.per_million_text_in +
                   static_cast<Wide>(usage.image_in) * rates.per_million_image_in +
                   static_cast<Wide>(usage.image_out) * rates.per_million_image_out +
                   static_cast<Wide>(usage.text_out) * rates.per_million_text_out;
  constexpr Wide kMillion = 1'000'000;
  return (sum + kMillion - 1) / kMillion;
}

}  // namespace

Result<Micros> token_cost(const TokenRates& rates, const TokenUsage& usage) {
  auto cost = wide_token_cost(rates, usage);
  if (!cost) return std::unexpected(cost.error());
  if (*cost > kMaxMicros) {
    return fail(ErrorCode::kUpstream, "token usage costs more than the largest single amount");
  }
  return static_cast<Micros>(*cost);
}

Result<Micros> settle_amount(const PriceRule& rule, const PriceInput& in,
                             const std::optional<TokenUsage>& usage) {
  auto reserved = quote(rule, in);
  if (!reserved) return reserved;
  const auto* tokens = std::get_if<ByTokens>(&rule.rule);
  if (tokens == nullptr || !usage) return reserved;
  auto cost = wide_token_cost(tokens->rates, *usage);
  if (!cost) return std::unexpected(cost.error());
  return static_cast<Micros>(std::min<Wide>(*cost, *reserved));
}

}  // namespace ig::billing
