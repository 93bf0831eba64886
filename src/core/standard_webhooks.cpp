#include "core/standard_webhooks.h"

#include <sodium.h>

#include <array>
#include <cstdint>
#include <limits>
#include <string>

#include "core/base64.h"

namespace ig {
namespace {

constexpr std::string_view kVersion = "v1,";
using Mac = std::array<unsigned char, crypto_auth_hmacsha256_BYTES>;

// Strict standard base64 text: alphabet and trailing '=' only (base64_decode would also skip
// whitespace, which has no place in a secret or a signature).
bool plain_base64(std::string_view text) {
  for (char c : text) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/' || c == '=';
    if (!ok) return false;
  }
  return true;
}

std::optional<std::string> decode(std::string_view text, std::size_t max_bytes) {
  if (text.empty() || !plain_base64(text)) return std::nullopt;
  auto bytes = base64_decode(text, max_bytes);
  if (!bytes) return std::nullopt;
  return std::move(*bytes);
}

Mac compute_mac(std::string_view key, std::string_view msg_id, std::int64_t timestamp_s,
                std::string_view body) {
  const std::string ts = std::to_string(timestamp_s);
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(key.data()),
                              key.size());
  auto update = [&state](std::string_view part) {
    crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(part.data()),
                                  part.size());
  };
  update(msg_id);
  update(".");
  update(ts);
  update(".");
  update(body);
  Mac mac{};
  crypto_auth_hmacsha256_final(&state, mac.data());
  sodium_memzero(&state, sizeof state);
  return mac;
}

}  // namespace

std::string generate_webhook_secret(Random& random) {
  std::array<std::uint8_t, kWebhookKeyMinBytes> key{};
  random.fill(key);
  std::string secret(kWebhookSecretPrefix);
  secret += base64_encode({reinterpret_cast<const char*>(key.data()), key.size()});
  sodium_memzero(key.data(), key.size());
  return secret;
}

std::optional<std::string> webhook_secret_key(std::string_view secret) {
  if (!secret.starts_with(kWebhookSecretPrefix)) return std::nullopt;
  secret.remove_prefix(kWebhookSecretPrefix.size());
  auto key = decode(secret, kWebhookKeyMaxBytes);
  if (!key || key->size() < kWebhookKeyMinBytes) return std::nullopt;
  return key;
}

std::string sign_webhook(std::string_view secret, std::string_view msg_id, std::int64_t timestamp_s,
                         std::string_view body) {
  auto key = webhook_secret_key(secret);
  if (!key) return {};
  const Mac mac = compute_mac(*key, msg_id, timestamp_s, body);
  sodium_memzero(key->data(), key->size());
  std::string out(kVersion);
  out += base64_encode({reinterpret_cast<const char*>(mac.data()), mac.size()});
  return out;
}

bool verify_webhook(std::string_view secret, std::string_view msg_id, std::int64_t timestamp_s,
                    std::string_view body, std::string_view signature_header,
                    std::optional<std::int64_t> now_s, std::int64_t tolerance_s) {
  if (now_s) {
    if (tolerance_s < 0) return false;
    // Compared without overflow: both sides are arbitrary 64-bit values.
    const std::int64_t lo = *now_s < std::numeric_limits<std::int64_t>::min() + tolerance_s
                                ? std::numeric_limits<std::int64_t>::min()
                                : *now_s - tolerance_s;
    const std::int64_t hi = *now_s > std::numeric_limits<std::int64_t>::max() - tolerance_s
                                ? std::numeric_limits<std::int64_t>::max()
                                : *now_s + tolerance_s;
    if (timestamp_s < lo || timestamp_s > hi) return false;
  }
  auto key = webhook_secret_key(secret);
  if (!key) return false;
  const Mac expected = compute_mac(*key, msg_id, timestamp_s, body);
  sodium_memzero(key->data(), key->size());

  bool valid = false;
  std::string_view rest = signature_header;
  while (!rest.empty()) {
    const std::size_t space = rest.find(' ');
    std::string_view entry = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view{} : rest.substr(space + 1);
    if (!entry.starts_with(kVersion)) continue;  // empty (double space) or another version
    entry.remove_prefix(kVersion.size());
    auto mac = decode(entry, expected.size());
    if (!mac || mac->size() != expected.size()) continue;
    // Every entry is checked (no early exit), each in constant time.
    if (crypto_verify_32(reinterpret_cast<const unsigned char*>(mac->data()), expected.data()) ==
        0) {
      valid = true;
    }
  }
  return valid;
}

}  // namespace ig
