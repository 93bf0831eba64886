#include "media/local_renderer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numbers>
#include <utility>
#include <vips/vips8>

#include "core/text.h"
#include "media/image_probe.h"

namespace ig::media {
namespace {

using vips::VError;
using vips::VImage;

constexpr std::size_t kMaxReferenceImages = 16;
constexpr std::size_t kPromptDisplayChars = 280;
constexpr std::size_t kFieldDisplayChars = 80;
constexpr int kMinSideForText = 48;
constexpr const char* kFont = "Noto Sans CJK SC";

// Takes the libvips error text and clears libvips' (process-wide) error buffer.
std::string vips_message(const VError& e) {
  std::string message = e.what();
  vips_error_clear();
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  return message;
}

// A VipsBlob that borrows caller-owned bytes (which must outlive every image made from it).
class BorrowedBlob {
 public:
  explicit BorrowedBlob(std::string_view bytes)
      : blob_(vips_blob_new(nullptr, bytes.data(), bytes.size())) {}
  ~BorrowedBlob() { vips_area_unref(VIPS_AREA(blob_)); }
  BorrowedBlob(const BorrowedBlob&) = delete;
  BorrowedBlob& operator=(const BorrowedBlob&) = delete;
  VipsBlob* get() const { return blob_; }

 private:
  VipsBlob* blob_;
};

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// splitmix64: a deterministic stream of pseudo-random numbers from one seed.
class SeedStream {
 public:
  explicit SeedStream(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double unit() { return static_cast<double>(next() >> 11) / static_cast<double>(1ull << 53); }

 private:
  std::uint64_t state_;
};

struct Rgb {
  double r, g, b;
};

Rgb hsv_to_rgb(double hue, double sat, double val) {
  hue = std::fmod(hue, 360.0);
  const double c = val * sat;
  const double x = c * (1 - std::fabs(std::fmod(hue / 60.0, 2.0) - 1));
  const double m = val - c;
  Rgb out{};
  switch (static_cast<int>(hue / 60.0)) {
    case 0:
      out = {c, x, 0};
      break;
    case 1:
      out = {x, c, 0};
      break;
    case 2:
      out = {0, c, x};
      break;
    case 3:
      out = {0, x, c};
      break;
    case 4:
      out = {x, 0, c};
      break;
    default:
      out = {c, 0, x};
      break;
  }
  return {(out.r + m) * 255, (out.g + m) * 255, (out.b + m) * 255};
}

VImage as_srgb(const VImage& img) {
  return img.copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
}

// The prompt-derived background: a linear two-colour gradient at a prompt-chosen angle, diagonal
// stripes and a soft glow. RGBA uchar; alpha 0 everywhere when transparent. Everything in it is
// smooth, so it is computed on a grid kBackgroundStep times coarser and scaled up bilinearly.
constexpr int kBackgroundStep = 4;

VImage make_background(int w, int h, std::string_view prompt, bool transparent) {
  SeedStream seed(fnv1a(prompt));
  const double hue = seed.unit() * 360;
  const Rgb c1 = hsv_to_rgb(hue, 0.55 + 0.3 * seed.unit(), 0.80 + 0.15 * seed.unit());
  const Rgb c2 =
      hsv_to_rgb(hue + 100 + 160 * seed.unit(), 0.6 + 0.3 * seed.unit(), 0.30 + 0.25 * seed.unit());
  const double angle = seed.unit() * 2 * std::numbers::pi;
  const double ca = std::cos(angle), sa = std::sin(angle);
  // t = (x*ca + y*sa - lo) / (hi - lo) spans 0..1 over the image.
  const double lo = std::min(0.0, w * ca) + std::min(0.0, h * sa);
  const double hi = std::max(0.0, w * ca) + std::max(0.0, h * sa);
  const double range = std::max(1.0, hi - lo);
  const double d[3] = {c2.r - c1.r, c2.g - c1.g, c2.b - c1.b};
  const double base[3] = {c1.r, c1.g, c1.b};
  // colour_k = base_k + d_k * t, as one 3x3 recombination of the bands [x, y, 1].
  double gradient[9];
  for (int k = 0; k < 3; ++k) {
    gradient[k * 3 + 0] = d[k] * ca / range;
    gradient[k * 3 + 1] = d[k] * sa / range;
    gradient[k * 3 + 2] = base[k] - d[k] * lo / range;
  }
  // Full-resolution pixel coordinates, sampled every kBackgroundStep pixels.
  const int grid_w = (w + kBackgroundStep - 1) / kBackgroundStep + 1;
  const int grid_h = (h + kBackgroundStep - 1) / kBackgroundStep + 1;
  const VImage xy = VImage::xyz(grid_w, grid_h) * static_cast<double>(kBackgroundStep);
  const VImage xy1 = xy.bandjoin_const({1.0});
  VImage rgb = xy1.recomb(VImage::new_matrix(3, 3, gradient, 9));

  // Stripes: sin of a prompt-chosen direction and period (vips' sin takes degrees).
  const double stripe_angle = seed.unit() * std::numbers::pi;
  const double period = std::min(w, h) / (3.0 + 6.0 * seed.unit());
  double stripe[3] = {360.0 * std::cos(stripe_angle) / period,
                      360.0 * std::sin(stripe_angle) / period, 360.0 * seed.unit()};
  const VImage stripes = xy1.recomb(VImage::new_matrix(3, 1, stripe, 3)).sin();
  rgb = rgb + stripes * 16.0;

  // Glow: exp(-d^2 / r^2) around a prompt-chosen centre.
  const double cx = w * seed.unit(), cy = h * seed.unit();
  const double r = std::max(w, h) * (0.2 + 0.25 * seed.unit());
  double sum[2] = {1.0, 1.0};
  const VImage delta = xy.linear({1.0, 1.0}, {-cx, -cy});
  const VImage glow =
      (delta * delta).recomb(VImage::new_matrix(2, 1, sum, 2)).linear(-1.0 / (r * r), 0.0).exp();
  const Rgb tint = hsv_to_rgb(hue + 40, 0.35, 1.0);
  rgb = rgb + glow * std::vector<double>{tint.r * 0.45, tint.g * 0.45, tint.b * 0.45};

  const VImage full =
      rgb.resize(kBackgroundStep, VImage::option()->set("kernel", VIPS_KERNEL_LINEAR))
          .crop(0, 0, w, h);
  VImage out = full.cast(VIPS_FORMAT_UCHAR).bandjoin_const({transparent ? 0.0 : 255.0});
  return as_srgb(out).copy_memory();
}

// Makes untrusted text safe for vips_text (which always parses Pango markup): valid UTF-8,
// control characters as spaces, at most max_chars code points ("…" when cut), markup-escaped.
std::string display_markup(std::string_view in, std::size_t max_chars) {
  std::unique_ptr<gchar, decltype(&g_free)> valid(
      g_utf8_make_valid(in.data(), static_cast<gssize>(in.size())), g_free);
  std::string clean;
  std::size_t chars = 0;
  bool cut = false;
  for (const gchar* p = valid.get(); *p != '\0'; p = g_utf8_next_char(p)) {
    if (chars == max_chars) {
      cut = true;
      break;
    }
    const gunichar c = g_utf8_get_char(p);
    if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0)) {
      clean += ' ';
    } else {
      clean.append(p, static_cast<std::size_t>(g_utf8_next_char(p) - p));
    }
    ++chars;
  }
  if (cut) clean += "\u2026";
  std::unique_ptr<gchar, decltype(&g_free)> escaped(
      g_markup_escape_text(clean.data(), static_cast<gssize>(clean.size())), g_free);
  return escaped.get();
}

// True when nothing in `markup` would leave ink: spaces, no-break and zero-width spaces, soft
// hyphens and other format characters only (vips_text fails on such text: "no text to render").
bool is_blank(const std::string& markup) {
  for (const gchar* p = markup.c_str(); *p != '\0'; p = g_utf8_next_char(p)) {
    if (g_unichar_isgraph(g_utf8_get_char(p))) return false;
  }
  return true;
}

// One-band uchar coverage mask of `markup`, wrapped at `wrap_width` pixels. With max_height,
// libvips instead searches for the dpi (so the font size) that fills wrap_width x max_height.
VImage render_text(const std::string& markup, int font_px, int wrap_width,
                   std::optional<int> max_height = std::nullopt) {
  const std::string font = fmt::format("{}, {}", kFont, font_px);
  auto* options = VImage::option()
                      ->set("font", font.c_str())
                      ->set("width", std::max(1, wrap_width))
                      ->set("wrap", VIPS_TEXT_WRAP_WORD_CHAR);
  if (max_height) {
    options->set("height", std::max(1, *max_height));
  } else {
    options->set("dpi", 72);  // 1 pt = 1 px
  }
  return VImage::text(markup.c_str(), options);
}

VImage clip(const VImage& img, int max_w, int max_h) {
  const int w = std::min(img.width(), max_w);
  const int h = std::min(img.height(), max_h);
  if (w == img.width() && h == img.height()) return img;
  return img.crop(0, 0, std::max(1, w), std::max(1, h));
}

// Paints `colour` through a one-band coverage mask placed at (x, y) of an RGBA region.
VImage paint(const VImage& region, const VImage& mask, int x, int y, std::vector<double> colour) {
  const VImage placed = mask.embed(x, y, region.width(), region.height());
  return placed.ifthenelse(colour, region, VImage::option()->set("blend", true));
}

// Draws a translucent panel with the prompt and the request parameters, centred on the canvas.
VImage draw_caption(const VImage& canvas, const RenderSpec& spec) {
  const int w = canvas.width(), h = canvas.height();
  if (std::min(w, h) < kMinSideForText) return canvas;  // too small for legible text
  const int margin = std::max(2, std::min(w, h) / 20);
  const int pad = std::max(2, std::min(w, h) / 40);
  const int inner_w = w - 2 * (margin + pad);
  const int inner_h = h - 2 * (margin + pad);
  const int prompt_px = std::clamp(std::min(w, h) / 16, 8, 120);
  const int meta_px = std::clamp(prompt_px * 9 / 20, 7, 54);
  const int gap = meta_px;

  auto field = [](const std::string& value) {
    return value.empty() ? std::string("-") : display_markup(value, kFieldDisplayChars);
  };
  const std::string meta_markup =
      fmt::format("model: {}   {}\u00d7{}   quality: {}\njob: {}", field(spec.model), spec.width,
                  spec.height, field(spec.quality), field(spec.job_id));
  VImage meta = clip(render_text(meta_markup, meta_px, inner_w), inner_w, inner_h);

  std::string prompt_markup = display_markup(spec.prompt, kPromptDisplayChars);
  if (is_blank(prompt_markup)) prompt_markup = "(empty prompt)";
  std::optional<VImage> prompt;
  const int prompt_room = inner_h - meta.height() - gap;
  if (prompt_room >= 8) {
    VImage text = render_text(prompt_markup, prompt_px, inner_w);
    if (text.height() > prompt_room) {  // too long: shrink the font to fit
      text = render_text(prompt_markup, prompt_px, inner_w, prompt_room);
    }
    prompt = clip(text, inner_w, prompt_room);
  }

  const int block_w = std::max(meta.width(), prompt ? prompt->width() : 0);
  const int block_h = meta.height() + (prompt ? prompt->height() + gap : 0);
  const int panel_w = std::min(w, block_w + 2 * pad);
  const int panel_h = std::min(h, block_h + 2 * pad);
  const int panel_x = (w - panel_w) / 2;
  const int panel_y = (h - panel_h) / 2;

  VImage region = canvas.crop(panel_x, panel_y, panel_w, panel_h);
  // Darker on a transparent canvas, where the panel is the only backdrop the text has.
  const VImage shade = VImage::black(panel_w, panel_h).new_from_image(spec.transparent ? 190 : 150);
  region = shade.cast(VIPS_FORMAT_UCHAR)
               .ifthenelse(std::vector<double>{12, 12, 20, 255}, region,
                           VImage::option()->set("blend", true));
  int y = pad;
  if (prompt) {
    region = paint(region, *prompt, pad, y, {255, 255, 255, 255});
    y += prompt->height() + gap;
  }
  region = paint(region, meta, pad, y, {255, 222, 140, 255});
  return canvas.insert(region, panel_x, panel_y);
}

// Scales to cover w x h (keeping the aspect ratio) and crops the centre: exactly w x h.
VImage cover(VImage img, int w, int h) {
  const double scale =
      std::max(static_cast<double>(w) / img.width(), static_cast<double>(h) / img.height());
  if (std::fabs(scale - 1.0) > 1e-9) img = img.resize(scale);
  if (img.width() < w || img.height() < h) {  // rounding in resize
    img = img.embed(0, 0, std::max(w, img.width()), std::max(h, img.height()),
                    VImage::option()->set("extend", VIPS_EXTEND_COPY));
  }
  return img.crop((img.width() - w) / 2, (img.height() - h) / 2, w, h);
}

struct Probed {
  std::string_view bytes;
  ImageInfo info;
};

Result<Probed> probe_untrusted(std::string_view bytes, const char* param) {
  auto info = probe_image(bytes);
  if (!info) {
    Error error = info.error();
    error.param = param;
    return std::unexpected(std::move(error));
  }
  if (auto ok = check_dimensions(*info); !ok) {
    Error error = ok.error();
    error.param = param;
    return std::unexpected(std::move(error));
  }
  return Probed{bytes, *info};
}

// Decodes probed bytes with the loader for the sniffed type (never libvips' own sniffing), failing
// on any decoder error. For a JPEG, shrink-on-load down to no less than min_w x min_h.
VImage load(const Probed& p, int min_w, int min_h) {
  BorrowedBlob blob(p.bytes);
  auto* options =
      VImage::option()->set("access", VIPS_ACCESS_SEQUENTIAL)->set("fail_on", VIPS_FAIL_ON_ERROR);
  switch (p.info.type) {
    case ImageType::kPng:
      return VImage::pngload_buffer(blob.get(), options);
    case ImageType::kJpeg: {
      int shrink = 8;
      while (shrink > 1 && (p.info.width / shrink < min_w || p.info.height / shrink < min_h)) {
        shrink /= 2;
      }
      return VImage::jpegload_buffer(blob.get(), options->set("shrink", shrink));
    }
    case ImageType::kWebp:
      return VImage::webpload_buffer(blob.get(), options);
    case ImageType::kUnsupported:
      break;
  }
  delete options;
  throw VError("unsupported image type");
}

// A reference image decoded, covering exactly w x h, as RGBA uchar held in memory. When the
// output is opaque, any transparency is flattened onto mid grey.
Result<VImage> reference_tile(const Probed& p, int w, int h, bool keep_alpha) {
  try {
    VImage img = cover(load(p, w, h), w, h).colourspace(VIPS_INTERPRETATION_sRGB);
    if (img.bands() > 4) img = img.extract_band(0, VImage::option()->set("n", 4));
    if (img.bands() == 4 && !keep_alpha) {
      img = img.flatten(VImage::option()->set("background", std::vector<double>{128, 128, 128}));
    }
    img = img.cast(VIPS_FORMAT_UCHAR);
    if (img.bands() == 3) img = img.bandjoin_const({255.0});
    return as_srgb(img).copy_memory();
  } catch (const VError& e) {
    return std::unexpected(
        Error::invalid("image could not be decoded: " + vips_message(e), "image"));
  }
}

// The mask's "edit here" weight (255 where the mask is fully transparent), covering w x h.
Result<VImage> edit_weight(const Probed& p, int w, int h) {
  try {
    VImage mask = load(p, w, h);
    if (!mask.has_alpha()) {
      return std::unexpected(Error::invalid("mask must have an alpha channel", "mask"));
    }
    VImage alpha = mask.extract_band(mask.bands() - 1);
    if (alpha.format() != VIPS_FORMAT_UCHAR) alpha = (alpha / 257.0).cast(VIPS_FORMAT_UCHAR);
    return cover(alpha, w, h).cast(VIPS_FORMAT_UCHAR).invert().copy_memory();
  } catch (const VError& e) {
    return std::unexpected(Error::invalid("mask could not be decoded: " + vips_message(e), "mask"));
  }
}

// Tiles every reference image over the canvas (a near-square grid, each covering its tile).
Result<VImage> tile_references(VImage canvas, const std::vector<Probed>& refs, bool keep_alpha) {
  const int w = canvas.width(), h = canvas.height();
  const int n = static_cast<int>(refs.size());
  const int cols = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int rows = (n + cols - 1) / cols;
  for (int i = 0; i < n; ++i) {
    const int row = i / cols;
    const int in_row = std::min(cols, n - row * cols);  // the last row may be shorter
    const int col = i % cols;
    const int x0 = col * w / in_row, x1 = (col + 1) * w / in_row;
    const int y0 = row * h / rows, y1 = (row + 1) * h / rows;
    auto tile = reference_tile(refs[i], std::max(1, x1 - x0), std::max(1, y1 - y0), keep_alpha);
    if (!tile) return std::unexpected(tile.error());
    canvas = canvas.insert(*tile, x0, y0);
  }
  return canvas;
}

std::unique_ptr<void, decltype(&g_free)> owned(void* p) { return {p, g_free}; }

int encoder_quality(const std::optional<int>& compression) {
  return std::clamp(compression.value_or(100), 1, 100);
}

// Encodes RGBA uchar; drops alpha unless the output is transparent.
std::string encode(VImage img, OutputFormat format, const std::optional<int>& compression,
                   bool keep_alpha) {
  if (img.bands() == 4 && !keep_alpha) img = img.extract_band(0, VImage::option()->set("n", 3));
  img = as_srgb(img);
  void* buf = nullptr;
  std::size_t size = 0;
  switch (format) {
    case OutputFormat::kPng:
      img.write_to_buffer(".png", &buf, &size,
                          VImage::option()->set("compression", 6)->set("strip", true));
      break;
    case OutputFormat::kJpeg:
      img.write_to_buffer(
          ".jpg", &buf, &size,
          VImage::option()->set("Q", encoder_quality(compression))->set("strip", true));
      break;
    case OutputFormat::kWebp:
      img.write_to_buffer(".webp", &buf, &size,
                          VImage::option()
                              ->set("Q", encoder_quality(compression))
                              ->set("effort", 1)
                              ->set("strip", true));
      break;
  }
  auto holder = owned(buf);
  return std::string(static_cast<const char*>(buf), size);
}

Result<void> validate(const RenderSpec& spec) {
  if (spec.width < kMinRenderSide || spec.width > kMaxRenderSide || spec.height < kMinRenderSide ||
      spec.height > kMaxRenderSide) {
    return std::unexpected(
        Error::invalid(fmt::format("size {}x{} is not supported: each side must be {} to {} pixels",
                                   spec.width, spec.height, kMinRenderSide, kMaxRenderSide),
                       "size"));
  }
  if (spec.transparent && spec.format == OutputFormat::kJpeg) {
    return std::unexpected(
        Error::invalid("a transparent background needs output_format png or webp", "background"));
  }
  if (spec.compression && (*spec.compression < 0 || *spec.compression > 100)) {
    return std::unexpected(
        Error::invalid("output_compression must be between 0 and 100", "output_compression"));
  }
  if (spec.reference_images.size() > kMaxReferenceImages) {
    return std::unexpected(Error::invalid(
        fmt::format("at most {} reference images are allowed", kMaxReferenceImages), "image"));
  }
  if (spec.mask && spec.reference_images.empty()) {
    return std::unexpected(Error::invalid("a mask needs an image to edit", "mask"));
  }
  return {};
}

EncodedImage encoded(const VImage& img, const RenderSpec& spec) {
  EncodedImage image;
  image.bytes = encode(img, spec.format, spec.compression, spec.transparent);
  image.mime = std::string(mime_type(spec.format));
  image.width = spec.width;
  image.height = spec.height;
  return image;
}

Result<EncodedImage> render_checked(const RenderSpec& spec) {
  const int w = spec.width, h = spec.height;
  std::vector<Probed> refs;
  for (const std::string& bytes : spec.reference_images) {
    auto probed = probe_untrusted(bytes, "image");
    if (!probed) return std::unexpected(probed.error());
    refs.push_back(*probed);
  }
  std::optional<Probed> mask;
  if (spec.mask) {
    auto probed = probe_untrusted(*spec.mask, "mask");
    if (!probed) return std::unexpected(probed.error());
    if (probed->info.type != ImageType::kPng) {
      return std::unexpected(Error::invalid("mask must be a PNG image", "mask"));
    }
    const ImageInfo& image = refs.front().info;
    if (probed->info.width != image.width || probed->info.height != image.height) {
      return std::unexpected(Error::invalid(
          fmt::format("mask size {}x{} differs from image size {}x{}", probed->info.width,
                      probed->info.height, image.width, image.height),
          "mask"));
    }
    mask = *probed;
  }

  const VImage background = make_background(w, h, spec.prompt, spec.transparent);
  VImage content = background;
  if (!refs.empty()) {
    auto tiled = tile_references(background, refs, spec.transparent);
    if (!tiled) return std::unexpected(tiled.error());
    content = *tiled;
    if (!spec.transparent) {
      // Tint the references with the prompt's background so the prompt shows through.
      const VImage tint = VImage::black(w, h).new_from_image(110).cast(VIPS_FORMAT_UCHAR);
      content = tint.ifthenelse(background, content, VImage::option()->set("blend", true));
    }
  }
  if (!mask) {
    content = draw_caption(content, spec);
    return encoded(content, spec);
  }

  auto weight = edit_weight(*mask, w, h);
  if (!weight) return std::unexpected(weight.error());
  auto original = reference_tile(refs.front(), w, h, spec.transparent);
  if (!original) return std::unexpected(original.error());
  // The caption goes inside the bounding box of the edited area, which is all that shows of it.
  int top = 0, box_w = 0, box_h = 0;
  const int left = weight->find_trim(
      &top, &box_w, &box_h,
      VImage::option()->set("background", std::vector<double>{0})->set("threshold", 128.0));
  if (box_w > 0 && box_h > 0) {
    const VImage area = draw_caption(content.crop(left, top, box_w, box_h), spec);
    content = content.insert(area, left, top);
  }
  return encoded(weight->ifthenelse(content, *original, VImage::option()->set("blend", true)),
                 spec);
}

// Decodes one of our own encoded images to RGBA-or-RGB uchar.
Result<VImage> decode_own(const EncodedImage& image) {
  auto probed = probe_untrusted(image.bytes, "image");
  if (!probed) return std::unexpected(probed.error());
  return load(*probed, probed->info.width, probed->info.height)
      .colourspace(VIPS_INTERPRETATION_sRGB)
      .cast(VIPS_FORMAT_UCHAR)
      .copy_memory();
}

// Pixelates to blocks of `block` pixels, keeping the exact size.
VImage pixelate(const VImage& img, int block) {
  const int w = img.width(), h = img.height();
  const int small_w = std::max(1, w / block), small_h = std::max(1, h / block);
  VImage small = img.resize(static_cast<double>(small_w) / w,
                            VImage::option()->set("vscale", static_cast<double>(small_h) / h));
  VImage big = small.resize(static_cast<double>(w) / small.width(),
                            VImage::option()
                                ->set("vscale", static_cast<double>(h) / small.height())
                                ->set("kernel", VIPS_KERNEL_NEAREST));
  if (big.width() < w || big.height() < h) {
    big = big.embed(0, 0, std::max(w, big.width()), std::max(h, big.height()),
                    VImage::option()->set("extend", VIPS_EXTEND_COPY));
  }
  return big.crop(0, 0, w, h);
}

}  // namespace

