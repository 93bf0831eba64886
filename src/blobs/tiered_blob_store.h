#pragma once
// TieredBlobStore: small blobs in one BlobStore, large ones in another (the embedded setup: up
// to [blobs] inline_max_bytes in the database, larger on local disk). Keeps every promise of
// blob_store.h. Ids carry no tier: lookups ask the small tier first, then the large one (a miss
// is one indexed read); ids are random, so they never collide across tiers.

#include <cstddef>

#include "blobs/blob_store.h"

namespace ig::blobs {

class TieredBlobStore final : public BlobStore {
 public:
  TieredBlobStore(BlobStore& small, BlobStore& large, std::size_t small_max_bytes)
      : small_(small), large_(large), small_max_bytes_(small_max_bytes) {}

  Result<BlobInfo> put(std::string_view bytes, std::string_view content_type) override {
    BlobStore& tier = bytes.size() <= small_max_bytes_ ? small_ : large_;  // as above
    return tier.put(bytes, content_type);
  }
  bool put_joins_store_batch(std::uint64_t size) const override {
    return size <= small_max_bytes_ ? small_.put_joins_store_batch(size)
                                    : large_.put_joins_store_batch(size);
  }
  Result<BlobInfo> stat(std::string_view id) override {
    auto info = small_.stat(id);
    if (info || info.error().code != ErrorCode::kNotFound) return info;
    return large_.stat(id);
  }
  Result<std::string> read(std::string_view id, std::uint64_t offset,
                           std::uint64_t length) override {
    auto bytes = small_.read(id, offset, length);
    if (bytes || bytes.error().code != ErrorCode::kNotFound) return bytes;
    return large_.read(id, offset, length);
  }
  Result<void> remove(std::string_view id) override {
    auto removed = small_.remove(id);
    if (removed || removed.error().code != ErrorCode::kNotFound) return removed;
    return large_.remove(id);
  }

 private:
  BlobStore& small_;
  BlobStore& large_;
  std::size_t small_max_bytes_;
};

}  // namespace ig::blobs
