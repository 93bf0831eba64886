#include "blobs/memory_blob_store.h"

#include <algorithm>

#include "blobs/blob_etag.h"

namespace ig::blobs {

Result<BlobInfo> MemoryBlobStore::put(std::string_view bytes, std::string_view content_type) {
  if (!is_valid_content_type(content_type)) {
    return fail(ErrorCode::kInvalidRequest, "invalid content type", "content_type");
  }
  auto data = std::make_shared<const std::string>(bytes);
  BlobInfo info{.content_type = std::string(content_type),
                .size = bytes.size(),
                .created_at = clock_.now_s()};
  std::lock_guard lock(mu_);
  do {
    info.id = random_.base62(kBlobIdLength);
  } while (blobs_.contains(info.id));
  info.etag = blob_etag(info.id);
  blobs_.emplace(info.id, Entry{info, std::move(data)});
  return info;
}

Result<BlobInfo> MemoryBlobStore::stat(std::string_view id) {
  std::lock_guard lock(mu_);
  auto it = is_valid_blob_id(id) ? blobs_.find(id) : blobs_.end();
  if (it == blobs_.end()) return fail(ErrorCode::kNotFound, "blob not found");
  return it->second.info;
}

Result<std::string> MemoryBlobStore::read(std::string_view id, std::uint64_t offset,
                                          std::uint64_t length) {
  std::shared_ptr<const std::string> bytes;
  {
    std::lock_guard lock(mu_);
    auto it = is_valid_blob_id(id) ? blobs_.find(id) : blobs_.end();
    if (it == blobs_.end()) return fail(ErrorCode::kNotFound, "blob not found");
    bytes = it->second.bytes;
  }
  if (offset > bytes->size()) {
    return fail(ErrorCode::kInvalidRequest, "read offset past the end of the blob");
  }
  return bytes->substr(offset, std::min<std::uint64_t>(length, bytes->size() - offset));
}

Result<void> MemoryBlobStore::remove(std::string_view id) {
  std::lock_guard lock(mu_);
  auto it = is_valid_blob_id(id) ? blobs_.find(id) : blobs_.end();
  if (it == blobs_.end()) return fail(ErrorCode::kNotFound, "blob not found");
  blobs_.erase(it);
  return {};
}

std::size_t MemoryBlobStore::size() const {
  std::lock_guard lock(mu_);
  return blobs_.size();
}

}  // namespace ig::blobs
