#pragma once
// Reads one model's price table (the `[models.price]` table of a [[models]] entry) into a
// PriceRule. Strict: unknown keys, wrong types, negative or inexact amounts are errors whose
// param is the key path inside the table (e.g. "prices.4K.high") and whose message starts
// with it. Never throws.
//
// Shape (examples/prices/seed00N.toml are complete sheets):
//
//   kind = "per_tier" | "per_tier_quality" | "flat" | "tokens"     (required)
//
//   Amounts are credits: a whole number (10), a decimal string ("4.7", up to 6 decimals), or a
//   TOML float (4.7, read as its shortest decimal text). Never negative.
//
//   kind = "flat"              per_image = <amount>
//   kind = "per_tier"          prices = { 1K = <amount>, 2K = <amount>, 4K = <amount> }
//                              (a tier left out is not sold)
//   kind = "per_tier_quality"  prices = { 1K = { low = <amount>, medium = .., high = .. }, .. }
//                              auto_as = "medium"          (quality auto bills as; default)
//                              default_quality = "medium"  (no quality bills as; may be "auto")
//   kind = "tokens"            text_in_per_million = <amount>    (required)
//                              image_in_per_million = <amount>   (required)
//                              image_out_per_million = <amount>  (required)
//                              text_out_per_million = <amount>   (default 0)
//                              unit = <amount>   (credits per rate unit, default 1; every rate
//                                                 is multiplied by it and must stay exact)
//                              auto_as, default_quality   (as above, for reserve.table)
//                              [reserve] per_image = <amount>            (required, > 0)
//                                        per_reference_image = <amount>  (default 0)
//                                        per_prompt_char = <amount>      (default 0)
//                                        table = { 1K = { low = .., .. }, .. }  (optional,
//                                                 overrides per_image where it has a cell)
//
// Tier keys are 1K/2K/4K in any case; quality keys are low/medium/high.

#include <toml++/toml.h>

#include "billing/pricing.h"
#include "core/error.h"

namespace ig::billing {

Result<PriceRule> parse_price_rule(const toml::table& table);

}  // namespace ig::billing
