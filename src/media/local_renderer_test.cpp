#include "media/local_renderer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vips/vips8>

#include "media/image_probe.h"

namespace ig::media {
namespace {

using vips::VImage;

class LocalRenderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(init_media()); }
};

RenderSpec spec_of(int w, int h, std::string prompt = "a red fox in the snow") {
  RenderSpec spec;
  spec.width = w;
  spec.height = h;
  spec.prompt = std::move(prompt);
  spec.model = "local-test";
  spec.quality = "high";
  spec.job_id = "job_0123456789";
  return spec;
}

VImage decode(const std::string& bytes) { return VImage::new_from_buffer(bytes, "").copy_memory(); }

// Encodes a synthetic RGB(A) image: `colour` everywhere, plus a diagonal bar so it has texture.
std::string make_image(int w, int h, std::vector<double> colour, const char* suffix = ".png") {
  VImage img = (VImage::black(w, h) + colour).cast(VIPS_FORMAT_UCHAR);
  img = img.copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
  void* buf = nullptr;
  std::size_t size = 0;
  img.write_to_buffer(suffix, &buf, &size);
  std::string out(static_cast<const char*>(buf), size);
  g_free(buf);
  return out;
}

// RGBA mask, opaque everywhere except a fully transparent rectangle (the area to edit).
std::string make_mask(int w, int h, int x, int y, int rw, int rh) {
  VImage opaque =
      (VImage::black(w, h, VImage::option()->set("bands", 4)) + 255).cast(VIPS_FORMAT_UCHAR);
  VImage hole = VImage::black(rw, rh, VImage::option()->set("bands", 4)).cast(VIPS_FORMAT_UCHAR);
  VImage mask = opaque.insert(hole, x, y)
                    .copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
  void* buf = nullptr;
  std::size_t size = 0;
  mask.write_to_buffer(".png", &buf, &size);
  std::string out(static_cast<const char*>(buf), size);
  g_free(buf);
  return out;
}

double mean_abs_diff(const VImage& a, const VImage& b) {
  return (a.cast(VIPS_FORMAT_FLOAT) - b.cast(VIPS_FORMAT_FLOAT)).abs().avg();
}

void expect_invalid_param(const Result<EncodedImage>& r, const char* param) {
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest) << r.error().message;
  EXPECT_EQ(r.error().param, std::optional<std::string>(param)) << r.error().message;
}

TEST_F(LocalRenderTest, ExactOutputSizes) {
  for (auto [w, h] :
       {std::pair{16, 16}, {17, 301}, {1024, 1024}, {1536, 1024}, {1024, 1536}, {3840, 2160}}) {
    auto image = render_image(spec_of(w, h));
    ASSERT_TRUE(image) << w << "x" << h << ": " << image.error().message;
    EXPECT_EQ(image->width, w);
    EXPECT_EQ(image->height, h);
    EXPECT_EQ(image->mime, "image/png");
    auto info = probe_image(image->bytes);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->type, ImageType::kPng);
    EXPECT_EQ(info->width, w);
    EXPECT_EQ(info->height, h);
    VImage decoded = decode(image->bytes);
    EXPECT_EQ(decoded.width(), w);
    EXPECT_EQ(decoded.height(), h);
    EXPECT_EQ(decoded.bands(), 3);
  }
}

TEST_F(LocalRenderTest, RejectsSizesOutsideTheRange) {
  for (auto [w, h] : {std::pair{15, 100}, {100, 15}, {3841, 100}, {100, 3841}, {0, 0}, {-5, 64}}) {
    expect_invalid_param(render_image(spec_of(w, h)), "size");
  }
  EXPECT_TRUE(render_image(spec_of(3840, 16)));
}

