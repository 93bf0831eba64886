#include "core/random.h"

#include <sodium.h>

#include <algorithm>

namespace ig {
namespace {

// In ASCII order, so a fixed-width time_prefix sorts like the time it encodes.
constexpr char kBase62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

}  // namespace

std::string Random::base62(std::size_t length) {
  // Bytes come in bulk (one getrandom for a whole id, not one per character); a byte below
  // 248 = 4 x 62 maps to a character without modulo bias, the others are drawn again.
  std::string out;
  out.reserve(length);
  std::uint8_t bytes[64];
  while (out.size() < length) {
    const std::size_t want = std::min(sizeof bytes, length - out.size() + 4);
    fill({bytes, want});
    for (std::size_t i = 0; i < want && out.size() < length; ++i) {
      if (bytes[i] < 248) out += kBase62[bytes[i] % 62];
    }
  }
  return out;
}

std::string time_prefix(std::int64_t unix_ms) {
  std::uint64_t t = static_cast<std::uint64_t>(std::max<std::int64_t>(unix_ms, 0));
  std::string out(kTimePrefixLength, '0');
  for (std::size_t i = out.size(); i > 0 && t > 0; --i, t /= 62) out[i - 1] = kBase62[t % 62];
  return out;
}

std::string Random::hex(std::size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string raw(bytes, '\0');
  fill({reinterpret_cast<std::uint8_t*>(raw.data()), raw.size()});
  std::string out;
  out.reserve(bytes * 2);
  for (unsigned char c : raw) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

SodiumRandom::~SodiumRandom() { sodium_memzero(buffer_.data(), buffer_.size()); }

void SodiumRandom::fill(std::span<std::uint8_t> out) {
  if (out.size() > kBufferSize / 4) {
    randombytes_buf(out.data(), out.size());
    return;
  }
  std::lock_guard lock(mu_);
  std::size_t done = 0;
  while (done < out.size()) {
    if (used_ == kBufferSize) {
      randombytes_buf(buffer_.data(), buffer_.size());
      used_ = 0;
    }
    const std::size_t n = std::min(out.size() - done, kBufferSize - used_);
    std::copy_n(buffer_.data() + used_, n, out.data() + done);
    sodium_memzero(buffer_.data() + used_, n);
    used_ += n;
    done += n;
  }
}

std::uint32_t SodiumRandom::uniform(std::uint32_t upper) {
  if (upper < 2) return 0;
  // Rejection sampling, as randombytes_uniform does: values below 2^32 mod upper would make
  // the low results more likely.
  const std::uint32_t min = (1U + ~upper) % upper;
  for (;;) {
    std::uint32_t r = 0;
    fill({reinterpret_cast<std::uint8_t*>(&r), sizeof r});
    if (r >= min) return r % upper;
  }
}

std::uint64_t SeededRandom::next() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void SeededRandom::fill(std::span<std::uint8_t> out) {
  for (auto& b : out) b = static_cast<std::uint8_t>(next());
}

std::uint32_t SeededRandom::uniform(std::uint32_t upper) {
  if (upper == 0) return 0;
  return static_cast<std::uint32_t>(next() % upper);
}

}  // namespace ig
