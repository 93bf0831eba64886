#pragma once
// Standard base64 (RFC 4648 §4, alphabet A-Z a-z 0-9 + /) for image payloads: `b64_json`
// replies, `image_base64` fields and `data:` URLs.
//
// Encoding always pads. Decoding is strict about content and lenient about layout:
//  - only the standard alphabet (base64url's '-' and '_' are rejected);
//  - space, tab, CR and LF are skipped anywhere, as in MIME line-wrapped text;
//  - padding is optional, but when present it is exactly what the length needs, it comes last
//    (only whitespace may follow) and it is never more than two '=';
//  - a lone trailing character (length 1 mod 4) and non-zero unused bits in the last character
//    are rejected, so every accepted text is the canonical encoding of its bytes (modulo
//    whitespace and padding).
// Both run in one pass over the input with no per-byte allocation (~1 GB/s encode at -O2, so a
// 30 MB image costs tens of milliseconds). On CPUs with AVX2, decoding takes 32 characters at
// a time while they are all alphabet characters.

#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

#include "core/error.h"

namespace ig {

// Length of base64_encode's output for `n` input bytes: 4 * ceil(n / 3).
constexpr std::size_t base64_encoded_size(std::size_t n) { return (n + 2) / 3 * 4; }

std::string base64_encode(std::string_view bytes);

// Decodes `text`. Errors (no param; the caller knows which field it was):
//  - ErrorCode::kInvalidRequest "invalid base64: ..." naming the problem and its byte offset;
//  - ErrorCode::kPayloadTooLarge when the decoded bytes would exceed `max_bytes`. Decoding stops
//    as soon as that is certain, so a huge input costs at most ~max_bytes of work and memory.
Result<std::string> base64_decode(std::string_view text,
                                  std::size_t max_bytes = std::numeric_limits<std::size_t>::max());

namespace detail {
// base64_decode without its SIMD block loop (used where the CPU has AVX2): the reference the
// tests hold the fast path to.
Result<std::string> base64_decode_scalar(
    std::string_view text, std::size_t max_bytes = std::numeric_limits<std::size_t>::max());
}  // namespace detail

}  // namespace ig
