#pragma once
// API key format and hashing. A key is "sk-" + 43 base62 characters (~256 random bits). Only its
// SHA-256 is stored; the listing shows "sk-" + 8 characters and the last 4.

#include <string>
#include <string_view>

#include "core/error.h"
#include "core/random.h"

namespace ig::accounts {

inline constexpr std::size_t kKeyRandomChars = 43;
inline constexpr std::size_t kKeyPrefixChars = 8;  // after "sk-"

struct GeneratedKey {
  std::string secret;  // shown exactly once
  std::string prefix;  // "sk-XXXXXXXX"
  std::string last4;
  std::string hash;  // hex SHA-256 of secret
};

GeneratedKey generate_api_key(Random& random);

// Hex SHA-256 of the key text.
std::string hash_api_key(std::string_view key);

// True when `key` has the shape of an imagegate key (cheap check before any lookup).
bool looks_like_api_key(std::string_view key);

// Extracts the key from an Authorization header value ("Bearer sk-..."), case-insensitive
// scheme, surrounding spaces tolerated. Any other shape is kInvalidApiKey.
Result<std::string_view> parse_bearer(std::string_view header_value);

}  // namespace ig::accounts
