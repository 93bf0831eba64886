#pragma once
// Password hashing with argon2id (libsodium), OWASP parameters: 19 MiB memory, 2 iterations,
// parallelism 1. CPU- and memory-heavy by design: call from the blocking pool only.

#include <string>
#include <string_view>

#include "core/error.h"

namespace ig::accounts {

Result<std::string> hash_password(std::string_view password);
bool verify_password(std::string_view encoded_hash, std::string_view password);

}  // namespace ig::accounts
