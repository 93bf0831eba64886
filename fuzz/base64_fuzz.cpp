// Fuzzes base64 decoding (image_base64 fields, data: URLs, upstream b64_json replies): the AVX2
// fast path and the scalar loop must give the same bytes or the same error, under any output
// cap, and whatever decodes must encode back to text that decodes to the same bytes.
#include <cstdint>
#include <limits>
#include <string_view>

#include "core/base64.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (std::size_t cap : {std::numeric_limits<std::size_t>::max(), size / 2, size * 3 / 4}) {
    auto fast = ig::base64_decode(text, cap);
    auto scalar = ig::detail::base64_decode_scalar(text, cap);
    if (fast.has_value() != scalar.has_value()) __builtin_trap();
    if (fast) {
      if (*fast != *scalar || fast->size() > cap) __builtin_trap();
      auto again = ig::base64_decode(ig::base64_encode(*fast));
      if (!again || *again != *fast) __builtin_trap();
    } else if (fast.error().message != scalar.error().message) {
      __builtin_trap();
    }
  }
  return 0;
}
