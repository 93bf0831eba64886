#pragma once
// BlobStore: immutable result files (images now, videos later) behind one backend-neutral
// interface (local disk now, S3 later). Callers never see paths.
//
// Promises every implementation keeps (and blob_store_test checks):
//  - put() stores the bytes under a fresh id of kBlobIdLength base62 characters drawn from the
//    injected Random (~131 bits: unguessable with a CSPRNG), which a backend may prefix with
//    time_prefix() (SqliteBlobStore does, for its index), and is atomic: until put()
//    returns, no reader sees the blob; afterwards every reader sees all of it. A failed put()
//    leaves nothing visible behind.
//  - Blobs are immutable: an id never names different bytes. `etag` is a strong validator
//    derived from the id (blob_etag), already quoted for the ETag header (`"<32 hex>"`).
//  - Ids come from untrusted URLs: every method checks is_valid_blob_id() before touching its
//    backend, and an invalid id is simply absent (kNotFound), exactly like an unknown one.
//  - content_type must pass is_valid_content_type() (it ends up in a response header), else
//    put() fails with kInvalidRequest.
//  - Backend failures are kInternal. All methods are blocking and thread-safe: call them from
//    the blocking pool, never from an IO thread. Large blobs are streamed by calling read()
//    once per chunk.

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace ig::blobs {

inline constexpr std::size_t kBlobIdLength = 22;     // what put() generates
inline constexpr std::size_t kMaxBlobIdLength = 64;  // accepted, for future longer ids
inline constexpr std::size_t kMaxContentTypeLength = 255;

struct BlobInfo {
  std::string id;
  std::string content_type;
  std::uint64_t size = 0;
  std::string etag;             // quoted strong entity-tag, e.g. "\"3f2a…\""
  std::int64_t created_at = 0;  // unix seconds
};

// kBlobIdLength..kMaxBlobIdLength characters of [0-9A-Za-z]; nothing else (no '/', '.', NUL).
inline bool is_valid_blob_id(std::string_view id) {
  if (id.size() < kBlobIdLength || id.size() > kMaxBlobIdLength) return false;
  for (char c : id) {
    bool alnum = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    if (!alnum) return false;
  }
  return true;
}

// 1..255 printable ASCII characters (space allowed, so parameters like "; charset=utf-8"
// pass) containing a '/': safe to copy into a Content-Type header.
inline bool is_valid_content_type(std::string_view content_type) {
  if (content_type.empty() || content_type.size() > kMaxContentTypeLength) return false;
  if (content_type.front() == ' ' || content_type.back() == ' ') return false;
  for (char c : content_type) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return content_type.find('/') != std::string_view::npos;
}

class BlobStore {
 public:
  virtual ~BlobStore() = default;

  // Stores `bytes` (possibly empty) under a fresh id.
  virtual Result<BlobInfo> put(std::string_view bytes, std::string_view content_type) = 0;
  // kNotFound if absent (or invalid).
  virtual Result<BlobInfo> stat(std::string_view id) = 0;
  // Bytes [offset, offset + length), length clamped to the end: offset == size gives "".
  // kInvalidRequest when offset > size; kNotFound if absent.
  virtual Result<std::string> read(std::string_view id, std::uint64_t offset,
                                   std::uint64_t length) = 0;
  // kNotFound if absent. A read() racing remove() returns all the bytes it asked for or
  // kNotFound, never a torn result.
  virtual Result<void> remove(std::string_view id) = 0;

  // True when a put of `size` bytes is only a write to the Store (SqliteBlobStore): it may then
  // run inside Store::run_batched work, in the same transaction as the job it belongs to, and
  // needs no blocking-pool thread. Default: false (files, network).
  virtual bool put_joins_store_batch(std::uint64_t size) const {
    (void)size;
    return false;
  }
};

}  // namespace ig::blobs
