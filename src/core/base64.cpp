#include "core/base64.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

#if defined(__x86_64__) && defined(__GNUC__)
#define IG_BASE64_AVX2 1
// Decodes whole 32-character blocks of alphabet characters, 32 at a time (the lookup method of
// W. Muła and D. Lemire, "Faster Base64 Encoding and Decoding Using AVX2 Instructions", 2018):
// two nibble tables classify every character, a third maps each class to the offset that turns
// ASCII into its sextet, and two multiply-adds and two shuffles pack 32 sextets into 24 bytes.
// Stops before the first block holding anything else (whitespace, '=', a bad byte), which the
// scalar loop then handles. Each block stores 32 bytes of which 24 count, so `out` must have 8
// bytes to spare after the last block. Returns how many blocks it decoded.
__attribute__((target("avx2"))) std::size_t decode_blocks_avx2(const unsigned char* in,
                                                               std::size_t blocks, char* out) {
  // Class bits by low nibble and by high nibble: a character is in the alphabet exactly when
  // its two entries share no bit.
  const __m256i lo_classes =
      _mm256_setr_epi8(0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B,
                       0x1B, 0x1B, 0x1A, 0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
                       0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A);
  const __m256i hi_classes =
      _mm256_setr_epi8(0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10,
                       0x10, 0x10, 0x10, 0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10,
                       0x10, 0x10, 0x10, 0x10, 0x10, 0x10);
  // Sextet minus ASCII by high nibble; index 1 is '/' (high nibble 2, moved down by one).
  const __m256i offsets =
      _mm256_setr_epi8(0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 19, 4, -65,
                       -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i slash = _mm256_set1_epi8('/');
  // Each 32-bit lane holds sextets a, b, c, d: the first multiply-add makes the 16-bit halves
  // a·64 + b and c·64 + d, the second the 24-bit value (a·64 + b)·4096 + c·64 + d, whose three
  // low bytes, high first, are the lane's output.
  const __m256i merge_pairs = _mm256_set1_epi32(0x01400140);
  const __m256i merge_halves = _mm256_set1_epi32(0x00011000);
  const __m256i pick_bytes =
      _mm256_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1, 2, 1, 0, 6, 5, 4, 10,
                       9, 8, 14, 13, 12, -1, -1, -1, -1);
  const __m256i join_lanes = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);
  std::size_t done = 0;
  for (; done < blocks; ++done, in += 32, out += 24) {
    const __m256i text = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in));
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi32(text, 4), nibble);
    const __m256i lo = _mm256_and_si256(text, nibble);
    const __m256i classes =
        _mm256_and_si256(_mm256_shuffle_epi8(lo_classes, lo), _mm256_shuffle_epi8(hi_classes, hi));
    // Bytes >= 0x80 have high nibble 8-15, whose class bit 0x10 every low entry shares.
    if (!_mm256_testz_si256(classes, classes)) break;
    const __m256i shift = _mm256_add_epi8(_mm256_cmpeq_epi8(text, slash), hi);
    const __m256i sextets = _mm256_add_epi8(text, _mm256_shuffle_epi8(offsets, shift));
    const __m256i pairs = _mm256_maddubs_epi16(sextets, merge_pairs);
    const __m256i words = _mm256_madd_epi16(pairs, merge_halves);
    const __m256i packed =
        _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(words, pick_bytes), join_lanes);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), packed);
  }
  return done;
}

bool have_avx2() {
  static const bool supported = __builtin_cpu_supports("avx2");
  return supported;
}
#endif

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

namespace {

Result<std::string> decode(std::string_view text, std::size_t max_bytes, bool allow_simd) {
#ifdef IG_BASE64_AVX2
  const bool simd = allow_simd && have_avx2();
#else
  (void)allow_simd;
#endif
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
#ifdef IG_BASE64_AVX2
        // 32 characters make 24 bytes, stored as 32: 8 to spare within the buffer.
        if (simd && n - i >= 32 && capacity - len >= 32) {
          const std::size_t blocks =
              std::min({(n - i) / 32, (max_bytes - len) / 24, (capacity - len - 8) / 24});
          const std::size_t decoded = decode_blocks_avx2(in + i, blocks, buf + len);
          if (decoded > 0) {
            i += 32 * decoded;
            len += 24 * decoded;
            last = i - 1;
            continue;
          }
        }
#endif
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

}  // namespace

Result<std::string> base64_decode(std::string_view text, std::size_t max_bytes) {
  return decode(text, max_bytes, /*allow_simd=*/true);
}

namespace detail {
Result<std::string> base64_decode_scalar(std::string_view text, std::size_t max_bytes) {
  return decode(text, max_bytes, /*allow_simd=*/false);
}
}  // namespace detail

}  // namespace ig
