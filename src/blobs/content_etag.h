#pragma once
// The strong ETag every BlobStore gives a blob: derived from the content only, so equal bytes
// get equal tags whatever the backend.

#include <string>
#include <string_view>

namespace ig::blobs {

// Quoted 32 hex digits: the first 128 bits of BLAKE2b of `bytes` (libsodium's generichash, a
// few times faster than SHA-256 in software: this runs once per stored image).
std::string content_etag(std::string_view bytes);

}  // namespace ig::blobs
