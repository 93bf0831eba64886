#include "accounts/api_key.h"

#include <sodium.h>

namespace ig::accounts {
namespace {

bool is_base62(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

GeneratedKey generate_api_key(Random& random) {
  GeneratedKey key;
  key.secret = "sk-" + random.base62(kKeyRandomChars);
  key.prefix = key.secret.substr(0, 3 + kKeyPrefixChars);
  key.last4 = key.secret.substr(key.secret.size() - 4);
  key.hash = hash_api_key(key.secret);
  return key;
}

std::string hash_api_key(std::string_view key) {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  char hex[crypto_hash_sha256_BYTES * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return std::string(hex, crypto_hash_sha256_BYTES * 2);
}

bool looks_like_api_key(std::string_view key) {
  // Accept keys a little shorter/longer than ours so operators can import keys of other
  // gateways later, but bound the length so a 10 KB header never reaches the hash or the cache.
  if (key.size() < 3 + 20 || key.size() > 3 + 128) return false;
  if (key.substr(0, 3) != "sk-") return false;
  for (char c : key.substr(3)) {
    if (!is_base62(c) && c != '-' && c != '_') return false;
  }
  return true;
}

Result<std::string_view> parse_bearer(std::string_view header_value) {
  std::string_view v = trim(header_value);
  if (v.empty()) {
    return fail(ErrorCode::kInvalidApiKey,
                "Missing API key. Send 'Authorization: Bearer sk-...'.");
  }
  constexpr std::string_view kScheme = "bearer";
  bool scheme_ok = v.size() > kScheme.size() && (v[kScheme.size()] == ' ' || v[kScheme.size()] == '\t');
  for (std::size_t i = 0; scheme_ok && i < kScheme.size(); ++i) {
    char c = v[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    scheme_ok = c == kScheme[i];
  }
  if (!scheme_ok) {
    return fail(ErrorCode::kInvalidApiKey,
                "Malformed Authorization header. Expected 'Bearer sk-...'.");
  }
  std::string_view key = trim(v.substr(kScheme.size()));
  if (!looks_like_api_key(key)) {
    return fail(ErrorCode::kInvalidApiKey,
                "Invalid API key format. Keys start with 'sk-'.");
  }
  return key;
}

}  // namespace ig::accounts
