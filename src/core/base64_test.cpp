#include "core/base64.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

namespace ig {
namespace {

std::string random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

std::string sodium_encode(std::string_view bytes) {
  constexpr int kVariant = sodium_base64_VARIANT_ORIGINAL;
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), kVariant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), kVariant);
  out.pop_back();  // the terminating NUL
  return out;
}

void expect_invalid(std::string_view text, std::string_view fragment) {
  auto r = base64_decode(text);
  ASSERT_FALSE(r.has_value()) << "accepted '" << text << "'";
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest);
  EXPECT_FALSE(r.error().param.has_value());
  EXPECT_NE(r.error().message.find("invalid base64"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(fragment), std::string::npos)
      << "'" << text << "': " << r.error().message;
}

TEST(Base64Test, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded);
    auto decoded = base64_decode(encoded);
    ASSERT_TRUE(decoded) << encoded << ": " << decoded.error().message;
    EXPECT_EQ(*decoded, plain);
    EXPECT_EQ(base64_encoded_size(std::string_view(plain).size()),
              std::string_view(encoded).size());
  }
}

TEST(Base64Test, PaddingIsOptional) {
  for (const auto& [text, plain] : {std::pair{"Zg", "f"}, std::pair{"Zm8", "fo"},
                                    std::pair{"Zm9vYg", "foob"}, std::pair{"Zm9vYmE", "fooba"}}) {
    auto decoded = base64_decode(text);
    ASSERT_TRUE(decoded) << text << ": " << decoded.error().message;
    EXPECT_EQ(*decoded, plain);
  }
}

TEST(Base64Test, WhitespaceIsSkippedAnywhere) {
  for (const char* text :
       {"Zm9v\r\nYmFy", " Zm9vYmFy ", "Zm9v\nYmFy\n", "Z m 9 v\tY m F y", "\r\n\r\nZm9vYmFy\r\n"}) {
    auto decoded = base64_decode(text);
    ASSERT_TRUE(decoded) << text << ": " << decoded.error().message;
    EXPECT_EQ(*decoded, "foobar");
  }
  for (const char* text : {"Zm9vYg==\r\n", "Zm9vYg= =", "Zm9v Yg\n==\n"}) {
    auto decoded = base64_decode(text);
    ASSERT_TRUE(decoded) << text << ": " << decoded.error().message;
    EXPECT_EQ(*decoded, "foob");
  }
  auto blank = base64_decode(" \r\n\t");
  ASSERT_TRUE(blank);
  EXPECT_EQ(*blank, "");
}

TEST(Base64Test, MimeWrappedLargeTextDecodes) {
  const std::string bytes = random_bytes(10'000, 7);
  const std::string flat = base64_encode(bytes);
  std::string wrapped;
  for (std::size_t i = 0; i < flat.size(); i += 76) wrapped += flat.substr(i, 76) + "\r\n";
  auto decoded = base64_decode(wrapped);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(*decoded, bytes);
}

TEST(Base64Test, RejectsCharactersOutsideTheStandardAlphabet) {
  expect_invalid("Zm9v!mFy", "'!' at offset 4");
  expect_invalid("Zm-_", "'-' at offset 2");  // base64url is not accepted
  expect_invalid(std::string_view("Zm9v\0YmFy", 9), "byte 0x00 at offset 4");
  expect_invalid("Zm9v\xc3\xa9", "byte 0xC3 at offset 4");
  expect_invalid("Zm9v.", "'.'");
  expect_invalid("Zm9v\vYmFy", "byte 0x0B");  // only space, tab, CR and LF are whitespace
}

TEST(Base64Test, RejectsBadPadding) {
  expect_invalid("Zg=", "wrong amount of padding");
  expect_invalid("Zm8==", "wrong amount of padding");
  expect_invalid("Zm9v=", "unexpected padding");
  expect_invalid("=", "unexpected padding");
  expect_invalid("Zg===", "too much padding");
  expect_invalid("Zg==Zg==", "after padding");
  expect_invalid("Zm=9v", "after padding");
  expect_invalid("Zm9vY", "truncated");
  expect_invalid("Z===", "too much padding");
  expect_invalid("Z", "truncated");
}

TEST(Base64Test, RejectsNonCanonicalTrailingBits) {
  expect_invalid("Zh==", "non-zero unused bits");
  expect_invalid("Zh", "non-zero unused bits");
  expect_invalid("Zm9=", "non-zero unused bits");
}

TEST(Base64Test, EveryByteValueAndLengthRoundTrips) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (std::size_t len = 0; len <= all.size(); ++len) {
    const std::string bytes = all.substr(all.size() - len);
    const std::string encoded = base64_encode(bytes);
    ASSERT_EQ(encoded, sodium_encode(bytes)) << "length " << len;
    auto decoded = base64_decode(encoded);
    ASSERT_TRUE(decoded) << decoded.error().message;
    ASSERT_EQ(*decoded, bytes);
    std::string unpadded = encoded;
    while (!unpadded.empty() && unpadded.back() == '=') unpadded.pop_back();
    auto decoded_unpadded = base64_decode(unpadded);
    ASSERT_TRUE(decoded_unpadded) << decoded_unpadded.error().message;
    ASSERT_EQ(*decoded_unpadded, bytes);
  }
}

