#include "billing/money.h"

#include <cstdlib>

#include "core/text.h"

namespace ig {

Result<Micros> parse_credits(std::string_view text) {
  auto bad = [&](std::string why) {
    return fail(ErrorCode::kInvalidRequest, "invalid amount '" + printable(text, 64) +
                                                "': " + why,
                "amount");
  };
  if (text.empty()) return bad("empty");
  if (text.size() > 40) return bad("too long");
  bool negative = false;
  std::size_t i = 0;
  if (text[0] == '-' || text[0] == '+') {
    negative = text[0] == '-';
    i = 1;
  }
  Micros whole = 0;
  int whole_digits = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (whole_digits >= 10) return bad("too large (max 1000000000 credits)");
    whole = whole * 10 + (text[i] - '0');
    if (whole != 0 || whole_digits > 0) ++whole_digits;
  }
  bool any_digit = i > (text[0] == '-' || text[0] == '+' ? 1u : 0u);
  Micros frac = 0;
  int frac_digits = 0;
  if (i < text.size() && text[i] == '.') {
    ++i;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      if (frac_digits == 6) return bad("more than 6 decimals");
      frac = frac * 10 + (text[i] - '0');
      ++frac_digits;
      any_digit = true;
    }
    if (frac_digits == 0) return bad("digits expected after '.'");
  }
  if (!any_digit) return bad("not a number");
  if (i != text.size()) {
    if (text[i] == 'e' || text[i] == 'E') return bad("exponent notation is not allowed");
    return bad("unexpected character '" + printable(text.substr(i, 1)) + "'");
  }
  for (int d = frac_digits; d < 6; ++d) frac *= 10;
  Micros value = whole * kMicrosPerCredit + frac;
  if (value > kMaxMicros) return bad("too large (max 1000000000 credits)");
  if (value == 0 && (text[0] == '-' || text[0] == '+')) return bad("signed zero");
  return negative ? -value : value;
}

std::string format_credits(Micros micros) {
  bool negative = micros < 0;
  // kMaxMicros bounds every amount we produce, so negation cannot overflow here.
  unsigned long long abs = negative ? 0ULL - static_cast<unsigned long long>(micros)
                                    : static_cast<unsigned long long>(micros);
  std::string out = negative ? "-" : "";
  out += std::to_string(abs / kMicrosPerCredit);
  unsigned long long frac = abs % kMicrosPerCredit;
  if (frac != 0) {
    std::string digits = std::to_string(frac);
    digits.insert(0, 6 - digits.size(), '0');
    while (!digits.empty() && digits.back() == '0') digits.pop_back();
    out += '.';
    out += digits;
  }
  return out;
}

boost::json::value credits_json(Micros micros) {
  if (micros % kMicrosPerCredit == 0) return boost::json::value(micros / kMicrosPerCredit);
  // The double nearest to a decimal of at most 15 significant digits prints back as that same
  // decimal in shortest round-trip form, so the rendered text is exact (see money_test).
  return boost::json::value(std::strtod(format_credits(micros).c_str(), nullptr));
}

}  // namespace ig
