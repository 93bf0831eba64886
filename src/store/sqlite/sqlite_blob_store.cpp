#include "store/sqlite/sqlite_blob_store.h"

#include <algorithm>
#include <limits>

#include "blobs/blob_etag.h"

namespace ig::store {
namespace {

std::unexpected<Error> not_found() { return fail(ErrorCode::kNotFound, "blob not found"); }

std::unexpected<Error> internal(const StoreError& e) {
  return fail(ErrorCode::kInternal, "blob store: " + e.message);
}

}  // namespace

blobs::BlobInfo SqliteBlobStore::to_info(const SqliteStore::BlobRow& row) {
  return blobs::BlobInfo{.id = row.id,
                         .content_type = row.content_type,
                         .size = static_cast<std::uint64_t>(row.size),
                         .etag = row.etag,
                         .created_at = row.created_at};
}

Result<blobs::BlobInfo> SqliteBlobStore::put(std::string_view bytes,
                                             std::string_view content_type) {
  if (!blobs::is_valid_content_type(content_type)) {
    return fail(ErrorCode::kInvalidRequest, "invalid content type", "content_type");
  }
  if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max() / 2)) {
    return fail(ErrorCode::kInvalidRequest, "blob too large for the database tier");
  }
  SqliteStore::BlobRow row;
  row.content_type = std::string(content_type);
  row.size = static_cast<std::int64_t>(bytes.size());
  const std::int64_t now_ms = clock_.now_ms();
  row.created_at = now_ms / 1000;
  for (int attempt = 0;; ++attempt) {
    {
      std::lock_guard lock(random_mu_);
      // Time first: the blobs table's id index then grows at one end (see time_prefix).
      row.id = time_prefix(now_ms) + random_.base62(blobs::kBlobIdLength);
    }
    row.etag = blobs::blob_etag(row.id);
    auto inserted = store_.blob_insert(row, bytes);
    if (inserted) break;
    // A duplicate id (only a broken Random repeats 131 bits) draws again, a few times.
    if (inserted.error().code != StoreErrc::kConflict || attempt >= 3) {
      return internal(inserted.error());
    }
  }
  return to_info(row);
}

Result<blobs::BlobInfo> SqliteBlobStore::stat(std::string_view id) {
  if (!blobs::is_valid_blob_id(id)) return not_found();
  auto row = store_.blob_find(id);
  if (!row) return row.error().code == StoreErrc::kNotFound ? not_found() : internal(row.error());
  return to_info(*row);
}

Result<std::string> SqliteBlobStore::read(std::string_view id, std::uint64_t offset,
                                          std::uint64_t length) {
  if (!blobs::is_valid_blob_id(id)) return not_found();
  // Rows hold small blobs: clamping to int32 for SQLite's substr changes no answer.
  constexpr std::uint64_t kMax = std::numeric_limits<std::int32_t>::max();
  auto slice = store_.blob_read(id, static_cast<std::int64_t>(std::min(offset, kMax)),
                                static_cast<std::int64_t>(std::min(length, kMax)));
  if (!slice) {
    return slice.error().code == StoreErrc::kNotFound ? not_found() : internal(slice.error());
  }
  if (offset > static_cast<std::uint64_t>(slice->size)) {
    return fail(ErrorCode::kInvalidRequest, "read offset past the end of the blob");
  }
  return std::move(slice->bytes);
}

Result<void> SqliteBlobStore::remove(std::string_view id) {
  if (!blobs::is_valid_blob_id(id)) return not_found();
  auto deleted = store_.blob_delete(id);
  if (!deleted) return internal(deleted.error());
  if (!*deleted) return not_found();
  return {};
}

}  // namespace ig::store
