#include "media/image_probe.h"

#include <gtest/gtest.h>

#include <string>
#include <vips/vips8>

#include "media/local_renderer.h"

namespace ig::media {
namespace {

using vips::VImage;

// Encodes a small synthetic image with libvips; `suffix` picks the saver (".png[...]" etc.).
std::string encode(int w, int h, int bands, const char* suffix) {
  EXPECT_TRUE(init_media());
  VImage img = VImage::black(w, h, VImage::option()->set("bands", bands)) + 90;
  img = img.cast(VIPS_FORMAT_UCHAR)
            .copy(VImage::option()->set(
                "interpretation", bands >= 3 ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_B_W));
  void* buf = nullptr;
  std::size_t size = 0;
  img.write_to_buffer(suffix, &buf, &size, VImage::option()->set("strip", true));
  std::string out(static_cast<const char*>(buf), size);
  g_free(buf);
  return out;
}

std::string png_header(std::uint32_t w, std::uint32_t h) {
  std::string b("\x89PNG\r\n\x1a\n", 8);
  b += std::string("\0\0\0\x0d", 4) + "IHDR";
  for (std::uint32_t v : {w, h}) {
    for (int shift = 24; shift >= 0; shift -= 8) b += static_cast<char>((v >> shift) & 0xff);
  }
  b += std::string("\x08\x02\x00\x00\x00", 5) + std::string(4, '\0');  // depth, type, ..., CRC
  return b;
}

void expect_invalid(const Result<ImageInfo>& r, std::string_view fragment) {
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest);
  EXPECT_FALSE(r.error().param.has_value());
  EXPECT_NE(r.error().message.find(fragment), std::string::npos) << r.error().message;
}

TEST(ImageProbeTest, RealPng) {
  for (int bands : {1, 2, 3, 4}) {
    auto info = probe_image(encode(37, 21, bands, ".png"));
    ASSERT_TRUE(info) << info.error().message;
    EXPECT_EQ(info->type, ImageType::kPng);
    EXPECT_EQ(info->width, 37);
    EXPECT_EQ(info->height, 21);
  }
}

TEST(ImageProbeTest, RealJpegBaselineAndProgressive) {
  for (const char* suffix : {".jpg", ".jpg[interlace]", ".jpg[Q=20,optimize_coding]"}) {
    auto info = probe_image(encode(301, 77, 3, suffix));
    ASSERT_TRUE(info) << suffix << ": " << info.error().message;
    EXPECT_EQ(info->type, ImageType::kJpeg);
    EXPECT_EQ(info->width, 301);
    EXPECT_EQ(info->height, 77);
  }
  auto grey = probe_image(encode(5, 9, 1, ".jpg"));
  ASSERT_TRUE(grey);
  EXPECT_EQ(grey->width, 5);
  EXPECT_EQ(grey->height, 9);
}

// libvips wraps every WebP in a VP8X container; this rebuilds the simple-format file that
// holds only the VP8 / VP8L bitstream chunk (what most other encoders write).
std::string simple_webp(const std::string& extended) {
  std::size_t pos = 12;
  while (pos + 8 <= extended.size()) {
    const std::string_view fourcc = std::string_view(extended).substr(pos, 4);
    std::uint32_t n = 0;
    for (int i = 3; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(extended[pos + 4 + i]);
    const std::size_t chunk = 8 + n + (n & 1);
    if (fourcc == "VP8 " || fourcc == "VP8L") {
      std::string out = "RIFF";
      const std::uint32_t riff = static_cast<std::uint32_t>(4 + chunk);
      for (int i = 0; i < 4; ++i) out += static_cast<char>((riff >> (8 * i)) & 0xff);
      return out + "WEBP" + extended.substr(pos, chunk);
    }
    pos += chunk;
  }
  ADD_FAILURE() << "no VP8/VP8L chunk";
  return {};
}

TEST(ImageProbeTest, RealWebpLossyLosslessAndExtended) {
  struct Case {
    const char* suffix;
    std::string_view chunk;
  };
  for (const Case& c : {Case{".webp", "VP8 "}, Case{".webp[lossless]", "VP8L"}}) {
    for (int bands : {3, 4}) {
      const std::string extended = encode(123, 45, bands, c.suffix);
      ASSERT_GE(extended.size(), 16u);
      EXPECT_EQ(extended.substr(12, 4), "VP8X");
      for (const std::string& bytes : {extended, simple_webp(extended)}) {
        auto info = probe_image(bytes);
        ASSERT_TRUE(info) << c.suffix << ": " << info.error().message;
        EXPECT_EQ(info->type, ImageType::kWebp);
        EXPECT_EQ(info->width, 123);
        EXPECT_EQ(info->height, 45);
      }
      EXPECT_EQ(simple_webp(extended).substr(12, 4), c.chunk);
    }
  }
}

TEST(ImageProbeTest, HandMadeVp8xHeader) {
  std::string b = "RIFF" + std::string(4, '\0') + "WEBPVP8X" + std::string("\x0a\0\0\0", 4);
  b += std::string("\x10\0\0\0", 4);    // flags: alpha
  b += std::string("\xff\x0f\x00", 3);  // width - 1 = 4095
  b += std::string("\x00\x10\x00", 3);  // height - 1 = 4096
  auto info = probe_image(b);
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->width, 4096);
  EXPECT_EQ(info->height, 4097);
}

TEST(ImageProbeTest, JpegMarkerWalkSkipsSegmentsFillBytesAndDht) {
  std::string b("\xff\xd8", 2);
  b += std::string("\xff\xe0\x00\x06JFIF", 8);              // APP0 with a short payload
  b += std::string("\xff\xff\xff\xc4\x00\x04\xc0\x00", 8);  // fill bytes, DHT with C0 inside
  b += std::string("\xff\xcc\x00\x04\x00\x00", 6);          // DAC is not a frame header
  b += std::string("\xff\xc2\x00\x11\x08\x01\x02\x03\x04\x03", 10);  // SOF2: 258 x 772
  auto info = probe_image(b);
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->type, ImageType::kJpeg);
  EXPECT_EQ(info->width, 772);
  EXPECT_EQ(info->height, 258);
}

