#include "core/base64.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

namespace ig {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Two output characters per 12 input bits: halves the table lookups of the encode loop.
constexpr auto kPairs = [] {
  std::array<char, 2 * 4096> t{};
  for (int i = 0; i < 4096; ++i) {
    t[2 * i] = kAlphabet[i >> 6];
    t[2 * i + 1] = kAlphabet[i & 63];
  }
  return t;
}();

constexpr std::uint8_t kInvalid = 0xFF;
constexpr std::uint8_t kSkip = 0xFE;  // whitespace
constexpr std::uint8_t kPad = 0xFD;   // '='

// Byte -> sextet (0..63) or one of the markers above.
constexpr auto kDecode = [] {
  std::array<std::uint8_t, 256> t{};
  t.fill(kInvalid);
  for (int i = 0; i < 64; ++i)
    t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<std::uint8_t>(i);
  for (unsigned char c : {' ', '\t', '\r', '\n'}) t[c] = kSkip;
  t['='] = kPad;
  return t;
}();

// Bulk decoding: each table places a character's sextet at its bit position in the 3 output
// bytes (little-endian in a uint32), so a quantum is 4 lookups and 3 ORs. A character outside
// the alphabet (whitespace, '=', garbage) sets kNotSextetBit, which stops the bulk loop.
constexpr std::uint32_t kNotSextetBit = 0x01000000;
constexpr std::uint32_t kNotSextet = kNotSextetBit | 0x00FFFFFF;
template <int kPosition>
constexpr auto make_quantum_table() {
  std::array<std::uint32_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const std::uint32_t v = kDecode[c];
    if (v >= 64) {
      t[c] = kNotSextet;
    } else if (kPosition == 0) {
      t[c] = v << 2;
    } else if (kPosition == 1) {
      t[c] = (v >> 4) | ((v & 0xF) << 12);
    } else if (kPosition == 2) {
      t[c] = ((v >> 2) << 8) | ((v & 0x3) << 22);
    } else {
      t[c] = v << 16;
    }
  }
  return t;
}
constexpr auto kQuantum0 = make_quantum_table<0>();
constexpr auto kQuantum1 = make_quantum_table<1>();
constexpr auto kQuantum2 = make_quantum_table<2>();
constexpr auto kQuantum3 = make_quantum_table<3>();

std::unexpected<Error> bad(std::string what, std::size_t offset) {
  return std::unexpected(
      Error::invalid(fmt::format("invalid base64: {} at offset {}", what, offset)));
}

std::unexpected<Error> too_large(std::size_t max_bytes) {
  return fail(ErrorCode::kPayloadTooLarge,
              fmt::format("base64 data decodes to more than {} bytes", max_bytes));
}

std::string describe(unsigned char c) {
  if (c >= 0x21 && c <= 0x7E) return fmt::format("unexpected character '{}'", static_cast<char>(c));
  return fmt::format("unexpected byte 0x{:02X}", c);
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  const std::size_t size = base64_encoded_size(bytes.size());
  std::string out;
  // The callback's own size argument is not used: libstdc++ 12 passes the grown capacity there.
  out.resize_and_overwrite(size, [&](char* o, std::size_t) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const std::size_t whole = bytes.size() / 3 * 3;
    for (std::size_t i = 0; i < whole; i += 3, o += 4) {
      std::uint32_t v = (std::uint32_t{p[i]} << 16) | (std::uint32_t{p[i + 1]} << 8) | p[i + 2];
      std::memcpy(o, &kPairs[2 * (v >> 12)], 2);
      std::memcpy(o + 2, &kPairs[2 * (v & 0xFFF)], 2);
    }
    const std::size_t rest = bytes.size() - whole;
    if (rest > 0) {
      std::uint32_t v = std::uint32_t{p[whole]} << 16;
      if (rest == 2) v |= std::uint32_t{p[whole + 1]} << 8;
      o[0] = kAlphabet[v >> 18];
      o[1] = kAlphabet[(v >> 12) & 63];
      o[2] = rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
      o[3] = '=';
    }
    return size;
  });
  return out;
}