#if defined(__SANITIZE_ADDRESS__)
#define IG_LSAN_HOOK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IG_LSAN_HOOK 1
#endif
#endif
#ifdef IG_LSAN_HOOK
// Sanitizer builds only. fontconfig (reached through Pango by vips_text) keeps its font
// configuration for the life of the process and never frees it, so LeakSanitizer would fail every
// binary that renders text at exit. Same list as tests/lsan.supp; nothing of ours is suppressed.
extern "C" const char* __lsan_default_suppressions() { return "leak:libfontconfig.so\n"; }
// Keep stderr to what the program says (the CLI promises one line per failure).
extern "C" const char* __lsan_default_options() { return "print_suppressions=0"; }
#endif

Result<void> init_media() {
  static const Result<void> started = []() -> Result<void> {
    if (VIPS_INIT("imagegate") != 0) {
      std::string message = vips_error_buffer();
      vips_error_clear();
      return fail(ErrorCode::kInternal, "libvips failed to start: " + message);
    }
    vips_concurrency_set(1);  // callers already run renders on a bounded pool
    vips_cache_set_max(0);    // every request is different; the cache only holds memory
    vips_block_untrusted_set(TRUE);
    try {
      // Warm fontconfig/Pango so the first request does not pay for it.
      (void)VImage::text("warm up", VImage::option()->set("font", kFont)).avg();
    } catch (const VError& e) {
      (void)vips_message(e);
    }
    return {};
  }();
  return started;
}

