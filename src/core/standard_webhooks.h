#pragma once
// Standard Webhooks signatures (https://www.standardwebhooks.com/): what a callback receiver
// checks to know a request came from us and was not altered or replayed.
//
//  - A secret is "whsec_" + standard base64 of the key bytes (we generate 24 random bytes).
//  - The signed content is "{webhook-id}.{webhook-timestamp}.{body}", HMAC-SHA256 keyed with the
//    decoded key bytes; the `webhook-signature` header is "v1," + padded standard base64 of the
//    MAC. A header may carry several space-separated signatures (key rotation); one valid "v1"
//    entry is enough.
//
// Pure functions, thread-safe; they need libsodium initialized (sodium_init) like the rest of
// the process. No exceptions: malformed input is reported through the return value.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/random.h"

namespace ig {

inline constexpr std::string_view kWebhookSecretPrefix = "whsec_";
// Key sizes the spec allows (bytes). generate_webhook_secret uses the minimum.
inline constexpr std::size_t kWebhookKeyMinBytes = 24;
inline constexpr std::size_t kWebhookKeyMaxBytes = 64;
// Default allowed distance between a signature's timestamp and now (the spec's 5 minutes).
inline constexpr std::int64_t kWebhookToleranceS = 300;

// "whsec_" + base64 of 24 bytes from `random` (32 characters after the prefix).
std::string generate_webhook_secret(Random& random);

// The HMAC key of a "whsec_..." secret: the decoded bytes after the prefix. nullopt when the
// prefix is missing, the rest is not strict standard base64, or the key is outside 24..64 bytes.
std::optional<std::string> webhook_secret_key(std::string_view secret);

// The `webhook-signature` header value "v1,<base64 HMAC>" for one message. "" when the secret is
// malformed (see webhook_secret_key); callers validate the secret first.
std::string sign_webhook(std::string_view secret, std::string_view msg_id, std::int64_t timestamp_s,
                         std::string_view body);

// True when `signature_header` (space-separated "v1,<base64>" entries; other versions are
// ignored) holds a valid signature of the message under `secret`. MACs are compared in
// constant time. When `now_s` is set, the timestamp must also be within `tolerance_s` of it
// (either direction), as a receiver checks to refuse replays.
bool verify_webhook(std::string_view secret, std::string_view msg_id, std::int64_t timestamp_s,
                    std::string_view body, std::string_view signature_header,
                    std::optional<std::int64_t> now_s = std::nullopt,
                    std::int64_t tolerance_s = kWebhookToleranceS);

}  // namespace ig
