#pragma once
// SqliteBlobStore: a BlobStore whose blobs are rows of the SqliteStore's database (table
// `blobs`). Meant for small results (a 1K PNG is ~16 KB): a put is one more write in the
// store's group commit instead of a new file, a rename and a filesystem flush, and nothing can
// be half-written. Large blobs belong on disk; TieredBlobStore picks by size.
//
// Keeps every promise of blob_store.h. put() returns once the row is durable (the store's
// flush); like every BlobStore call it blocks, so call it from the blocking pool.

#include <mutex>

#include "blobs/blob_store.h"
#include "core/clock.h"
#include "core/random.h"
#include "store/sqlite/sqlite_store.h"

namespace ig::store {

class SqliteBlobStore final : public blobs::BlobStore {
 public:
  SqliteBlobStore(SqliteStore& store, Random& random, const Clock& clock)
      : store_(store), random_(random), clock_(clock) {}

  Result<blobs::BlobInfo> put(std::string_view bytes, std::string_view content_type) override;
  Result<blobs::BlobInfo> stat(std::string_view id) override;
  Result<std::string> read(std::string_view id, std::uint64_t offset,
                           std::uint64_t length) override;
  Result<void> remove(std::string_view id) override;
  bool put_joins_store_batch(std::uint64_t) const override { return true; }

 private:
  static blobs::BlobInfo to_info(const SqliteStore::BlobRow& row);

  SqliteStore& store_;
  Random& random_;
  const Clock& clock_;
  std::mutex random_mu_;
};

}  // namespace ig::store
