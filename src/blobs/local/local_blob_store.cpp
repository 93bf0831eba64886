#include "blobs/local/local_blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <system_error>
#include <utility>
#include <vector>

#include "blobs/blob_etag.h"
#include "core/unique_fd.h"

namespace ig::blobs {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kMetaFormat = "imagegate-blob 2";
constexpr std::size_t kMaxHeaderBytes = 4096;

std::string errno_text(int err) { return std::system_category().message(err); }

std::unexpected<Error> internal(std::string_view what, int err) {
  return fail(ErrorCode::kInternal, "blob store: " + std::string(what) + ": " + errno_text(err));
}

std::unexpected<Error> not_found() { return fail(ErrorCode::kNotFound, "blob not found"); }

using Fd = UniqueFd;

// Unlinks the files it tracks when it goes out of scope, unless forgotten.
class Cleanup {
 public:
  Cleanup() = default;
  Cleanup(const Cleanup&) = delete;
  Cleanup& operator=(const Cleanup&) = delete;
  ~Cleanup() {
    for (const auto& path : paths_) ::unlink(path.c_str());
  }
  void track(const fs::path& path) { paths_.push_back(path); }
  void forget(const fs::path& path) { std::erase(paths_, path); }

 private:
  std::vector<fs::path> paths_;
};

// Creates `path` (which must not exist) holding `header` then `data`. Not synced: put() makes
// it durable through the store's flush barrier.
Result<void> write_new_file(const fs::path& path, std::string_view header, std::string_view data) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640));
  if (!fd.ok()) return internal("create temp file", errno);
  for (std::string_view part : {header, data}) {
    while (!part.empty()) {
      ssize_t n = ::write(fd.get(), part.data(), part.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return internal("write temp file", errno);
      }
      part.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  if (::close(fd.release()) != 0) return internal("close temp file", errno);
  return {};
}

// Opens an existing blob file read-only; absent (or not a plain file) is kNotFound.
Result<Fd> open_existing(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return not_found();
    return internal("open blob", errno);
  }
  return Result<Fd>(std::in_place, fd);
}

Result<std::uint64_t> regular_file_size(const Fd& fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return internal("stat blob", errno);
  if (!S_ISREG(st.st_mode)) return not_found();
  return static_cast<std::uint64_t>(st.st_size);
}

// Reads exactly `length` bytes at `offset`.
Result<std::string> read_at(const Fd& fd, std::uint64_t offset, std::uint64_t length) {
  std::string out(length, '\0');
  std::uint64_t done = 0;
  while (done < length) {
    ssize_t n =
        ::pread(fd.get(), out.data() + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return internal("read blob", errno);
    }
    if (n == 0) return fail(ErrorCode::kInternal, "blob store: blob shorter than its size");
    done += static_cast<std::uint64_t>(n);
  }
  return out;
}

std::string render_header(const BlobInfo& info) {
  std::string out(kMetaFormat);
  out += "\ncontent_type=" + info.content_type;
  out += "\nsize=" + std::to_string(info.size);
  out += "\netag=" + info.etag;
  out += "\ncreated_at=" + std::to_string(info.created_at);
  out += "\n\n";
  return out;
}

template <class T>
bool parse_int(std::string_view text, T& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

// Parses a sidecar; unknown keys are ignored so later versions can add some.
Result<BlobInfo> parse_meta(std::string_view id, std::string_view text) {
  auto corrupt = [&] { return fail(ErrorCode::kInternal, "blob store: corrupt metadata"); };
  BlobInfo info{.id = std::string(id)};
  bool first = true, has_type = false, has_size = false, has_etag = false, has_created = false;
  while (!text.empty()) {
    std::size_t nl = text.find('\n');
    if (nl == std::string_view::npos) return corrupt();  // every line ends in '\n'
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    if (first) {
      if (line != kMetaFormat) return corrupt();
      first = false;
      continue;
    }
    std::size_t eq = line.find('=');
    if (eq == std::string_view::npos) return corrupt();
    std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
    if (key == "content_type") {
      if (!is_valid_content_type(value)) return corrupt();
      info.content_type = value;
      has_type = true;
    } else if (key == "size") {
      if (!parse_int(value, info.size)) return corrupt();
      has_size = true;
    } else if (key == "etag") {
      if (value.size() < 2 || value.front() != '"' || value.back() != '"') return corrupt();
      info.etag = value;
      has_etag = true;
    } else if (key == "created_at") {
      if (!parse_int(value, info.created_at)) return corrupt();
      has_created = true;
    }
  }
  if (first || !has_type || !has_size || !has_etag || !has_created) return corrupt();
  return info;
}

// An open blob file: its metadata and where the bytes start.
struct OpenBlob {
  Fd fd;
  BlobInfo info;
  std::uint64_t data_offset = 0;
};

Result<OpenBlob> open_blob(const fs::path& path, std::string_view id) {
  auto fd = open_existing(path);
  if (!fd) return std::unexpected(fd.error());
  auto size = regular_file_size(*fd);
  if (!size) return std::unexpected(size.error());
  auto head = read_at(*fd, 0, std::min<std::uint64_t>(*size, kMaxHeaderBytes));
  if (!head) return std::unexpected(head.error());
  const std::size_t end = head->find("\n\n");
  if (end == std::string::npos) return fail(ErrorCode::kInternal, "blob store: corrupt header");
  auto info = parse_meta(id, std::string_view(*head).substr(0, end + 1));
  if (!info) return std::unexpected(info.error());
  const std::uint64_t data_offset = end + 2;
  if (*size - data_offset != info->size) {
    return fail(ErrorCode::kInternal, "blob store: blob size differs from its header");
  }
  return OpenBlob{std::move(*fd), std::move(*info), data_offset};
}

}  // namespace

