#pragma once
// Header-only inspection of untrusted image bytes: which format they claim to be (PNG, JPEG or
// WebP, from magic bytes) and the pixel size the header declares, without decoding any pixels.
// Used to reject unsupported files and decompression bombs before libvips sees the bytes.

#include <cstdint>
#include <string_view>

#include "core/error.h"

namespace ig::media {

// The only image formats imagegate accepts; everything else is kUnsupported.
enum class ImageType { kUnsupported, kPng, kJpeg, kWebp };

// What a header declares. Promise: type is never kUnsupported and width/height are >= 1 when
// returned by probe_image (they are header claims, not proof that the pixels decode).
struct ImageInfo {
  ImageType type = ImageType::kUnsupported;
  int width = 0;
  int height = 0;
};

// Size limits applied to header claims before any decoding.
struct ProbeLimits {
  int max_width = 16384;
  int max_height = 16384;
  std::int64_t max_pixels = 50'000'000;
};

// Magic-byte sniffing only: PNG signature, JPEG SOI + marker, RIFF....WEBP.
ImageType sniff_image_type(std::string_view bytes);

// Sniffs the type and reads the declared size: PNG IHDR, the first JPEG SOFn frame header,
// WebP VP8 / VP8L / VP8X. Every read is bounds-checked. Errors are Error::invalid with no
// param (the caller knows which field the bytes came from), e.g. "not a PNG, JPEG or WebP
// image" or "truncated PNG header".
Result<ImageInfo> probe_image(std::string_view bytes);

// Rejects header sizes over the limits (Error::invalid, no param).
Result<void> check_dimensions(const ImageInfo& info, const ProbeLimits& limits = {});

// True for a PNG whose header declares transparency: an alpha colour type (grey + alpha, RGBA)
// or a tRNS chunk before the image data. False for anything else, malformed PNGs included.
bool png_has_alpha(std::string_view bytes);

// "image/png", "image/jpeg", "image/webp"; "application/octet-stream" for kUnsupported.
std::string_view mime_type(ImageType type);

// "png", "jpeg", "webp"; "bin" for kUnsupported.
std::string_view file_extension(ImageType type);

}  // namespace ig::media
