#include "blobs/signed_url.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <utility>

namespace ig::blobs {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kDomain = "imagegate-url-v1\n";
constexpr std::size_t kSecretBytes = 32;

std::unexpected<Error> denied(std::string message) {
  return fail(ErrorCode::kPermissionDenied, std::move(message));
}

std::unexpected<Error> key_file_error(const fs::path& path, std::string_view what, int err) {
  return fail(ErrorCode::kInternal, "url signing key " + path.string() + ": " + std::string(what) +
                                        ": " + std::system_category().message(err));
}

// Reads the key; `open_errno` tells a missing file (ENOENT) from other failures.
Result<std::string> read_key_file(const fs::path& path, int& open_errno) {
  open_errno = 0;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    open_errno = errno;
    return key_file_error(path, "open", errno);
  }
  std::string out(kSecretBytes + 1, '\0');
  std::size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return key_file_error(path, "read", err);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  out.resize(got);
  if (got != kSecretBytes) {
    sodium_memzero(out.data(), out.size());
    return fail(ErrorCode::kInternal,
                "url signing key " + path.string() + ": expected " + std::to_string(kSecretBytes) +
                    " bytes, found " + (got > kSecretBytes ? "more" : std::to_string(got)) +
                    " (delete it to generate a new key; outstanding URLs stop working)");
  }
  return out;
}

Result<void> write_key_file(const fs::path& path, std::string_view key) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return key_file_error(path, "create", errno);
  auto fail_with = [&](std::string_view what) {
    int err = errno;
    ::close(fd);
    return key_file_error(path, what, err);
  };
  if (::fchmod(fd, 0600) != 0) return fail_with("chmod");
  while (!key.empty()) {
    ssize_t n = ::write(fd, key.data(), key.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_with("write");
    key.remove_prefix(static_cast<std::size_t>(n));
  }
  if (::fsync(fd) != 0) return fail_with("fsync");
  if (::close(fd) != 0) return key_file_error(path, "close", errno);
  return {};
}

}  // namespace

UrlSigner::UrlSigner(std::string secret_key_bytes, const Clock& clock)
    : key_(std::move(secret_key_bytes)), clock_(&clock) {}

UrlSigner::~UrlSigner() {
  if (!key_.empty()) sodium_memzero(key_.data(), key_.size());
}

std::string UrlSigner::signature(std::string_view resource, std::int64_t expires_at) const {
  // Unambiguous message: the decimal expiry contains no '\n', so it ends at the first one.
  std::string exp = std::to_string(expires_at);
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(key_.data()),
                              key_.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(kDomain.data()),
                                kDomain.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(exp.data()),
                                exp.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>("\n"), 1);
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(resource.data()),
                                resource.size());
  crypto_auth_hmacsha256_final(&state, mac);
  sodium_memzero(&state, sizeof state);

  constexpr int kVariant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_ENCODED_LEN(sizeof mac, kVariant), '\0');
  sodium_bin2base64(out.data(), out.size(), mac, sizeof mac, kVariant);
  out.resize(out.find('\0'));
  return out;
}

std::string UrlSigner::sign(std::string_view resource, std::int64_t expires_at) const {
  return "exp=" + std::to_string(expires_at) + "&sig=" + signature(resource, expires_at);
}

Result<void> UrlSigner::verify(std::string_view resource, std::int64_t expires_at,
                               std::string_view sig) const {
  if (key_.size() < kMinKeyBytes) {
    return fail(ErrorCode::kInternal, "url signing key too short");
  }
  std::string expected = signature(resource, expires_at);
  if (sig.size() != expected.size() ||
      sodium_memcmp(sig.data(), expected.data(), expected.size()) != 0) {
    return denied("invalid url signature");
  }
  if (clock_->now_s() >= expires_at) return denied("url expired");
  return {};
}

Result<std::string> load_or_create_secret(const fs::path& path, Random& random) {
  int open_errno = 0;
  auto existing = read_key_file(path, open_errno);
  if (existing || open_errno != ENOENT) return existing;

  std::error_code ec;
  if (path.has_parent_path()) {
    fs::create_directories(path.parent_path(), ec);
    if (ec && !fs::is_directory(path.parent_path())) {
      return key_file_error(path, "create directory", ec.value());
    }
  }
  std::string key(kSecretBytes, '\0');
  random.fill({reinterpret_cast<std::uint8_t*>(key.data()), key.size()});
  fs::path tmp = path;
  tmp += ".tmp-" + random.hex(8);
  if (auto written = write_key_file(tmp, key); !written) {
    ::unlink(tmp.c_str());
    return std::unexpected(written.error());
  }
  // link() publishes the complete file and fails if another process got there first.
  int linked = ::link(tmp.c_str(), path.c_str());
  int link_errno = errno;
  if (linked != 0 && link_errno != EEXIST) {
    // Filesystems without hard links: rename (may replace a concurrent writer's key).
    linked = ::rename(tmp.c_str(), path.c_str());
    link_errno = errno;
  }
  ::unlink(tmp.c_str());
  if (linked != 0 && link_errno == EEXIST) {
    sodium_memzero(key.data(), key.size());
    return read_key_file(path, open_errno);
  }
  if (linked != 0) return key_file_error(path, "publish", link_errno);
  if (path.has_parent_path()) {
    int dir = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
  }
  return key;
}

}  // namespace ig::blobs
