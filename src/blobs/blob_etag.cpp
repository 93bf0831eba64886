#include "blobs/blob_etag.h"

#include <sodium.h>

namespace ig::blobs {

std::string blob_etag(std::string_view id) {
  unsigned char digest[16];
  crypto_generichash(digest, sizeof digest, reinterpret_cast<const unsigned char*>(id.data()),
                     id.size(), nullptr, 0);
  char hex[2 * sizeof digest + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return "\"" + std::string(hex) + "\"";
}

}  // namespace ig::blobs
