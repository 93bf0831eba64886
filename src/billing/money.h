#pragma once
// Exact money. All amounts are integer micro-credits (1 credit = 1,000,000 micros), so seed
// prices such as 4.7 credits or 0.0235 USD are exact. Floating point never touches a balance.

#include <boost/json/value.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace ig {

using Micros = std::int64_t;

inline constexpr Micros kMicrosPerCredit = 1'000'000;
// Largest balance or single amount: 10^9 credits. Keeps every sum far from int64 overflow and
// every amount within 15 significant digits, which JSON numbers carry exactly.
inline constexpr Micros kMaxMicros = 1'000'000'000LL * kMicrosPerCredit;

inline constexpr Micros credits(std::int64_t whole) { return whole * kMicrosPerCredit; }

// Parses a decimal amount such as "4.7", "-12", "0.000001". Rejects exponents, more than six
// decimals, empty/garbage input, "-0"-style zero signs, and magnitudes above kMaxMicros.
Result<Micros> parse_credits(std::string_view text);

// Canonical decimal text: "4.7", "100", "-0.0235", "0".
std::string format_credits(Micros micros);

// A JSON number whose text renders exactly as format_credits() (via ig::to_json_text).
boost::json::value credits_json(Micros micros);

}  // namespace ig