LocalBlobStore::LocalBlobStore(std::filesystem::path root, Random& random, const Clock& clock)
    : root_(std::move(root)),
      tmp_dir_(root_ / "tmp"),
      random_(random),
      clock_(clock),
      durable_([this] { return sync_filesystem(); }) {}

Result<void> LocalBlobStore::sync_filesystem() {
  Fd fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.ok()) return internal("open root", errno);
  if (::syncfs(fd.get()) != 0) return internal("syncfs", errno);
  return {};
}

fs::path LocalBlobStore::fanout_dir(std::string_view id) const { return root_ / id.substr(0, 2); }

Result<void> LocalBlobStore::ensure_dirs(const fs::path& dir) {
  std::lock_guard lock(mu_);
  if (known_dirs_.empty()) {
    std::error_code ec;
    fs::create_directories(tmp_dir_, ec);
    if (ec && !fs::is_directory(tmp_dir_)) {
      return fail(ErrorCode::kInternal, "blob store: create tmp dir: " + ec.message());
    }
    known_dirs_.insert("tmp");
  }
  std::string name = dir.filename().string();
  if (known_dirs_.contains(name)) return {};
  std::error_code ec;
  fs::create_directory(dir, ec);
  if (ec && !fs::is_directory(dir)) {
    return fail(ErrorCode::kInternal, "blob store: create directory: " + ec.message());
  }
  known_dirs_.insert(std::move(name));
  return {};
}

Result<BlobInfo> LocalBlobStore::put(std::string_view bytes, std::string_view content_type) {
  if (!is_valid_content_type(content_type)) {
    return fail(ErrorCode::kInvalidRequest, "invalid content type", "content_type");
  }
  BlobInfo info{.content_type = std::string(content_type),
                .size = bytes.size(),
                .created_at = clock_.now_s()};
  std::string tmp_name;
  {
    std::lock_guard lock(mu_);
    info.id = random_.base62(kBlobIdLength);
    tmp_name = random_.hex(16);
  }
  info.etag = blob_etag(info.id);
  const fs::path dir = fanout_dir(info.id);
  if (auto made = ensure_dirs(dir); !made) return std::unexpected(made.error());

  const fs::path tmp = tmp_dir_ / (tmp_name + ".blob");
  const fs::path final_path = dir / info.id;
  Cleanup cleanup;
  cleanup.track(tmp);
  if (auto written = write_new_file(tmp, render_header(info), bytes); !written) {
    return std::unexpected(written.error());
  }
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) return internal("publish", errno);
  cleanup.forget(tmp);
  cleanup.track(final_path);
  // One syncfs makes the file, its directory entry and any new directory durable, and is
  // shared by every put that is waiting at the same time.
  if (auto synced = durable_.flush(); !synced) return std::unexpected(synced.error());
  cleanup.forget(final_path);
  return info;
}

Result<BlobInfo> LocalBlobStore::stat(std::string_view id) {
  if (!is_valid_blob_id(id)) return not_found();
  auto blob = open_blob(fanout_dir(id) / id, id);
  if (!blob) return std::unexpected(blob.error());
  return std::move(blob->info);
}

Result<std::string> LocalBlobStore::read(std::string_view id, std::uint64_t offset,
                                         std::uint64_t length) {
  if (!is_valid_blob_id(id)) return not_found();
  auto blob = open_blob(fanout_dir(id) / id, id);
  if (!blob) return std::unexpected(blob.error());
  const std::uint64_t size = blob->info.size;
  if (offset > size) {
    return fail(ErrorCode::kInvalidRequest, "read offset past the end of the blob");
  }
  return read_at(blob->fd, blob->data_offset + offset, std::min(length, size - offset));
}

Result<void> LocalBlobStore::remove(std::string_view id) {
  if (!is_valid_blob_id(id)) return not_found();
  const fs::path data = fanout_dir(id) / id;
  struct stat st {};
  if (::lstat(data.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return not_found();
    return internal("stat blob", errno);
  }
  if (!S_ISREG(st.st_mode)) return not_found();
  if (::unlink(data.c_str()) != 0) {
    if (errno == ENOENT) return not_found();
    return internal("remove blob", errno);
  }
  return {};
}

Result<std::size_t> LocalBlobStore::remove_temp_files(std::chrono::seconds min_age) {
  std::error_code ec;
  fs::directory_iterator it(tmp_dir_, ec);
  if (ec == std::errc::no_such_file_or_directory) return 0;
  if (ec) return fail(ErrorCode::kInternal, "blob store: list tmp dir: " + ec.message());
  const auto cutoff = fs::file_time_type::clock::now() - min_age;
  std::size_t removed = 0;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::error_code entry_ec;
    auto mtime = fs::last_write_time(it->path(), entry_ec);
    if (entry_ec || mtime > cutoff) continue;
    if (fs::remove(it->path(), entry_ec)) ++removed;
  }
  if (ec) return fail(ErrorCode::kInternal, "blob store: list tmp dir: " + ec.message());
  return removed;
}

}  // namespace ig::blobs