void shutdown_media() { vips_shutdown(); }

std::optional<OutputFormat> parse_output_format(std::string_view name) {
  if (name == "png") return OutputFormat::kPng;
  if (name == "jpeg" || name == "jpg") return OutputFormat::kJpeg;
  if (name == "webp") return OutputFormat::kWebp;
  return std::nullopt;
}

std::string_view mime_type(OutputFormat format) {
  switch (format) {
    case OutputFormat::kPng:
      return "image/png";
    case OutputFormat::kJpeg:
      return "image/jpeg";
    case OutputFormat::kWebp:
      return "image/webp";
  }
  return "application/octet-stream";
}

std::string_view format_name(OutputFormat format) {
  switch (format) {
    case OutputFormat::kPng:
      return "png";
    case OutputFormat::kJpeg:
      return "jpeg";
    case OutputFormat::kWebp:
      return "webp";
  }
  return "png";
}

Result<EncodedImage> render_image(const RenderSpec& spec) {
  if (auto ok = validate(spec); !ok) return std::unexpected(ok.error());
  if (auto ok = init_media(); !ok) return std::unexpected(ok.error());
  try {
    return render_checked(spec);
  } catch (const VError& e) {
    return fail(ErrorCode::kInternal, "local renderer failed: " + vips_message(e));
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal, std::string("local renderer failed: ") + e.what());
  }
}