TEST_F(LocalRenderTest, EveryFormatDecodesAndProbeAgrees) {
  struct Case {
    OutputFormat format;
    ImageType type;
    const char* mime;
  };
  for (const Case& c : {Case{OutputFormat::kPng, ImageType::kPng, "image/png"},
                        Case{OutputFormat::kJpeg, ImageType::kJpeg, "image/jpeg"},
                        Case{OutputFormat::kWebp, ImageType::kWebp, "image/webp"}}) {
    RenderSpec spec = spec_of(640, 480);
    spec.format = c.format;
    auto image = render_image(spec);
    ASSERT_TRUE(image) << image.error().message;
    EXPECT_EQ(image->mime, c.mime);
    EXPECT_EQ(mime_type(c.format), c.mime);
    auto info = probe_image(image->bytes);
    ASSERT_TRUE(info) << info.error().message;
    EXPECT_EQ(info->type, c.type);
    EXPECT_EQ(info->width, 640);
    EXPECT_EQ(info->height, 480);
    VImage decoded = decode(image->bytes);
    EXPECT_EQ(decoded.width(), 640);
    EXPECT_EQ(decoded.height(), 480);
    EXPECT_FALSE(decoded.has_alpha());
  }
}

TEST_F(LocalRenderTest, OutputCompressionIsEncoderQuality) {
  RenderSpec spec = spec_of(512, 512);
  spec.format = OutputFormat::kJpeg;
  spec.compression = 10;
  auto low = render_image(spec);
  spec.compression = 100;
  auto high = render_image(spec);
  spec.compression.reset();
  auto dflt = render_image(spec);
  ASSERT_TRUE(low && high && dflt);
  EXPECT_LT(low->bytes.size(), high->bytes.size());
  EXPECT_EQ(high->bytes, dflt->bytes);  // OpenAI's default is 100
  spec.compression = 101;
  expect_invalid_param(render_image(spec), "output_compression");
  spec.compression = -1;
  expect_invalid_param(render_image(spec), "output_compression");
}

TEST_F(LocalRenderTest, TransparentBackground) {
  for (OutputFormat format : {OutputFormat::kPng, OutputFormat::kWebp}) {
    RenderSpec spec = spec_of(400, 300);
    spec.transparent = true;
    spec.format = format;
    auto image = render_image(spec);
    ASSERT_TRUE(image) << image.error().message;
    VImage decoded = decode(image->bytes);
    ASSERT_EQ(decoded.bands(), 4);
    EXPECT_TRUE(decoded.has_alpha());
    EXPECT_EQ(decoded.getpoint(0, 0)[3], 0);  // background
    EXPECT_EQ(decoded.getpoint(399, 299)[3], 0);
    EXPECT_GT(decoded.extract_band(3).max(), 200);  // text is opaque
  }
  RenderSpec jpeg = spec_of(400, 300);
  jpeg.transparent = true;
  jpeg.format = OutputFormat::kJpeg;
  expect_invalid_param(render_image(jpeg), "background");
}

TEST_F(LocalRenderTest, DeterministicAndPromptDependent) {
  auto a1 = render_image(spec_of(320, 240, "a lighthouse at dusk"));
  auto a2 = render_image(spec_of(320, 240, "a lighthouse at dusk"));
  auto b = render_image(spec_of(320, 240, "a bowl of ramen"));
  ASSERT_TRUE(a1 && a2 && b);
  EXPECT_EQ(a1->bytes, a2->bytes);
  // Compare the corners (outside the caption panel): the backgrounds differ visibly.
  VImage da = decode(a1->bytes).crop(0, 0, 320, 20);
  VImage db = decode(b->bytes).crop(0, 0, 320, 20);
  EXPECT_GT(mean_abs_diff(da, db), 10.0);
}

