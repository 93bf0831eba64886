#include "media/image_probe.h"

#include <fmt/format.h>

#include <cstddef>
#include <string>

namespace ig::media {
namespace {

constexpr std::string_view kPngSignature("\x89PNG\r\n\x1a\n", 8);

std::uint32_t u8(std::string_view b, std::size_t i) { return static_cast<unsigned char>(b[i]); }
std::uint32_t be16(std::string_view b, std::size_t i) { return u8(b, i) << 8 | u8(b, i + 1); }
std::uint32_t be32(std::string_view b, std::size_t i) { return be16(b, i) << 16 | be16(b, i + 2); }
std::uint32_t le16(std::string_view b, std::size_t i) { return u8(b, i) | u8(b, i + 1) << 8; }
std::uint32_t le24(std::string_view b, std::size_t i) { return le16(b, i) | u8(b, i + 2) << 16; }
std::uint32_t le32(std::string_view b, std::size_t i) { return le24(b, i) | u8(b, i + 3) << 24; }

std::unexpected<Error> invalid(std::string message) {
  return std::unexpected(Error::invalid(std::move(message)));
}

Result<ImageInfo> probe_png(std::string_view b) {
  // Signature, then the first chunk must be IHDR: length 13, "IHDR", width, height (big endian).
  if (b.size() < 24) return invalid("truncated PNG header");
  if (be32(b, 8) != 13 || b.substr(12, 4) != "IHDR") return invalid("malformed PNG header");
  const std::uint32_t width = be32(b, 16);
  const std::uint32_t height = be32(b, 20);
  // The PNG spec caps both at 2^31 - 1.
  if (width == 0 || height == 0 || width > 0x7fffffffu || height > 0x7fffffffu) {
    return invalid("PNG header has an invalid size");
  }
  return ImageInfo{ImageType::kPng, static_cast<int>(width), static_cast<int>(height)};
}

bool is_sof(std::uint32_t marker) {
  // SOF0..SOF15 are C0..CF, except DHT (C4), JPG (C8) and DAC (CC).
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

Result<ImageInfo> probe_jpeg(std::string_view b) {
  std::size_t pos = 2;  // after SOI
  const std::size_t n = b.size();
  // Each iteration consumes at least one byte, so the loop ends within n iterations.
  while (true) {
    if (pos >= n) return invalid("truncated JPEG header");
    if (u8(b, pos) != 0xFF) return invalid("malformed JPEG marker");
    while (pos < n && u8(b, pos) == 0xFF) ++pos;  // fill bytes
    if (pos >= n) return invalid("truncated JPEG header");
    const std::uint32_t marker = u8(b, pos++);
    if (marker == 0x00) return invalid("malformed JPEG marker");
    // Standalone markers carry no length: TEM, RST0..7, SOI.
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;
    if (marker == 0xD9 || marker == 0xDA) return invalid("JPEG has no frame header");
    if (pos + 2 > n) return invalid("truncated JPEG header");
    const std::uint32_t length = be16(b, pos);
    if (length < 2) return invalid("malformed JPEG segment length");
    if (is_sof(marker)) {
      // Length, precision (1), height (2), width (2), components (1).
      if (length < 8) return invalid("malformed JPEG frame header");
      if (pos + 7 > n) return invalid("truncated JPEG header");
      const std::uint32_t height = be16(b, pos + 3);
      const std::uint32_t width = be16(b, pos + 5);
      if (height == 0) return invalid("JPEG height defined by DNL is not supported");
      if (width == 0) return invalid("JPEG frame header has an invalid size");
      return ImageInfo{ImageType::kJpeg, static_cast<int>(width), static_cast<int>(height)};
    }
    pos += length;
  }
}

Result<ImageInfo> probe_webp(std::string_view b) {
  // RIFF <size> WEBP, then the first chunk: fourcc at 12, size at 16, payload at 20.
  if (b.size() < 20) return invalid("truncated WebP header");
  const std::string_view chunk = b.substr(12, 4);
  std::uint32_t width = 0;
  std::uint32_t height = 0;
  if (chunk == "VP8 ") {
    // Frame tag (3 bytes, bit 0 = 0 for a key frame), start code 9D 01 2A, 14-bit sizes.
    if (b.size() < 30) return invalid("truncated WebP header");
    if ((u8(b, 20) & 1) != 0) return invalid("WebP VP8 data does not start with a key frame");
    if (u8(b, 23) != 0x9D || u8(b, 24) != 0x01 || u8(b, 25) != 0x2A) {
      return invalid("malformed WebP VP8 header");
    }
    width = le16(b, 26) & 0x3FFF;
    height = le16(b, 28) & 0x3FFF;
  } else if (chunk == "VP8L") {
    // Signature 0x2F, then 14 bits width-1 and 14 bits height-1 (little endian bit order).
    if (b.size() < 25) return invalid("truncated WebP header");
    if (u8(b, 20) != 0x2F) return invalid("malformed WebP VP8L header");
    const std::uint32_t bits = le32(b, 21);
    width = (bits & 0x3FFF) + 1;
    height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (chunk == "VP8X") {
    // Flags (4 bytes), canvas width-1 (24 bits), canvas height-1 (24 bits).
    if (b.size() < 30) return invalid("truncated WebP header");
    width = le24(b, 24) + 1;
    height = le24(b, 27) + 1;
  } else {
    return invalid("unsupported WebP chunk");
  }
  if (width == 0 || height == 0) return invalid("WebP header has an invalid size");
  return ImageInfo{ImageType::kWebp, static_cast<int>(width), static_cast<int>(height)};
}

}  // namespace

ImageType sniff_image_type(std::string_view bytes) {
  if (bytes.starts_with(kPngSignature)) return ImageType::kPng;
  if (bytes.size() >= 3 && u8(bytes, 0) == 0xFF && u8(bytes, 1) == 0xD8 && u8(bytes, 2) == 0xFF) {
    return ImageType::kJpeg;
  }
  if (bytes.size() >= 12 && bytes.starts_with("RIFF") && bytes.substr(8, 4) == "WEBP") {
    return ImageType::kWebp;
  }
  return ImageType::kUnsupported;
}

Result<ImageInfo> probe_image(std::string_view bytes) {
  switch (sniff_image_type(bytes)) {
    case ImageType::kPng:
      return probe_png(bytes);
    case ImageType::kJpeg:
      return probe_jpeg(bytes);
    case ImageType::kWebp:
      return probe_webp(bytes);
    case ImageType::kUnsupported:
      break;
  }
  return invalid("not a PNG, JPEG or WebP image");
}

Result<void> check_dimensions(const ImageInfo& info, const ProbeLimits& limits) {
  if (info.width < 1 || info.height < 1) {
    return invalid(fmt::format("image size {}x{} is invalid", info.width, info.height));
  }
  const std::int64_t pixels = std::int64_t{info.width} * info.height;
  if (info.width > limits.max_width || info.height > limits.max_height ||
      pixels > limits.max_pixels) {
    return invalid(fmt::format("image is {}x{} pixels; at most {}x{} and {} pixels are allowed",
                               info.width, info.height, limits.max_width, limits.max_height,
                               limits.max_pixels));
  }
  return {};
}

std::string_view mime_type(ImageType type) {
  switch (type) {
    case ImageType::kPng:
      return "image/png";
    case ImageType::kJpeg:
      return "image/jpeg";
    case ImageType::kWebp:
      return "image/webp";
    case ImageType::kUnsupported:
      break;
  }
  return "application/octet-stream";
}

std::string_view file_extension(ImageType type) {
  switch (type) {
    case ImageType::kPng:
      return "png";
    case ImageType::kJpeg:
      return "jpeg";
    case ImageType::kWebp:
      return "webp";
    case ImageType::kUnsupported:
      break;
  }
  return "bin";
}

bool png_has_alpha(std::string_view b) {
  if (!b.starts_with(kPngSignature) || b.size() < 33) return false;
  const std::uint32_t colour_type = u8(b, 25);
  if (colour_type == 4 || colour_type == 6) return true;  // grey + alpha, RGBA
  // Otherwise only a tRNS chunk, which must come before the first IDAT, adds transparency.
  std::size_t at = 8;
  while (b.size() - at >= 12) {
    const std::uint32_t length = be32(b, at);
    const std::string_view type = b.substr(at + 4, 4);
    if (type == "tRNS") return true;
    if (type == "IDAT" || type == "IEND") return false;
    if (length > b.size() - at - 12) return false;
    at += 12 + length;
  }
  return false;
}

}  // namespace ig::media
