#pragma once
// Test helper: a fresh directory under the system temp dir, removed with everything in it.

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace ig {

class TempDir {
 public:
  // The directory is imagegate-<prefix>-XXXXXX, so a leftover tells which test made it.
  explicit TempDir(std::string_view prefix = "test") {
    std::string pattern =
        (std::filesystem::temp_directory_path() / ("imagegate-" + std::string(prefix) + "-XXXXXX"))
            .string();
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  // Empty if the directory could not be made.
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace ig
