#pragma once
// Image sizes: the 13 aspect ratios, the ratio x tier size table (seed 004), strict `WxH`
// parsing and validation, and the one entry point that turns a request's size / quality /
// resolution / aspect_ratio (plus the first reference image) into a concrete size and billing
// tier for one model. Pure: no I/O, no clock, no floating point.
//
// Rules decided here (REQUIREMENTS §1):
// - `quality` (any case) standard/hd/uhd sets the tier (1K/2K/4K). The OpenAI qualities
//   low/medium/high/auto never set a tier: they are a rendering (and pricing) quality and are
//   passed through, lowercased.
// - `resolution` is 1K/2K/4K in any case ("4k"). If both `quality` and `resolution` imply a
//   tier they must agree (else 400 naming `resolution`). No tier at all: the model's default.
// - `size` is `WxH`, one of the 13 ratios, or `auto` (any case). `WxH` is strict: lowercase
//   `x`, decimal digits, no sign, no leading zero, no spaces ("1024X1024" is rejected, as
//   OpenAI does). `aspect_ratio` carries a ratio or `auto` (= absent); it must agree with a
//   ratio or `WxH` given in `size` (else 400 naming `aspect_ratio`).
// - A `WxH` size is honoured exactly and billed by its long edge. When a tier hint disagrees
//   with that (e.g. "1024x1024" + quality "hd"), seed 000 ("the pixel resolution is set by
//   quality") wins: a `WxH` of one of the 13 ratios is rescaled to that ratio's table size at
//   the hinted tier; any other `WxH` is a 400 naming the hint field.
// - A ratio at a tier is billed at that tier, even where the table size's long edge would
//   classify differently (seed 004 lists 2080x1664 as 5:4 2K; as a bare `WxH` it bills 4K).
// - `auto` with a reference image and no tier hint: the image's own size when it is a valid
//   `WxH` this model accepts (seed 004: auto follows the reference image's size; a 1536x1024
//   edit stays 1536x1024, billed by its long edge). Otherwise, or with a tier hint, the image's
//   aspect is mapped to the nearest ratio the model allows at the tier (nearest = smallest
//   max(r/q, q/r) between ratios; ties go to the earlier ratio in kRatioNames order), at the
//   hinted tier or the model default. `auto` without a reference image: the model's
//   default_size, rescaled to the hinted tier if there is one.
// - 4K ratio limits (ModelCapabilities::ratios_at_4k) apply to ratios and to `WxH` sizes at 4K
//   (a `WxH` must be within 2 % of an allowed ratio); the error names the field that carried
//   the ratio.

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace ig::jobs {

// Output resolution class; also the billing tier of an image.
enum class Tier { k1K = 0, k2K = 1, k4K = 2 };

inline constexpr std::array<Tier, 3> kTiers = {Tier::k1K, Tier::k2K, Tier::k4K};

// "1K", "2K", "4K".
std::string_view to_string(Tier tier);
// "1K"/"2K"/"4K" in any case; nullopt otherwise.
std::optional<Tier> parse_tier(std::string_view text);

// A concrete pixel size. Not validated by itself; see validate_size().
struct ImageSize {
  int width = 0;
  int height = 0;
  friend bool operator==(const ImageSize&, const ImageSize&) = default;
};

// "WxH".
std::string format_size(ImageSize size);

// Limits of a valid `WxH` size (seeds 001 and 004).
inline constexpr int kSizeMultiple = 16;
inline constexpr int kMaxEdge = 3840;
inline constexpr int kMaxAspect = 3;  // long edge <= 3 x short edge
inline constexpr long long kMinPixels = 655'360;
inline constexpr long long kMaxPixels = 8'294'400;
// Billing tier of a `WxH` size by its long edge: <= 1536 is 1K, <= 2048 is 2K, above is 4K.
inline constexpr int kMax1KEdge = 1536;
inline constexpr int kMax2KEdge = 2048;

// The 13 supported ratios, in canonical order (also the tie-break order).
inline constexpr std::array<std::string_view, 13> kRatioNames = {
    "1:1", "5:4", "4:5", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21", "2:1", "1:2"};

// True for exactly one of kRatioNames (no spaces, no "16:10").
bool is_known_ratio(std::string_view text);

// The table size for a known ratio at a tier (seed 004; 9:21, 2:1 and 1:2 derived by the same
// rule, see derive_table_size). nullopt for an unknown ratio.
std::optional<ImageSize> table_size(std::string_view ratio, Tier tier);

// The rule behind seed 004's table, found by fitting all 30 of its entries: among sizes of
// exactly ratio w:h that pass validate_size, the one whose long edge is closest to 1024 (1K),
// 2048 (2K) or 3840 (4K). Reproduces every seed entry; used for the ratios the seed lacks.
// nullopt if no valid size has that ratio. w and h must be positive.
std::optional<ImageSize> derive_table_size(int ratio_w, int ratio_h, Tier tier);

// The known ratio that `size` reduces to exactly (1344x576 -> "21:9"), if any.
std::optional<std::string_view> exact_ratio(ImageSize size);
// The known ratio nearest to size's aspect (among `candidates`, or all 13 when empty). Sides
// must be positive.
std::string_view nearest_ratio(ImageSize size,
                               const std::vector<std::string_view>& candidates = {});

// Billing tier of a `WxH` size from its long edge.
Tier tier_of(ImageSize size);

// Checks the `WxH` rules; the error names `param`.
Result<ImageSize> validate_size(ImageSize size, std::string_view param = "size");
// Strict "WxH" syntax, then validate_size. Never overflows on long digit runs.
Result<ImageSize> parse_size(std::string_view text, std::string_view param = "size");

// What one model accepts. Empty lists mean "no restriction".
struct ModelCapabilities {
  std::vector<std::string> allowed_sizes;  // `WxH` entries; empty = any valid size ("auto" ok)
  std::vector<std::string> ratios_at_4k;   // ratios allowed at 4K; empty = all
  int max_n = 10;
  int max_reference_images = 16;
  std::size_t max_prompt_chars = 32'000;
  std::vector<std::string> qualities;       // accepted `quality` values; empty = all 7 known
  std::vector<std::string> output_formats;  // empty = png, jpeg, webp
  std::string default_size = "1024x1024";   // `auto` without a reference image
  Tier default_tier = Tier::k1K;            // tier when no quality/resolution names one
};

// Config-time check of a capability set: every allowed size and the default parse and are
// valid, ratios are known, qualities are known, limits are positive. The error's param names
// the offending capability key.
Result<void> validate_capabilities(const ModelCapabilities& caps);

// The size-related fields of one request, as received (unset = absent).
struct SizeRequest {
  std::optional<std::string> size;
  std::optional<std::string> quality;
  std::optional<std::string> resolution;
  std::optional<std::string> aspect_ratio;
  std::optional<ImageSize> reference_image;  // dimensions of the first reference image
};

// The outcome: what to render and how to bill it.
struct ResolvedSize {
  ImageSize size;
  Tier tier = Tier::k1K;             // billing tier
  std::string label;                 // "WxH" of `size`, echoed back in responses
  std::optional<std::string> ratio;  // the ratio asked for or matched exactly, if any
  std::string quality;  // rendering quality low/medium/high/auto (lowercase), "" if none given
                        // (standard/hd/uhd only set the tier and leave this empty)
};

// Resolves a request against a model. Every rejection is Error::invalid naming the field:
// `size`, `quality`, `resolution`, `aspect_ratio` (or `image` for unusable reference
// dimensions). A broken caps.default_size is an internal error.
Result<ResolvedSize> resolve_size(const SizeRequest& req, const ModelCapabilities& caps);

}  // namespace ig::jobs