TEST_F(LocalRenderTest, HostileTextRenders) {
  std::string prompt = "<b>bold?</b> &amp; <span foreground='red'>x</span> \x01\x7f ";
  prompt += std::string("\xff\xfe\xc3", 3);  // invalid UTF-8
  prompt += std::string("nul\0byte", 8);
  prompt += std::string(32000 - prompt.size(), 'w');
  RenderSpec spec = spec_of(512, 256, prompt);
  spec.model = "<model>&";
  spec.job_id = std::string(500, '%');
  auto image = render_image(spec);
  ASSERT_TRUE(image) << image.error().message;
  EXPECT_EQ(decode(image->bytes).width(), 512);
  auto empty = render_image(spec_of(256, 256, ""));
  ASSERT_TRUE(empty) << empty.error().message;
}

TEST_F(LocalRenderTest, ChineseTextRendersAndSampleIsWritten) {
  // Transparent, so opaque pixels are exactly the text (the panel is translucent).
  auto opaque_text_pixels = [](const std::string& prompt) {
    RenderSpec spec = spec_of(512, 512, prompt);
    spec.transparent = true;
    auto image = render_image(spec);
    EXPECT_TRUE(image) << image.error().message;
    VImage alpha = decode(image->bytes).extract_band(3);
    return (alpha > 200).avg() / 255.0 * 512 * 512;
  };
  const double cjk = opaque_text_pixels("一只在雪地里奔跑的红色狐狸，水彩画风格，清晨的阳光");
  const double latin_short = opaque_text_pixels("fox");
  EXPECT_GT(cjk, latin_short + 2000) << cjk << " vs " << latin_short;

  RenderSpec sample = spec_of(1024, 1024,
                              "一只在雪地里奔跑的红色狐狸，水彩画风格 — a red fox running "
                              "through fresh snow, watercolor, morning light <&>");
  sample.model = "gpt-image-1";
  sample.job_id = "img_7f3a9c2b";
  auto image = render_image(sample);
  ASSERT_TRUE(image) << image.error().message;
  std::ofstream("/tmp/imagegate_local_sample.png", std::ios::binary) << image->bytes;
}

TEST_F(LocalRenderTest, FastEnough) {
  const auto start = std::chrono::steady_clock::now();
  auto image = render_image(spec_of(1024, 1024));
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  ASSERT_TRUE(image);
  std::printf("1024x1024 png rendered in %lld ms (this build)\n", static_cast<long long>(ms));
  EXPECT_LT(ms, 10000);  // generous: sanitizer builds are slow; release is far below 1 s
}

TEST_F(LocalRenderTest, ReferenceImagesShapeTheOutput) {
  RenderSpec spec = spec_of(384, 256);
  auto plain = render_image(spec);
  spec.reference_images = {make_image(300, 200, {220, 30, 30})};
  auto red = render_image(spec);
  spec.reference_images = {make_image(300, 200, {30, 30, 220}, ".jpg")};
  auto blue = render_image(spec);
  ASSERT_TRUE(plain && red && blue)
      << (red ? "" : red.error().message) << (blue ? "" : blue.error().message);
  VImage p = decode(plain->bytes).crop(0, 0, 384, 20);
  VImage r = decode(red->bytes).crop(0, 0, 384, 20);
  VImage b = decode(blue->bytes).crop(0, 0, 384, 20);
  EXPECT_GT(mean_abs_diff(r, b), 40.0);
  EXPECT_GT(mean_abs_diff(p, r), 20.0);
  EXPECT_GT(r.extract_band(0).avg(), r.extract_band(2).avg() + 40);  // red shows through

  // Several references (PNG, JPEG, WebP, one with alpha) tile the canvas.
  spec.reference_images = {make_image(64, 64, {255, 0, 0}), make_image(64, 64, {0, 255, 0}, ".jpg"),
                           make_image(64, 64, {0, 0, 255}, ".webp"),
                           make_image(64, 64, {255, 255, 0, 128})};
  auto tiled = render_image(spec);
  ASSERT_TRUE(tiled) << tiled.error().message;
  VImage t = decode(tiled->bytes);
  auto left_top = t.getpoint(2, 2);
  EXPECT_GT(left_top[0], left_top[2] + 40);  // the red tile
  EXPECT_GT(mean_abs_diff(t.crop(0, 0, 384, 20), r), 20.0);
}

