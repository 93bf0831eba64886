// Fuzzes Authorization header parsing and key hashing: untrusted bytes from every request.
#include <cstdint>
#include <string_view>

#include "accounts/api_key.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view header(reinterpret_cast<const char*>(data), size);
  auto key = ig::accounts::parse_bearer(header);
  if (key) {
    if (!ig::accounts::looks_like_api_key(*key)) __builtin_trap();
    if (ig::accounts::hash_api_key(*key).size() != 64) __builtin_trap();
  }
  return 0;
}
