#pragma once
// Randomness source. Secrets (API keys, ids, passwords) come from a Random so tests can make
// them deterministic; production uses libsodium's CSPRNG.

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>

namespace ig {

class Random {
 public:
  virtual ~Random() = default;
  virtual void fill(std::span<std::uint8_t> out) = 0;
  // Uniform in [0, upper), without modulo bias.
  virtual std::uint32_t uniform(std::uint32_t upper) = 0;

  // `length` characters drawn uniformly from [0-9A-Za-z].
  std::string base62(std::size_t length);
  // 2*bytes lowercase hex characters.
  std::string hex(std::size_t bytes);
};

// libsodium's CSPRNG (getrandom). Small requests are served from a 256-byte buffer filled by
// one getrandom call, so a job id costs a tenth of a system call instead of one; bytes handed
// out are wiped from the buffer. Thread-safe. Not fork-safe: a forked child would hand out the
// parent's buffered bytes again (imagegate never forks).
class SodiumRandom final : public Random {
 public:
  SodiumRandom() = default;
  SodiumRandom(const SodiumRandom&) = delete;
  SodiumRandom& operator=(const SodiumRandom&) = delete;
  ~SodiumRandom() override;
  void fill(std::span<std::uint8_t> out) override;
  std::uint32_t uniform(std::uint32_t upper) override;

 private:
  static constexpr std::size_t kBufferSize = 256;  // libsodium reads getrandom in 256-byte chunks
  std::mutex mu_;
  std::array<std::uint8_t, kBufferSize> buffer_{};
  std::size_t used_ = kBufferSize;  // guarded by mu_; bytes before it were handed out and wiped
};

// kTimePrefixLength base62 digits of `unix_ms` (clamped at 0), fixed width, so ids that start
// with it sort by creation time and a database index of them grows at its right edge instead of
// dirtying a random page per insert. It carries no secret: follow it with random characters.
inline constexpr std::size_t kTimePrefixLength = 8;  // 62^8 ms: until the year 8888
std::string time_prefix(std::int64_t unix_ms);

// Deterministic (splitmix64) generator for tests; never for secrets.
class SeededRandom final : public Random {
 public:
  explicit SeededRandom(std::uint64_t seed) : state_(seed) {}
  void fill(std::span<std::uint8_t> out) override;
  std::uint32_t uniform(std::uint32_t upper) override;

 private:
  std::uint64_t next();
  std::uint64_t state_;
};

}  // namespace ig
