#pragma once
// The built-in `local` image renderer (REQUIREMENTS §6): draws the prompt and the request
// parameters into a real PNG / JPEG / WebP of exactly the requested size with libvips. It needs
// no network and no model, so the whole gateway runs end to end on a fresh machine and in tests.
// Output is deterministic: the same RenderSpec always yields the same pixels.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace ig::media {

// Starts libvips once per process (idempotent, thread-safe) with settings for a server that
// renders on its own bounded pool: one vips worker per call, no operation cache, untrusted
// loaders blocked. render_image calls it too, so forgetting it is not fatal.
Result<void> init_media();
// Shuts libvips down; call once at process exit after the last render. No render may follow.
void shutdown_media();

// Output encodings the renderer produces.
enum class OutputFormat { kPng, kJpeg, kWebp };

// "png" / "jpeg" (also "jpg") / "webp", case-sensitive as in the OpenAI API.
std::optional<OutputFormat> parse_output_format(std::string_view name);
std::string_view mime_type(OutputFormat format);
std::string_view format_name(OutputFormat format);  // "png", "jpeg", "webp"

// Everything one rendered image depends on. Sizes are validated by render_image (16..3840 on
// each side); reference images and the mask are untrusted encoded bytes.
struct RenderSpec {
  int width = 1024;  // exact output size
  int height = 1024;
  std::string prompt;
  std::string model;
  std::string quality;
  std::string job_id;
  OutputFormat format = OutputFormat::kPng;
  // OpenAI `output_compression` (0-100, documented default 100). OpenAI's default of 100 gives the
  // highest fidelity, so the value is the encoder quality: JPEG/WebP Q = max(1, compression);
  // absent means 100. PNG is lossless and ignores it (fixed zlib level).
  std::optional<int> compression;
  // Transparent background: PNG/WebP only; with JPEG render_image fails (param "background").
  bool transparent = false;
  // Encoded PNG/JPEG/WebP bytes. Tiled under the generated content (each cropped to cover its
  // tile); the output depends on them.
  std::vector<std::string> reference_images;
  // Encoded PNG with an alpha channel, same size as reference_images[0]. Fully transparent areas
  // mark where to edit: only there is new content drawn, elsewhere the first reference image
  // (resized to cover the output) shows through unchanged.
  std::optional<std::string> mask;
};

// One encoded image. Promise: bytes decode to exactly width x height in the format of `mime`.
struct EncodedImage {
  std::string bytes;
  std::string mime;
  int width = 0;
  int height = 0;
};

inline constexpr int kMinRenderSide = 16;
inline constexpr int kMaxRenderSide = 3840;
inline constexpr int kMaxPartialImages = 3;

// Renders the final image. Errors: Error::invalid with param "size" (bad dimensions),
// "background" (transparent JPEG), "image" (unreadable / oversized reference image), "mask"
// (not a PNG, no alpha, size differs from the first image, or no image to edit); kInternal when
// libvips fails on valid input. Never throws.
Result<EncodedImage> render_image(const RenderSpec& spec);

// `count` (0..3) progressively sharper previews of final_image for streaming: same size and
// format as the final image, pixelated with shrinking block sizes (coarsest first).
// count outside 0..3 is Error::invalid with param "partial_images". Never throws.
Result<std::vector<EncodedImage>> render_partials(const RenderSpec& spec,
                                                  const EncodedImage& final_image, int count);

// Token usage the local provider reports. Deterministic: a pure function of the spec.
struct TokenUsage {
  std::int64_t input_text_tokens = 0;
  std::int64_t input_image_tokens = 0;
  std::int64_t output_image_tokens = 0;
};

// input_text_tokens = ceil(prompt bytes / 4) (at least 1); input_image_tokens = 256 per reference
// image plus 256 for a mask; output_image_tokens scales gpt-image-1's 1024x1024 figures (low 272,
// medium 1056, high 4160; "hd"/"uhd" count as high, anything else as medium) by pixel count.
TokenUsage local_usage(const RenderSpec& spec);

}  // namespace ig::media
