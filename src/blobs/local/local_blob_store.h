#pragma once
// LocalBlobStore: the BlobStore contract on a local filesystem.
//
// Layout under `root` (one process owns a root; it is created on first put):
//   <root>/<ab>/<id>   one file per blob (ab = first two characters of the id): a text header
//                      (format line, content_type=, size=, etag=, created_at=, blank line)
//                      followed by the bytes exactly as stored
//   <root>/tmp/        files being written; never visible as blobs
// One fan-out level of two base62 characters gives 3844 directories: ~2.6k blobs each at ten
// million blobs, where <ab>/<cd>/ would spend a directory per blob until tens of millions.
//
// put() writes the file in tmp/, renames it into place (the commit point: a blob exists iff
// <id> exists, so a crash leaves at worst an invisible temp file, see remove_temp_files()),
// then waits for a syncfs() of the filesystem before returning. That syncfs is shared through
// a FlushBarrier: concurrent puts pay for one device flush between them instead of three
// fsyncs each (file, sidecar, directory), which is what bounded image throughput.
// The root must be on a case-sensitive filesystem (ids differ by case).

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "blobs/blob_store.h"
#include "core/clock.h"
#include "core/flush_barrier.h"
#include "core/random.h"

namespace ig::blobs {

class LocalBlobStore final : public BlobStore {
 public:
  // Touches nothing on disk. `random` (only used under the store's lock) and `clock` must
  // outlive the store.
  LocalBlobStore(std::filesystem::path root, Random& random, const Clock& clock);

  Result<BlobInfo> put(std::string_view bytes, std::string_view content_type) override;
  Result<BlobInfo> stat(std::string_view id) override;
  Result<std::string> read(std::string_view id, std::uint64_t offset,
                           std::uint64_t length) override;
  Result<void> remove(std::string_view id) override;

  // Deletes files in tmp/ last modified at least `min_age` ago (leftovers of crashed puts);
  // returns how many. Call at startup; a min_age well above any put's duration is safe while
  // puts run.
  Result<std::size_t> remove_temp_files(std::chrono::seconds min_age);

  const std::filesystem::path& root() const { return root_; }

 private:
  std::filesystem::path fanout_dir(std::string_view id) const;  // id must be valid
  // Creates tmp/ and the fan-out directory (made durable by the put's flush).
  Result<void> ensure_dirs(const std::filesystem::path& dir);
  Result<void> sync_filesystem();

  std::filesystem::path root_;
  std::filesystem::path tmp_dir_;
  Random& random_;
  const Clock& clock_;
  std::mutex mu_;  // guards random_ and known_dirs_
  std::set<std::string> known_dirs_;
  FlushBarrier durable_;
};

}  // namespace ig::blobs