Result<std::string> base64_decode(std::string_view text, std::size_t max_bytes) {
  // Never more than 3 bytes per 4 characters; never more than the cap (checked before writing).
  const std::size_t capacity = std::min(text.size() / 4 * 3 + 3, max_bytes);
  std::string out;
  Result<void> status;
  out.resize_and_overwrite(capacity, [&](char* buf, std::size_t) -> std::size_t {
    const auto* in = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t len = 0;    // bytes written
    std::uint32_t acc = 0;  // pending sextets
    int pending = 0;        // how many
    std::size_t i = 0;
    std::size_t last = 0;  // offset of the last alphabet character
    while (i < n) {
      if (pending == 0) {
        // Bulk path: whole quanta of alphabet characters, as many as the input and the cap
        // allow; anything else (and the cap's error) is left to the per-character path.
        const std::size_t quanta = std::min((n - i) / 4, (max_bytes - len) / 3);
        const unsigned char* q = in + i;
        std::size_t done = 0;
        for (; done < quanta; ++done, q += 4) {
          const std::uint32_t x =
              kQuantum0[q[0]] | kQuantum1[q[1]] | kQuantum2[q[2]] | kQuantum3[q[3]];
          if ((x & kNotSextetBit) != 0) break;
          buf[len] = static_cast<char>(x);
          buf[len + 1] = static_cast<char>(x >> 8);
          buf[len + 2] = static_cast<char>(x >> 16);
          len += 3;
        }
        if (done > 0) {
          i += 4 * done;
          last = i - 1;
          continue;
        }
      }
      std::uint8_t v = kDecode[in[i]];
      if (v < 64) {
        acc = (acc << 6) | v;
        last = i;
        if (++pending == 4) {
          if (max_bytes - len < 3) {
            status = too_large(max_bytes);
            return 0;
          }
          buf[len] = static_cast<char>(acc >> 16);
          buf[len + 1] = static_cast<char>(acc >> 8);
          buf[len + 2] = static_cast<char>(acc);
          len += 3;
          acc = 0;
          pending = 0;
        }
      } else if (v == kSkip) {
      } else if (v == kPad) {
        break;
      } else {
        status = bad(describe(in[i]), i);
        return 0;
      }
      ++i;
    }
    // Padding, then nothing but whitespace.
    const std::size_t pad_at = i;
    int pads = 0;
    for (; i < n; ++i) {
      std::uint8_t v = kDecode[in[i]];
      if (v == kPad) {
        if (++pads > 2) {
          status = bad("too much padding", i);
          return 0;
        }
      } else if (v != kSkip) {
        status = bad(describe(in[i]) + " after padding", i);
        return 0;
      }
    }
    std::size_t tail = 0;  // bytes the final partial quantum carries
    switch (pending) {
      case 0:
        if (pads != 0) {
          status = bad("unexpected padding", pad_at);
          return 0;
        }
        break;
      case 1:
        status = bad("truncated input (a lone final character)", last);
        return 0;
      case 2:
        if (pads != 0 && pads != 2) {
          status = bad("wrong amount of padding", pad_at);
          return 0;
        }
        if ((acc & 0xF) != 0) {
          status = bad("non-zero unused bits in the final character", last);
          return 0;
        }
        tail = 1;
        acc >>= 4;
        break;
      case 3:
        if (pads != 0 && pads != 1) {
          status = bad("wrong amount of padding", pad_at);
          return 0;
        }
        if ((acc & 0x3) != 0) {
          status = bad("non-zero unused bits in the final character", last);
          return 0;
        }
        tail = 2;
        acc >>= 2;
        break;
    }
    if (tail > 0) {
      if (max_bytes - len < tail) {
        status = too_large(max_bytes);
        return 0;
      }
      if (tail == 2) buf[len++] = static_cast<char>(acc >> 8);
      buf[len++] = static_cast<char>(acc);
    }
    return len;
  });
  if (!status) return std::unexpected(std::move(status.error()));
  return out;
}

}  // namespace ig