TEST_F(LocalRenderTest, BadReferenceImages) {
  RenderSpec spec = spec_of(256, 256);
  spec.reference_images = {"this is a text file named x.png"};
  expect_invalid_param(render_image(spec), "image");
  std::string truncated = make_image(200, 200, {10, 200, 10});
  truncated.resize(truncated.size() / 2);
  spec.reference_images = {truncated};
  expect_invalid_param(render_image(spec), "image");
  std::string bomb("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\x01\x86\xa0\0\x01\x86\xa0\x08\x02\0\0\0",
                   29);  // claims 100000 x 100000
  spec.reference_images = {bomb};
  auto r = render_image(spec);
  expect_invalid_param(r, "image");
  EXPECT_NE(r.error().message.find("100000x100000"), std::string::npos);
  spec.reference_images.assign(17, make_image(16, 16, {0, 0, 0}));
  expect_invalid_param(render_image(spec), "image");
}

TEST_F(LocalRenderTest, MaskLimitsTheEditToItsTransparentArea) {
  const std::string ref = make_image(256, 256, {40, 160, 90});
  RenderSpec spec = spec_of(256, 256, "replace the middle with a sun");
  spec.reference_images = {ref};
  spec.mask = make_mask(256, 256, 64, 64, 128, 128);
  auto image = render_image(spec);
  ASSERT_TRUE(image) << image.error().message;
  VImage out = decode(image->bytes);
  VImage original = decode(ref);
  // Outside the hole: the reference, untouched. Inside: new content.
  EXPECT_LT(mean_abs_diff(out.crop(0, 0, 256, 48), original.crop(0, 0, 256, 48)), 2.0);
  EXPECT_LT(mean_abs_diff(out.crop(0, 208, 256, 48), original.crop(0, 208, 256, 48)), 2.0);
  EXPECT_GT(mean_abs_diff(out.crop(80, 80, 96, 96), original.crop(80, 80, 96, 96)), 20.0);

  // The same mask scaled with the image when the output size differs.
  spec.width = 512;
  spec.height = 384;
  auto scaled = render_image(spec);
  ASSERT_TRUE(scaled) << scaled.error().message;
  VImage s = decode(scaled->bytes);
  auto corner = s.getpoint(3, 3);
  EXPECT_NEAR(corner[0], 40, 3);
  EXPECT_NEAR(corner[1], 160, 3);
  EXPECT_NEAR(corner[2], 90, 3);
}

TEST_F(LocalRenderTest, BadMasks) {
  RenderSpec spec = spec_of(256, 256);
  spec.reference_images = {make_image(256, 256, {40, 160, 90})};
  spec.mask = make_mask(128, 256, 0, 0, 10, 10);
  auto r = render_image(spec);
  expect_invalid_param(r, "mask");
  EXPECT_EQ(r.error().message, "mask size 128x256 differs from image size 256x256");
  spec.mask = make_image(256, 256, {0, 0, 0});  // no alpha
  expect_invalid_param(render_image(spec), "mask");
  spec.mask = make_image(256, 256, {0, 0, 0, 0}, ".webp");  // not a PNG
  expect_invalid_param(render_image(spec), "mask");
  spec.mask = "garbage";
  expect_invalid_param(render_image(spec), "mask");
  spec.reference_images.clear();
  spec.mask = make_mask(256, 256, 0, 0, 10, 10);
  expect_invalid_param(render_image(spec), "mask");
}

