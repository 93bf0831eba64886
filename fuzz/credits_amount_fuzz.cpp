// Fuzzes decimal credit amounts (CLI input, config values, later admin API bodies): whatever
// parses must format back to a string that parses to the same amount, within the cap.
#include <cstdint>
#include <string_view>

#include "billing/money.h"
#include "core/json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto amount = ig::parse_credits(text);
  if (!amount) return 0;
  if (*amount > ig::kMaxMicros || *amount < -ig::kMaxMicros) __builtin_trap();
  auto again = ig::parse_credits(ig::format_credits(*amount));
  if (!again || *again != *amount) __builtin_trap();
  if (ig::to_json_text(ig::credits_json(*amount)) != ig::format_credits(*amount)) __builtin_trap();
  return 0;
}
