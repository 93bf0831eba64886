#pragma once
// The strong ETag every BlobStore gives a blob. Blobs are immutable and an id never names other
// bytes, so a tag derived from the id is a strong validator, costs nothing per byte (hashing
// the content was a tenth of the store writer's time per image) and does not reveal the id.

#include <string>
#include <string_view>

namespace ig::blobs {

// Quoted 32 hex digits: the first 128 bits of BLAKE2b of the blob id.
std::string blob_etag(std::string_view id);

}  // namespace ig::blobs
