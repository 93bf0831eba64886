#pragma once
// MemoryBlobStore: the BlobStore contract kept in a map, for tests of other modules. Same ids,
// validation, etags and errors as LocalBlobStore; nothing survives the object.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "blobs/blob_store.h"
#include "core/clock.h"
#include "core/random.h"

namespace ig::blobs {

class MemoryBlobStore final : public BlobStore {
 public:
  // `random` and `clock` must outlive the store; `random` is only used under the store's lock.
  MemoryBlobStore(Random& random, const Clock& clock) : random_(random), clock_(clock) {}

  Result<BlobInfo> put(std::string_view bytes, std::string_view content_type) override;
  Result<BlobInfo> stat(std::string_view id) override;
  Result<std::string> read(std::string_view id, std::uint64_t offset,
                           std::uint64_t length) override;
  Result<void> remove(std::string_view id) override;

  std::size_t size() const;  // number of blobs held

 private:
  struct Entry {
    BlobInfo info;
    std::shared_ptr<const std::string> bytes;  // shared so reads copy outside the lock
  };

  Random& random_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> blobs_;
};

}  // namespace ig::blobs
