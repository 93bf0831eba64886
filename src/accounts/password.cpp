#include "accounts/password.h"

#include <sodium.h>

namespace ig::accounts {
namespace {
constexpr unsigned long long kOpsLimit = 2;
constexpr std::size_t kMemLimit = 19U * 1024U * 1024U;
}  // namespace

Result<std::string> hash_password(std::string_view password) {
  if (password.size() < 8) return fail(ErrorCode::kInvalidRequest, "password must have at least 8 characters", "password");
  if (password.size() > 1024) return fail(ErrorCode::kInvalidRequest, "password is too long", "password");
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), kOpsLimit, kMemLimit,
                            crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return fail(ErrorCode::kInternal, "password hashing ran out of memory");
  }
  return std::string(out);
}

bool verify_password(std::string_view encoded_hash, std::string_view password) {
  std::string hash(encoded_hash);  // libsodium wants a NUL-terminated string
  return crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
}

}  // namespace ig::accounts
