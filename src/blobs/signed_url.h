#pragma once
// Signed, expiring URLs: a URL carries `exp=<unix seconds>&sig=<base64url HMAC-SHA256>` over
// the resource (e.g. the path "/v1/files/<id>/content") and the expiry, so a file can be
// fetched without an API key until it expires. The caller picks expires_at (now + TTL).
//
// UrlSigner promises: only the holder of the key produces a signature that verifies for a
// given (resource, expires_at); changing either, or the signature, fails; comparison is
// constant-time; a URL is refused from the second expires_at on.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/error.h"
#include "core/random.h"

namespace ig::blobs {

class UrlSigner {
 public:
  static constexpr std::size_t kMinKeyBytes = 32;

  // `secret_key_bytes` is raw key material of at least kMinKeyBytes; with a shorter key the
  // signer fails closed: every verify() returns kInternal. `clock` must outlive the signer.
  UrlSigner(std::string secret_key_bytes, const Clock& clock);
  ~UrlSigner();  // wipes the key
  UrlSigner(UrlSigner&&) = default;
  UrlSigner(const UrlSigner&) = delete;
  UrlSigner& operator=(const UrlSigner&) = delete;

  // "exp=<expires_at>&sig=<signature>", ready to append after '?' (no escaping needed).
  std::string sign(std::string_view resource, std::int64_t expires_at) const;
  // The base64url (unpadded, 43 characters) HMAC-SHA256 alone.
  std::string signature(std::string_view resource, std::int64_t expires_at) const;

  // kPermissionDenied when `sig` is not the signature of (resource, expires_at), or when the
  // clock reads expires_at or later. Signature is checked first, so a forged expiry never gets
  // a more specific answer.
  Result<void> verify(std::string_view resource, std::int64_t expires_at,
                      std::string_view sig) const;

 private:
  std::string key_;
  const Clock* clock_;
};

// Returns the 32 raw bytes stored at `path`, creating the file (mode 0600, parent directories
// as needed) from `random` if it does not exist, atomically: concurrent callers all end up with
// the same key. A file of any other size is kInternal (delete it to rotate the key: outstanding
// URLs then stop working). Keeps URLs valid across restarts.
Result<std::string> load_or_create_secret(const std::filesystem::path& path, Random& random);

}  // namespace ig::blobs