TEST_F(LocalRenderTest, PartialImages) {
  for (OutputFormat format : {OutputFormat::kPng, OutputFormat::kJpeg, OutputFormat::kWebp}) {
    RenderSpec spec = spec_of(300, 200);
    spec.format = format;
    auto final_image = render_image(spec);
    ASSERT_TRUE(final_image);
    for (int count = 0; count <= 3; ++count) {
      auto partials = render_partials(spec, *final_image, count);
      ASSERT_TRUE(partials) << partials.error().message;
      ASSERT_EQ(partials->size(), static_cast<std::size_t>(count));
      VImage full = decode(final_image->bytes);
      double previous = 1e9;
      for (const EncodedImage& partial : *partials) {
        EXPECT_EQ(partial.mime, final_image->mime);
        EXPECT_EQ(partial.width, 300);
        EXPECT_EQ(partial.height, 200);
        auto info = probe_image(partial.bytes);
        ASSERT_TRUE(info);
        EXPECT_EQ(info->type, probe_image(final_image->bytes)->type);
        VImage decoded = decode(partial.bytes);
        ASSERT_EQ(decoded.width(), 300);
        ASSERT_EQ(decoded.height(), 200);
        const double distance = mean_abs_diff(decoded, full);
        EXPECT_LT(distance, previous);  // increasingly sharp
        EXPECT_GT(distance, 0.5);
        previous = distance;
      }
    }
    EXPECT_FALSE(render_partials(spec, *final_image, 4));
    auto negative = render_partials(spec, *final_image, -1);
    ASSERT_FALSE(negative);
    EXPECT_EQ(negative.error().param, "partial_images");
  }
  RenderSpec transparent = spec_of(64, 64);
  transparent.transparent = true;
  auto final_image = render_image(transparent);
  ASSERT_TRUE(final_image);
  auto partials = render_partials(transparent, *final_image, 2);
  ASSERT_TRUE(partials);
  for (const EncodedImage& partial : *partials) EXPECT_EQ(decode(partial.bytes).bands(), 4);
}

TEST_F(LocalRenderTest, ConcurrentRendersAreIndependent) {
  // The server renders on a pool; libvips and Pango must not mix state between calls.
  RenderSpec spec = spec_of(320, 200, "并发渲染 concurrent render");
  auto expected = render_image(spec);
  ASSERT_TRUE(expected);
  std::vector<std::string> outputs(4);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < 3; ++round) {
        auto image = render_image(spec);
        outputs[i] = image ? image->bytes : "error: " + image.error().message;
        if (outputs[i] != expected->bytes) return;
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const std::string& out : outputs) EXPECT_TRUE(out == expected->bytes) << out.substr(0, 80);
}

TEST(LocalUsageTest, Deterministic) {
  RenderSpec spec = spec_of(1024, 1024, "abcdefgh");
  TokenUsage a = local_usage(spec);
  TokenUsage b = local_usage(spec);
  EXPECT_EQ(a.input_text_tokens, b.input_text_tokens);
  EXPECT_EQ(a.output_image_tokens, b.output_image_tokens);
  EXPECT_EQ(a.input_text_tokens, 2);
  EXPECT_EQ(a.input_image_tokens, 0);
  EXPECT_EQ(a.output_image_tokens, 4160);
  spec.quality = "low";
  spec.width = 1536;
  spec.reference_images = {"x", "y"};
  spec.mask = "m";
  spec.prompt = "";
  TokenUsage c = local_usage(spec);
  EXPECT_EQ(c.input_text_tokens, 1);
  EXPECT_EQ(c.input_image_tokens, 768);
  EXPECT_EQ(c.output_image_tokens, 408);
  spec.quality = "";
  EXPECT_EQ(local_usage(spec).output_image_tokens, 1584);
}

TEST(OutputFormatTest, Parse) {
  EXPECT_EQ(parse_output_format("png"), OutputFormat::kPng);
  EXPECT_EQ(parse_output_format("jpeg"), OutputFormat::kJpeg);
  EXPECT_EQ(parse_output_format("jpg"), OutputFormat::kJpeg);
  EXPECT_EQ(parse_output_format("webp"), OutputFormat::kWebp);
  EXPECT_FALSE(parse_output_format("gif"));
  EXPECT_EQ(format_name(OutputFormat::kWebp), "webp");
}

}  // namespace
}  // namespace ig::media
