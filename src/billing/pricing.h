#pragma once
// Per-model price rules and the two amounts a job needs: the reservation held before the job
// goes upstream (quote) and the final charge (settle_amount). Pure and exact: integer
// micro-credits, 128-bit intermediates, every result within [0, kMaxMicros] or an error.
//
// Rules decided here (REQUIREMENTS §4):
// - Image rules price one image and are multiplied by n (seed 001: "billed x n").
// - Rendering quality: "" (none given) bills as the rule's default_quality; "auto" bills as
//   auto_as (seed 001: medium); the tier words standard/hd/uhd are not rendering qualities
//   (jobs::resolve_size turns them into the tier) and bill like "".
// - Tokens (seed 004): cost = ceil(sum(tokens_i * rate_i) / 1e6) micro-credits, with each rate
//   in micro-credits per million tokens. Seed 004's formula
//   (text_in*5 + image_in*10 + image_out*40) * 7.1 * 10000 / 1e6 credits is rates
//   355e9 / 710e9 / 2840e9 micros per million (0.355 / 0.71 / 2.84 credits per token): always
//   exact, rounding up only matters for rates that are not whole micros per token.
// - Tokens, reservation: n x per-image estimate (by tier x quality, or flat) plus an estimate
//   for the inputs (per reference image, per prompt character), since usage is per call.
// - Tokens, settlement: the cost of the reported usage (which already covers all n images),
//   capped at the reservation: a job never charges more than it held, so the balance never goes
//   negative. Without reported usage the reservation is charged. Usage counts must be >= 0.
// - Every other rule settles at its quote (pass the delivered image count as n).

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <variant>

#include "billing/money.h"
#include "core/error.h"
#include "jobs/sizes.h"

namespace ig::billing {

using jobs::Tier;

// Prices of one image by tier x rendering quality. Missing cells are unpriced (quote fails).
struct TierQualityTable {
  // Index = static_cast<int>(Tier); keys are "low", "medium", "high".
  std::array<std::map<std::string, Micros, std::less<>>, 3> cells;
  std::string auto_as = "medium";          // what quality "auto" bills as
  std::string default_quality = "medium";  // what no quality bills as (may be "auto")

  // The cell for (tier, quality) after the auto/default mapping above.
  Result<Micros> lookup(Tier tier, std::string_view quality) const;
};

// Seed 001: per image, by tier x quality.
struct PerImageByTierQuality {
  TierQualityTable prices;
};

// Seed 002: the same price for every image.
struct FlatPerImage {
  Micros per_image = 0;
};

// Seeds 000 and 003: per image by tier. A missing tier is unpriced.
struct PerImageByTier {
  std::array<std::optional<Micros>, 3> per_image;  // index = static_cast<int>(Tier)
};

// Micro-credits per million tokens of each kind.
struct TokenRates {
  Micros per_million_text_in = 0;
  Micros per_million_image_in = 0;
  Micros per_million_image_out = 0;
  Micros per_million_text_out = 0;  // not in seed 004's formula; 0 there
};

// Token counts an upstream reported for one call (OpenAI `usage`).
struct TokenUsage {
  std::int64_t text_in = 0;
  std::int64_t image_in = 0;
  std::int64_t image_out = 0;
  std::int64_t text_out = 0;
};

// What a token-billed job holds before its usage is known.
struct TokenReserve {
  Micros per_image = 0;                             // per output image
  std::optional<TierQualityTable> per_image_table;  // overrides per_image where it has a cell
  Micros per_reference_image = 0;                   // once per input image
  Micros per_prompt_char = 0;                       // once per prompt character
};

// Seed 004: billed by tokens.
struct ByTokens {
  TokenRates rates;
  TokenReserve reserve;
};

// One model's price. Alternatives will grow (per video second, per video call).
struct PriceRule {
  std::variant<PerImageByTierQuality, FlatPerImage, PerImageByTier, ByTokens> rule;
};

// What a job asks for, as far as pricing cares.
struct PriceInput {
  Tier tier = Tier::k1K;
  std::string quality;  // rendering quality as in jobs::ResolvedSize::quality ("" = none)
  std::int64_t n = 1;   // images asked for (quote) or delivered (settle); >= 1
  std::int64_t reference_images = 0;
  std::int64_t prompt_chars = 0;
};

// The amount to reserve. Errors: n < 1 or negative counts (param "n" / "image" / "prompt"),
// an unpriced tier or quality (param "size" / "quality"), a total above kMaxMicros.
Result<Micros> quote(const PriceRule& rule, const PriceInput& input);

// The final charge, 0 <= result <= quote(rule, input). For tokens: from `usage` (see above);
// negative usage counts are an upstream error.
Result<Micros> settle_amount(const PriceRule& rule, const PriceInput& input,
                             const std::optional<TokenUsage>& usage);

// Uncapped cost of a usage, rounded up to the micro-credit. Errors (kUpstream): negative
// counts, a cost above kMaxMicros.
Result<Micros> token_cost(const TokenRates& rates, const TokenUsage& usage);

}  // namespace ig::billing
