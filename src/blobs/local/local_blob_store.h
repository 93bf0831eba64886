#pragma once
// LocalBlobStore: the BlobStore contract on a local filesystem.
//
// Layout under `root` (one process owns a root; it is created on first put):
//   <root>/<ab>/<id>        the bytes, exactly as stored (ab = first two characters of the id)
//   <root>/<ab>/<id>.meta   sidecar: format line, then content_type=, size=, etag=, created_at=
//   <root>/tmp/             files being written; never visible as blobs
// One fan-out level of two base62 characters gives 3844 directories: ~2.6k blobs each at ten
// million blobs, where <ab>/<cd>/ would spend a directory per blob until tens of millions.
//
// put() writes both files in tmp/, fsyncs them, renames the sidecar into place and then the
// data file, then fsyncs the directory. The data file is the commit point: a blob exists iff
// <id> exists, so a crash leaves at worst an invisible temp file (remove_temp_files()) or an
// orphan sidecar (ignored). remove() unlinks the data file first for the same reason.
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
  // Creates tmp/ and the fan-out directory and makes their entries durable, once per process.
  Result<void> ensure_dirs(const std::filesystem::path& dir);

  std::filesystem::path root_;
  std::filesystem::path tmp_dir_;
  Random& random_;
  const Clock& clock_;
  std::mutex mu_;  // guards random_ and durable_dirs_
  std::set<std::string> durable_dirs_;
};

}  // namespace ig::blobs