TEST(ImageProbeTest, JpegWithoutFrameOrWithDnlHeightIsRejected) {
  expect_invalid(probe_image(std::string("\xff\xd8\xff\xda\x00\x02", 6)), "no frame header");
  expect_invalid(probe_image(std::string("\xff\xd8\xff\xd9", 4)), "no frame header");
  expect_invalid(probe_image(std::string("\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10", 11)),
                 "DNL");
  expect_invalid(probe_image(std::string("\xff\xd8\xff\xe0\x00\x01", 6)), "segment length");
  expect_invalid(probe_image(std::string("\xff\xd8\xff\xe0\x00\x04\x00\x00\x12", 9)),
                 "malformed JPEG marker");
}

TEST(ImageProbeTest, EveryTruncationOfRealHeadersIsRejected) {
  for (const std::string& full :
       {encode(40, 30, 3, ".png"), encode(40, 30, 3, ".jpg"), encode(40, 30, 3, ".webp"),
        simple_webp(encode(40, 30, 3, ".webp")),
        simple_webp(encode(40, 30, 3, ".webp[lossless]"))}) {
    ASSERT_TRUE(probe_image(full));
    // Header ends within the first 30 bytes for PNG/WebP; JPEG's SOF follows the tables.
    std::size_t needed = 0;
    while (!probe_image(std::string_view(full).substr(0, needed))) ++needed;
    EXPECT_GT(needed, 20u);
    for (std::size_t n = 0; n < needed; ++n) {
      auto r = probe_image(std::string_view(full).substr(0, n));
      ASSERT_FALSE(r) << n;
      EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest);
      if (n >= 12) {
        EXPECT_NE(r.error().message.find("truncated"), std::string::npos) << r.error().message;
      }
    }
  }
}

TEST(ImageProbeTest, GarbageAndOtherFormatsAreUnsupported) {
  for (std::string_view bytes :
       {std::string_view(""), std::string_view("hello, this is a text file named x.png\n"),
        std::string_view("GIF89a\x01\x00\x01\x00", 10), std::string_view("BM\x3e\x00\x00\x00"),
        std::string_view("RIFF\0\0\0\0WAVEfmt ", 16), std::string_view("\x89PNX\r\n\x1a\n", 8),
        std::string_view("\xff\xd8", 2), std::string_view("<svg xmlns='x'/>")}) {
    EXPECT_EQ(sniff_image_type(bytes), ImageType::kUnsupported);
    expect_invalid(probe_image(bytes), "not a PNG, JPEG or WebP image");
  }
}

TEST(ImageProbeTest, MalformedPngAndWebpHeaders) {
  std::string bad_chunk = png_header(10, 10);
  bad_chunk[12] = 'X';
  expect_invalid(probe_image(bad_chunk), "malformed PNG header");
  expect_invalid(probe_image(png_header(0, 10)), "invalid size");
  expect_invalid(probe_image(png_header(0x80000000u, 10)), "invalid size");
  std::string other = "RIFF" + std::string(4, '\0') + "WEBPALPH" + std::string(16, '\0');
  expect_invalid(probe_image(other), "unsupported WebP chunk");
  std::string vp8 = simple_webp(encode(20, 20, 3, ".webp"));
  ASSERT_EQ(vp8.substr(12, 4), "VP8 ");
  vp8[23] = 0;
  expect_invalid(probe_image(vp8), "malformed WebP VP8 header");
}

TEST(ImageProbeTest, CheckDimensionsRejectsHugeHeaderClaims) {
  auto info = probe_image(png_header(100000, 100000));
  ASSERT_TRUE(info);
  EXPECT_EQ(info->width, 100000);
  auto checked = check_dimensions(*info);
  ASSERT_FALSE(checked);
  EXPECT_EQ(checked.error().code, ErrorCode::kInvalidRequest);
  EXPECT_FALSE(checked.error().param.has_value());
  EXPECT_NE(checked.error().message.find("100000x100000"), std::string::npos);

  EXPECT_TRUE(check_dimensions({ImageType::kPng, 16384, 3000}));
  EXPECT_FALSE(check_dimensions({ImageType::kPng, 16385, 10}));
  EXPECT_FALSE(check_dimensions({ImageType::kPng, 10000, 10000}));  // 100 MP
  EXPECT_FALSE(check_dimensions({ImageType::kPng, 0, 10}));
  EXPECT_FALSE(check_dimensions({ImageType::kPng, 100, 100}, {64, 64, 1000}));
}

TEST(ImageProbeTest, MimeTypesAndExtensions) {
  EXPECT_EQ(mime_type(ImageType::kPng), "image/png");
  EXPECT_EQ(mime_type(ImageType::kJpeg), "image/jpeg");
  EXPECT_EQ(mime_type(ImageType::kWebp), "image/webp");
  EXPECT_EQ(mime_type(ImageType::kUnsupported), "application/octet-stream");
  EXPECT_EQ(file_extension(ImageType::kJpeg), "jpeg");
}

}  // namespace
}  // namespace ig::media