TEST(Base64Test, BulkAndPerCharacterPathsAgreeWithWhitespaceGarbageAndCaps) {
  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    const std::string bytes = random_bytes(rng() % 200, static_cast<std::uint32_t>(round));
    const std::string clean = base64_encode(bytes);
    std::string text;
    for (char c : clean) {  // whitespace sprinkled at random, sometimes mid-quantum
      if (rng() % 7 == 0) text += " \t\r\n"[rng() % 4];
      text += c;
    }
    auto decoded = base64_decode(text);
    ASSERT_TRUE(decoded) << text;
    EXPECT_EQ(*decoded, bytes);
    // A cap below the size fails as too large; at the size it decodes.
    if (!bytes.empty()) {
      auto capped = base64_decode(text, bytes.size() - 1);
      ASSERT_FALSE(capped);
      EXPECT_EQ(capped.error().code, ErrorCode::kPayloadTooLarge);
      EXPECT_TRUE(base64_decode(text, bytes.size()));
    }
    // One bad character anywhere before the padding is reported at its offset.
    std::size_t data_end = text.find('=');
    if (data_end == std::string::npos) data_end = text.size();
    if (data_end > 0) {
      std::string broken = text;
      const std::size_t at = rng() % data_end;
      broken[at] = '*';
      auto r = base64_decode(broken);
      ASSERT_FALSE(r) << broken;
      EXPECT_NE(r.error().message.find("at offset " + std::to_string(at)), std::string::npos)
          << r.error().message;
    }
  }
}

TEST(Base64Test, MaxBytesStopsDecoding) {
  auto exact = base64_decode("Zm9vYmFy", 6);
  ASSERT_TRUE(exact);
  EXPECT_EQ(*exact, "foobar");
  for (auto [text, max] : {std::pair{"Zm9vYmFy", 5}, std::pair{"Zm9vYg==", 3},
                           std::pair{"Zm9vYmE", 4}, std::pair{"Zg", 0}}) {
    auto r = base64_decode(text, max);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().code, ErrorCode::kPayloadTooLarge) << text;
    EXPECT_NE(r.error().message.find(std::to_string(max) + " bytes"), std::string::npos);
  }
  auto fits = base64_decode("Zm9vYg", 4);
  ASSERT_TRUE(fits);
  EXPECT_EQ(*fits, "foob");
  // An oversized text with garbage far past the cap fails as too large, without reading that far.
  std::string huge(1'000'000, 'A');
  huge += '!';
  auto r = base64_decode(huge, 1000);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kPayloadTooLarge);
}

TEST(Base64Test, ThirtyMegabytesRoundTripQuickly) {
  const std::string bytes = random_bytes(30u << 20, 42);
  auto start = std::chrono::steady_clock::now();
  const std::string encoded = base64_encode(bytes);
  auto decoded = base64_decode(encoded);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_TRUE(*decoded == bytes);
  EXPECT_EQ(encoded.size(), base64_encoded_size(bytes.size()));
  EXPECT_TRUE(encoded == sodium_encode(bytes));
  // Generous for a sanitized debug build; an optimized build does both in well under 0.2 s.
  EXPECT_LT(elapsed, std::chrono::seconds(10));
}

// The fast path (32 characters at a time on AVX2 CPUs) must answer exactly as the scalar one:
// the same bytes, or the same error with the same offset.
void expect_same_as_scalar(std::string_view text, std::size_t max_bytes) {
  auto fast = base64_decode(text, max_bytes);
  auto scalar = detail::base64_decode_scalar(text, max_bytes);
  ASSERT_EQ(fast.has_value(), scalar.has_value())
      << "max " << max_bytes << ": " << (fast ? scalar.error().message : fast.error().message);
  if (fast) {
    EXPECT_EQ(*fast, *scalar);
  } else {
    EXPECT_EQ(fast.error().code, scalar.error().code);
    EXPECT_EQ(fast.error().message, scalar.error().message);
  }
}

TEST(Base64Test, FastPathMatchesScalarForEveryByteAtEveryOffset) {
  const std::string valid = base64_encode(random_bytes(150, 7));  // 200 characters
  for (std::size_t at = 0; at < valid.size(); ++at) {
    for (int b = 0; b < 256; ++b) {
      std::string text = valid;
      text[at] = static_cast<char>(b);
      expect_same_as_scalar(text, std::numeric_limits<std::size_t>::max());
      if (HasFailure()) {
        ADD_FAILURE() << "byte " << b << " at offset " << at;
        return;
      }
    }
  }
}

TEST(Base64Test, FastPathDecodesLongTextOfEveryLength) {
  for (std::size_t n = 0; n < 400; ++n) {
    const std::string bytes = random_bytes(n, static_cast<std::uint32_t>(n));
    auto decoded = base64_decode(base64_encode(bytes));
    ASSERT_TRUE(decoded) << n;
    EXPECT_EQ(*decoded, bytes) << n;
  }
}

TEST(Base64Test, FastPathMatchesScalarOnMixedInputAndCaps) {
  std::mt19937 rng(11);
  const std::string noise = " \t\r\n=-_.!\x80\xff";
  for (int round = 0; round < 3000; ++round) {
    std::string text = base64_encode(random_bytes(rng() % 700, rng()));
    // A few whitespace, padding or foreign bytes at random places, or none.
    const int edits = static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      text[rng() % text.size()] = noise[rng() % noise.size()];
    }
    const std::size_t caps[] = {std::numeric_limits<std::size_t>::max(), text.size() / 2,
                                text.size() * 3 / 4, rng() % (text.size() + 1)};
    for (std::size_t cap : caps) {
      expect_same_as_scalar(text, cap);
      if (HasFailure()) {
        ADD_FAILURE() << "round " << round << " cap " << cap << ": " << text;
        return;
      }
    }
  }
}

}  // namespace
}  // namespace ig