Result<std::vector<EncodedImage>> render_partials(const RenderSpec& spec,
                                                  const EncodedImage& final_image, int count) {
  if (count < 0 || count > kMaxPartialImages) {
    return std::unexpected(
        Error::invalid(fmt::format("partial_images must be between 0 and {}", kMaxPartialImages),
                       "partial_images"));
  }
  std::vector<EncodedImage> partials;
  if (count == 0) return partials;
  if (auto ok = init_media(); !ok) return std::unexpected(ok.error());
  try {
    auto decoded = decode_own(final_image);
    if (!decoded) return std::unexpected(decoded.error());
    const bool keep_alpha = decoded->bands() == 4 && spec.format != OutputFormat::kJpeg;
    for (int i = 0; i < count; ++i) {
      const int block = 4 << (count - i);  // e.g. 32, 16, 8 for three partials
      EncodedImage partial;
      partial.bytes = encode(pixelate(*decoded, block), spec.format, spec.compression, keep_alpha);
      partial.mime = std::string(mime_type(spec.format));
      partial.width = decoded->width();
      partial.height = decoded->height();
      partials.push_back(std::move(partial));
    }
  } catch (const VError& e) {
    return fail(ErrorCode::kInternal, "local renderer failed: " + vips_message(e));
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal, std::string("local renderer failed: ") + e.what());
  }
  return partials;
}

TokenUsage local_usage(const RenderSpec& spec) {
  TokenUsage usage;
  usage.input_text_tokens =
      std::max<std::int64_t>(1, (static_cast<std::int64_t>(spec.prompt.size()) + 3) / 4);
  usage.input_image_tokens =
      256 * static_cast<std::int64_t>(spec.reference_images.size()) + (spec.mask ? 256 : 0);
  const std::string quality = to_lower_ascii(spec.quality);
  std::int64_t per_megapixel = 1056;
  if (quality == "low") per_megapixel = 272;
  // standard/hd/uhd are size tiers, priced at the default (medium) quality.
  if (quality == "high") per_megapixel = 4160;
  const std::int64_t pixels = std::int64_t{spec.width} * spec.height;
  usage.output_image_tokens = (per_megapixel * pixels + (1 << 20) - 1) / (1 << 20);
  return usage;
}

}  // namespace ig::media
