#include "jobs/sizes.h"

#include <algorithm>
#include <cstdlib>
#include <numeric>

#include "core/text.h"

namespace ig::jobs {
namespace {

struct Ratio {
  std::string_view name;
  int w;
  int h;
};

constexpr std::array<Ratio, 13> kRatios = {{{"1:1", 1, 1},
                                            {"5:4", 5, 4},
                                            {"4:5", 4, 5},
                                            {"4:3", 4, 3},
                                            {"3:4", 3, 4},
                                            {"3:2", 3, 2},
                                            {"2:3", 2, 3},
                                            {"16:9", 16, 9},
                                            {"9:16", 9, 16},
                                            {"21:9", 21, 9},
                                            {"9:21", 9, 21},
                                            {"2:1", 2, 1},
                                            {"1:2", 1, 2}}};

// Seed 004's table, row order = kRatios, columns 1K / 2K / 4K. The 9:21, 2:1 and 1:2 rows are not
// in the seed: they come from derive_table_size() (9:21 is 21:9 transposed), which reproduces
// every row the seed does list (sizes_test checks both).
constexpr ImageSize kTable[13][3] = {
    {{1024, 1024}, {2048, 2048}, {2880, 2880}},  // 1:1
    {{1040, 832}, {2080, 1664}, {3200, 2560}},   // 5:4
    {{832, 1040}, {1664, 2080}, {2560, 3200}},   // 4:5
    {{1024, 768}, {2048, 1536}, {3264, 2448}},   // 4:3
    {{768, 1024}, {1536, 2048}, {2448, 3264}},   // 3:4
    {{1008, 672}, {2064, 1376}, {3504, 2336}},   // 3:2
    {{672, 1008}, {1376, 2064}, {2336, 3504}},   // 2:3
    {{1280, 720}, {2048, 1152}, {3840, 2160}},   // 16:9
    {{720, 1280}, {1152, 2048}, {2160, 3840}},   // 9:16
    {{1344, 576}, {2016, 864}, {3808, 1632}},    // 21:9
    {{576, 1344}, {864, 2016}, {1632, 3808}},    // 9:21 (derived)
    {{1152, 576}, {2048, 1024}, {3840, 1920}},   // 2:1 (derived)
    {{576, 1152}, {1024, 2048}, {1920, 3840}},   // 1:2 (derived)
};

constexpr std::array<std::string_view, 7> kKnownQualities = {"standard", "hd",   "uhd", "low",
                                                             "medium",   "high", "auto"};

int ratio_index(std::string_view name) {
  for (std::size_t i = 0; i < kRatios.size(); ++i) {
    if (kRatios[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

// Aspect distance between a size and w:h as the fraction max(W*h, H*w) / min(W*h, H*w) >= 1.
struct Distance {
  __int128 num;
  __int128 den;
  bool operator<(const Distance& o) const { return num * o.den < o.num * den; }
};

Distance distance(ImageSize s, long long w, long long h) {
  __int128 a = static_cast<__int128>(s.width) * h;
  __int128 b = static_cast<__int128>(s.height) * w;
  return a >= b ? Distance{a, b} : Distance{b, a};
}

std::string quoted(std::string_view text) { return "'" + printable(text, 64) + "'"; }

std::unexpected<Error> invalid(std::string message, std::string_view param) {
  return std::unexpected(Error::invalid(std::move(message), std::string(param)));
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

bool ieq(std::string_view a, std::string_view b) { return to_lower_ascii(a) == b; }

// Within 2 % of a named ratio: sides are multiples of 16, so a 4K size rarely has the exact
// ratio (3824x2160 is 16:9 to 0.4 %), while 3840x1728 (20:9) is 5 % from 21:9 and is not it.
bool close_to(ImageSize size, std::string_view ratio) {
  const int i = ratio_index(ratio);
  if (i < 0) return false;
  const long long lhs = static_cast<long long>(size.width) * kRatios[i].h;
  const long long rhs = static_cast<long long>(size.height) * kRatios[i].w;
  return 50 * std::llabs(lhs - rhs) <= rhs;
}

bool allowed_at_4k(const ModelCapabilities& caps, std::string_view ratio) {
  return caps.ratios_at_4k.empty() || std::find(caps.ratios_at_4k.begin(), caps.ratios_at_4k.end(),
                                                ratio) != caps.ratios_at_4k.end();
}

std::vector<ImageSize> allowed_sizes(const ModelCapabilities& caps) {
  std::vector<ImageSize> out;
  for (const auto& entry : caps.allowed_sizes) {
    if (auto s = parse_size(entry)) out.push_back(*s);
  }
  return out;
}

bool contains(const std::vector<ImageSize>& sizes, ImageSize s) {
  return std::find(sizes.begin(), sizes.end(), s) != sizes.end();
}

// A tier named by quality and/or resolution, and which field named it.
struct TierHint {
  std::optional<Tier> tier;
  std::string_view field;
};

ResolvedSize make(ImageSize size, Tier tier, std::optional<std::string_view> ratio,
                  const std::string& quality) {
  ResolvedSize out;
  out.size = size;
  out.tier = tier;
  out.label = format_size(size);
  if (ratio) out.ratio = std::string(*ratio);
  out.quality = quality;
  return out;
}

// A known ratio at a tier; `field` carried the ratio.
Result<ResolvedSize> resolve_ratio(std::string_view ratio, Tier tier, std::string_view field,
                                   const ModelCapabilities& caps, const std::string& quality) {
  if (tier == Tier::k4K && !allowed_at_4k(caps, ratio)) {
    return invalid("ratio " + std::string(ratio) + " is not available at 4K for this model; " +
                       "4K allows " + join(caps.ratios_at_4k),
                   field);
  }
  ImageSize size = *table_size(ratio, tier);
  if (!caps.allowed_sizes.empty()) {
    auto allowed = allowed_sizes(caps);
    if (!contains(allowed, size)) {
      auto it = std::find_if(allowed.begin(), allowed.end(), [&](ImageSize a) {
        return tier_of(a) == tier && nearest_ratio(a) == ratio;
      });
      if (it == allowed.end()) {
        return invalid(
            "ratio " + std::string(ratio) + " at " + std::string(to_string(tier)) +
                " is not offered by this model; allowed sizes: " + join(caps.allowed_sizes),
            field);
      }
      size = *it;
    }
  }
  return make(size, tier, ratio, quality);
}

// An explicit (or default) WxH. `field` carried it.
Result<ResolvedSize> resolve_wxh(ImageSize size, const TierHint& hint, std::string_view field,
                                 const ModelCapabilities& caps, const std::string& quality) {
  if (!caps.allowed_sizes.empty() && !contains(allowed_sizes(caps), size)) {
    return invalid("size " + format_size(size) +
                       " is not offered by this model; allowed sizes: " + join(caps.allowed_sizes),
                   field);
  }
  const Tier own = tier_of(size);
  const auto ratio = exact_ratio(size);
  if (hint.tier && *hint.tier != own) {
    if (!ratio) {
      return invalid("size " + format_size(size) + " is a " + std::string(to_string(own)) +
                         " size but " + std::string(hint.field) + " asks for " +
                         std::string(to_string(*hint.tier)) +
                         "; pass a matching size or a ratio such as 16:9",
                     hint.field);
    }
    return resolve_ratio(*ratio, *hint.tier, field, caps, quality);
  }
  if (own == Tier::k4K && !caps.ratios_at_4k.empty()) {
    std::string_view near = nearest_ratio(size);
    if (!close_to(size, near)) {
      return invalid("size " + format_size(size) +
                         " is a 4K size whose ratio is none of those this model allows at 4K (" +
                         join(caps.ratios_at_4k) + ")",
                     field);
    }
    if (!allowed_at_4k(caps, near)) {
      return invalid("size " + format_size(size) + " is a 4K size of ratio " + std::string(near) +
                         ", which this model does not allow at 4K; 4K allows " +
                         join(caps.ratios_at_4k),
                     field);
    }
  }
  return make(size, own, ratio, quality);
}

// `auto` following the first reference image.
Result<ResolvedSize> resolve_from_reference(ImageSize ref, Tier tier, const ModelCapabilities& caps,
                                            const std::string& quality) {
  if (caps.allowed_sizes.empty()) {
    std::vector<std::string_view> candidates;
    for (const auto& r : kRatios) {
      if (tier != Tier::k4K || allowed_at_4k(caps, r.name)) candidates.push_back(r.name);
    }
    if (candidates.empty()) return invalid("no ratio is available at 4K for this model", "size");
    return resolve_ratio(nearest_ratio(ref, candidates), tier, "size", caps, quality);
  }
  std::optional<ImageSize> best;
  std::optional<Distance> best_distance;
  for (ImageSize a : allowed_sizes(caps)) {
    if (tier_of(a) != tier) continue;
    if (tier == Tier::k4K && !allowed_at_4k(caps, nearest_ratio(a))) continue;
    Distance d = distance(ref, a.width, a.height);
    if (!best_distance || d < *best_distance) {
      best = a;
      best_distance = d;
    }
  }
  if (!best) {
    return invalid("no size at " + std::string(to_string(tier)) +
                       " is offered by this model; allowed sizes: " + join(caps.allowed_sizes),
                   "size");
  }
  return make(*best, tier, exact_ratio(*best), quality);
}

}  // namespace

std::string_view to_string(Tier tier) {
  switch (tier) {
    case Tier::k1K:
      return "1K";
    case Tier::k2K:
      return "2K";
    case Tier::k4K:
      return "4K";
  }
  return "1K";
}

std::optional<Tier> parse_tier(std::string_view text) {
  const std::string lower = to_lower_ascii(text);
  if (lower == "1k") return Tier::k1K;
  if (lower == "2k") return Tier::k2K;
  if (lower == "4k") return Tier::k4K;
  return std::nullopt;
}

std::string format_size(ImageSize size) {
  return std::to_string(size.width) + "x" + std::to_string(size.height);
}

bool is_known_ratio(std::string_view text) { return ratio_index(text) >= 0; }

std::optional<ImageSize> table_size(std::string_view ratio, Tier tier) {
  int i = ratio_index(ratio);
  if (i < 0) return std::nullopt;
  return kTable[i][static_cast<int>(tier)];
}

std::optional<ImageSize> derive_table_size(int ratio_w, int ratio_h, Tier tier) {
  if (ratio_w <= 0 || ratio_h <= 0) return std::nullopt;
  const int g = std::gcd(ratio_w, ratio_h);
  const int a = ratio_w / g;
  const int b = ratio_h / g;
  const int target = tier == Tier::k1K ? 1024 : tier == Tier::k2K ? 2048 : kMaxEdge;
  std::optional<ImageSize> best;
  int best_gap = 0;
  for (int k = 1; static_cast<long long>(std::max(a, b)) * k <= kMaxEdge; ++k) {
    ImageSize s{a * k, b * k};
    if (!validate_size(s)) continue;
    const int gap = std::abs(std::max(s.width, s.height) - target);
    if (!best || gap < best_gap) {
      best = s;
      best_gap = gap;
    }
  }
  return best;
}

std::optional<std::string_view> exact_ratio(ImageSize size) {
  if (size.width <= 0 || size.height <= 0) return std::nullopt;
  const int g = std::gcd(size.width, size.height);
  for (const auto& r : kRatios) {
    const int rg = std::gcd(r.w, r.h);
    if (size.width / g == r.w / rg && size.height / g == r.h / rg) return r.name;
  }
  return std::nullopt;
}

std::string_view nearest_ratio(ImageSize size, const std::vector<std::string_view>& candidates) {
  std::string_view best;
  std::optional<Distance> best_distance;
  for (const auto& r : kRatios) {
    if (!candidates.empty() &&
        std::find(candidates.begin(), candidates.end(), r.name) == candidates.end()) {
      continue;
    }
    Distance d = distance(size, r.w, r.h);
    if (!best_distance || d < *best_distance) {
      best = r.name;
      best_distance = d;
    }
  }
  return best;
}

Tier tier_of(ImageSize size) {
  const int edge = std::max(size.width, size.height);
  if (edge <= kMax1KEdge) return Tier::k1K;
  if (edge <= kMax2KEdge) return Tier::k2K;
  return Tier::k4K;
}

Result<ImageSize> validate_size(ImageSize size, std::string_view param) {
  const std::string text = format_size(size);
  if (size.width <= 0 || size.height <= 0) {
    return invalid("size " + text + ": both sides must be positive", param);
  }
  if (size.width % kSizeMultiple != 0 || size.height % kSizeMultiple != 0) {
    return invalid("size " + text + ": both sides must be multiples of 16", param);
  }
  const long long long_edge = std::max(size.width, size.height);
  const long long short_edge = std::min(size.width, size.height);
  if (long_edge > kMaxEdge) {
    return invalid("size " + text + ": the longest side must be at most 3840", param);
  }
  if (long_edge > kMaxAspect * short_edge) {
    return invalid("size " + text + ": the aspect ratio must be at most 3:1", param);
  }
  const long long pixels = long_edge * short_edge;
  if (pixels < kMinPixels || pixels > kMaxPixels) {
    return invalid("size " + text + ": the pixel count must be between 655360 and 8294400", param);
  }
  return size;
}

Result<ImageSize> parse_size(std::string_view text, std::string_view param) {
  auto bad = [&] {
    return invalid("size " + quoted(text) + " must be WxH (e.g. 1024x1024), a ratio such as " +
                       "16:9, or auto",
                   param);
  };
  const std::size_t x = text.find('x');
  if (x == std::string_view::npos) return bad();
  auto side = [](std::string_view digits) -> std::optional<int> {
    // Up to 5 digits: anything longer is far above kMaxEdge and is not read (no overflow).
    if (digits.empty() || digits.size() > 5 || digits[0] == '0') return std::nullopt;
    int value = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      value = value * 10 + (c - '0');
    }
    return value;
  };
  const std::string_view w_text = text.substr(0, x);
  const std::string_view h_text = text.substr(x + 1);
  const auto w = side(w_text);
  const auto h = side(h_text);
  if (!w || !h) {
    const bool digits_only = [&] {
      for (std::string_view part : {w_text, h_text}) {
        if (part.empty() || part[0] == '0') return false;
        for (char c : part) {
          if (c < '0' || c > '9') return false;
        }
      }
      return true;
    }();
    if (digits_only) {
      return invalid("size " + quoted(text) + ": the longest side must be at most 3840", param);
    }
    return bad();
  }
  return validate_size({*w, *h}, param);
}

Result<void> validate_capabilities(const ModelCapabilities& caps) {
  for (const auto& entry : caps.allowed_sizes) {
    if (ieq(entry, "auto")) continue;
    if (auto s = parse_size(entry, "allowed_sizes"); !s) return std::unexpected(s.error());
  }
  for (const auto& r : caps.ratios_at_4k) {
    if (!is_known_ratio(r)) {
      return invalid("ratios_at_4k: unknown ratio " + quoted(r), "ratios_at_4k");
    }
  }
  for (const auto& q : caps.qualities) {
    if (std::find(kKnownQualities.begin(), kKnownQualities.end(), to_lower_ascii(q)) ==
        kKnownQualities.end()) {
      return invalid("qualities: unknown quality " + quoted(q), "qualities");
    }
  }
  for (const auto& f : caps.output_formats) {
    if (f != "png" && f != "jpeg" && f != "webp") {
      return invalid("output_formats: unknown format " + quoted(f), "output_formats");
    }
  }
  auto def = parse_size(caps.default_size, "default_size");
  if (!def) return std::unexpected(def.error());
  if (!caps.allowed_sizes.empty() && !contains(allowed_sizes(caps), *def)) {
    return invalid("default_size " + caps.default_size + " is not among allowed_sizes",
                   "default_size");
  }
  if (caps.max_n < 1) return invalid("max_n must be at least 1", "max_n");
  if (caps.max_reference_images < 0) {
    return invalid("max_reference_images must not be negative", "max_reference_images");
  }
  if (caps.max_prompt_chars < 1) {
    return invalid("max_prompt_chars must be at least 1", "max_prompt_chars");
  }
  return {};
}

Result<ResolvedSize> resolve_size(const SizeRequest& req, const ModelCapabilities& caps) {
  // quality: a tier (standard/hd/uhd) or a rendering quality (low/medium/high/auto).
  std::optional<Tier> quality_tier;
  std::string quality;
  if (req.quality) {
    const std::string q = to_lower_ascii(*req.quality);
    if (q == "standard") {
      quality_tier = Tier::k1K;
    } else if (q == "hd") {
      quality_tier = Tier::k2K;
    } else if (q == "uhd") {
      quality_tier = Tier::k4K;
    } else if (q == "low" || q == "medium" || q == "high" || q == "auto") {
      quality = q;
    } else {
      return invalid("quality " + quoted(*req.quality) +
                         " is not one of standard, hd, uhd, low, medium, high, auto",
                     "quality");
    }
    if (!caps.qualities.empty() &&
        std::none_of(caps.qualities.begin(), caps.qualities.end(),
                     [&](const std::string& allowed) { return ieq(allowed, q); })) {
      return invalid("quality " + quoted(*req.quality) + " is not supported by this model; use " +
                         join(caps.qualities),
                     "quality");
    }
  }

  TierHint hint{quality_tier, "quality"};
  if (req.resolution) {
    const auto tier = parse_tier(*req.resolution);
    if (!tier) {
      return invalid("resolution " + quoted(*req.resolution) + " is not one of 1K, 2K, 4K",
                     "resolution");
    }
    if (quality_tier && *quality_tier != *tier) {
      return invalid("resolution " + std::string(to_string(*tier)) + " conflicts with quality " +
                         quoted(*req.quality) + " (" + std::string(to_string(*quality_tier)) + ")",
                     "resolution");
    }
    hint = {tier, "resolution"};
  }

  std::optional<std::string_view> aspect;  // a known ratio from aspect_ratio
  if (req.aspect_ratio && !ieq(*req.aspect_ratio, "auto")) {
    const int i = ratio_index(*req.aspect_ratio);
    if (i < 0) {
      return invalid("aspect_ratio " + quoted(*req.aspect_ratio) +
                         " is not one of 1:1, 5:4, 4:5, 4:3, 3:4, 3:2, 2:3, 16:9, 9:16, 21:9, "
                         "9:21, 2:1, 1:2, auto",
                     "aspect_ratio");
    }
    aspect = kRatios[i].name;
  }

  const bool size_auto = !req.size || ieq(*req.size, "auto");
  if (!size_auto) {
    const std::string& text = *req.size;
    if (text.find(':') != std::string::npos) {
      const int i = ratio_index(text);
      if (i < 0) {
        return invalid("size " + quoted(text) +
                           " is not a supported ratio (1:1, 5:4, 4:5, 4:3, 3:4, 3:2, 2:3, 16:9, "
                           "9:16, 21:9, 9:21, 2:1, 1:2)",
                       "size");
      }
      if (aspect && *aspect != kRatios[i].name) {
        return invalid("aspect_ratio " + std::string(*aspect) + " conflicts with size " + text,
                       "aspect_ratio");
      }
      return resolve_ratio(kRatios[i].name, hint.tier.value_or(caps.default_tier), "size", caps,
                           quality);
    }
    auto size = parse_size(text, "size");
    if (!size) return std::unexpected(size.error());
    if (aspect && exact_ratio(*size) != aspect) {
      return invalid("aspect_ratio " + std::string(*aspect) + " conflicts with size " + text,
                     "aspect_ratio");
    }
    return resolve_wxh(*size, hint, "size", caps, quality);
  }

  if (aspect) {
    return resolve_ratio(*aspect, hint.tier.value_or(caps.default_tier), "aspect_ratio", caps,
                         quality);
  }
  if (req.reference_image) {
    const ImageSize ref = *req.reference_image;
    if (ref.width <= 0 || ref.height <= 0) {
      return invalid("the reference image has no usable dimensions", "image");
    }
    if (!hint.tier && validate_size(ref, "image")) {
      if (auto own = resolve_wxh(ref, hint, "image", caps, quality)) return own;
    }
    return resolve_from_reference(ref, hint.tier.value_or(caps.default_tier), caps, quality);
  }
  auto def = parse_size(caps.default_size, "size");
  if (!def) {
    return fail(ErrorCode::kInternal,
                "model default_size " + quoted(caps.default_size) + " is invalid");
  }
  // No size was sent: a tier the default size cannot take is the doing of the field the client
  // did send (aspect_ratio "auto", else quality or resolution).
  const std::string_view blamed = req.aspect_ratio ? std::string_view("aspect_ratio")
                                  : hint.tier      ? hint.field
                                                   : std::string_view("size");
  return resolve_wxh(*def, hint, blamed, caps, quality);
}

}  // namespace ig::jobs
