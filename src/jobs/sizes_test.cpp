#include "jobs/sizes.h"

#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "core/text.h"

namespace ig::jobs {
namespace {

struct Row {
  const char* ratio;
  ImageSize k1;
  ImageSize k2;
  ImageSize k4;
};

// Seed 004's "常用尺寸组合" table, verbatim (30 entries).
const std::vector<Row> kSeed004 = {
    {"1:1", {1024, 1024}, {2048, 2048}, {2880, 2880}},
    {"16:9", {1280, 720}, {2048, 1152}, {3840, 2160}},
    {"9:16", {720, 1280}, {1152, 2048}, {2160, 3840}},
    {"5:4", {1040, 832}, {2080, 1664}, {3200, 2560}},
    {"4:5", {832, 1040}, {1664, 2080}, {2560, 3200}},
    {"4:3", {1024, 768}, {2048, 1536}, {3264, 2448}},
    {"3:4", {768, 1024}, {1536, 2048}, {2448, 3264}},
    {"3:2", {1008, 672}, {2064, 1376}, {3504, 2336}},
    {"2:3", {672, 1008}, {1376, 2064}, {2336, 3504}},
    {"21:9", {1344, 576}, {2016, 864}, {3808, 1632}},
};

// Not in the seed; derived with the seed's own rule (see derive_table_size).
const std::vector<Row> kDerived = {
    {"9:21", {576, 1344}, {864, 2016}, {1632, 3808}},
    {"2:1", {1152, 576}, {2048, 1024}, {3840, 1920}},
    {"1:2", {576, 1152}, {1024, 2048}, {1920, 3840}},
};

std::vector<Row> all_rows() {
  auto rows = kSeed004;
  rows.insert(rows.end(), kDerived.begin(), kDerived.end());
  return rows;
}

ImageSize at(const Row& row, Tier tier) {
  return tier == Tier::k1K ? row.k1 : tier == Tier::k2K ? row.k2 : row.k4;
}

const char* quality_of(Tier tier) {
  return tier == Tier::k1K ? "standard" : tier == Tier::k2K ? "hd" : "uhd";
}

ModelCapabilities restricted_4k() {
  ModelCapabilities caps;
  caps.ratios_at_4k = {"16:9", "9:16", "2:1", "1:2", "21:9", "9:21"};
  return caps;
}

// Seed 002's fixed size list.
ModelCapabilities seed002() {
  ModelCapabilities caps;
  caps.allowed_sizes = {"1024x1024", "1536x1024", "1024x1536", "1920x1088",
                        "1088x1920", "3824x2160", "2160x3824", "auto"};
  return caps;
}

void expect_invalid(const Result<ResolvedSize>& r, const std::string& param,
                    const std::string& context) {
  ASSERT_FALSE(r.has_value()) << context << " resolved to " << r->label;
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest) << context;
  EXPECT_EQ(r.error().param, param) << context << ": " << r.error().message;
}

Result<ResolvedSize> size_only(const std::string& size, const ModelCapabilities& caps = {}) {
  return resolve_size({.size = size}, caps);
}

TEST(SizesTest, TableIsSeed004) {
  EXPECT_EQ(kRatioNames.size(), 13u);
  for (const auto& row : kSeed004) {
    for (Tier tier : kTiers) {
      EXPECT_EQ(table_size(row.ratio, tier), at(row, tier)) << row.ratio << " " << to_string(tier);
    }
  }
  for (const auto& row : kDerived) {
    for (Tier tier : kTiers) EXPECT_EQ(table_size(row.ratio, tier), at(row, tier)) << row.ratio;
  }
}

TEST(SizesTest, DerivationRuleReproducesEverySeedEntry) {
  for (const auto& row : all_rows()) {
    const std::string ratio = row.ratio;
    const int w = std::stoi(ratio.substr(0, ratio.find(':')));
    const int h = std::stoi(ratio.substr(ratio.find(':') + 1));
    for (Tier tier : kTiers) {
      EXPECT_EQ(derive_table_size(w, h, tier), at(row, tier)) << ratio << " " << to_string(tier);
    }
  }
}

TEST(SizesTest, EveryTableSizeIsValidAndReducesToItsRatio) {
  for (const auto& row : all_rows()) {
    for (Tier tier : kTiers) {
      const ImageSize s = at(row, tier);
      EXPECT_TRUE(validate_size(s).has_value()) << format_size(s);
      EXPECT_EQ(exact_ratio(s), std::string_view(row.ratio)) << format_size(s);
      EXPECT_EQ(nearest_ratio(s), std::string_view(row.ratio)) << format_size(s);
    }
  }
}

TEST(SizesTest, EveryRatioTimesTierResolvesThroughEveryField) {
  for (const auto& row : all_rows()) {
    for (Tier tier : kTiers) {
      const ImageSize want = at(row, tier);
      const std::string ctx = std::string(row.ratio) + " " + std::string(to_string(tier));
      const std::vector<SizeRequest> requests = {
          {.size = row.ratio, .quality = quality_of(tier)},                 // seed 000
          {.size = row.ratio, .resolution = std::string(to_string(tier))},  // size + resolution
          {.resolution = std::string(to_string(tier)), .aspect_ratio = row.ratio},  // seed 001
          {.size = "auto",
           .resolution = to_lower_ascii(to_string(tier)),
           .aspect_ratio = row.ratio},  // seed 003 ("1k", "4k")
      };
      for (const auto& req : requests) {
        auto r = resolve_size(req, {});
        ASSERT_TRUE(r.has_value()) << ctx << ": " << r.error().message;
        EXPECT_EQ(r->size, want) << ctx;
        EXPECT_EQ(r->tier, tier) << ctx;
        EXPECT_EQ(r->label, format_size(want)) << ctx;
        EXPECT_EQ(r->ratio, std::string(row.ratio)) << ctx;
        EXPECT_EQ(r->quality, "") << ctx;
      }
    }
  }
}

TEST(SizesTest, RatioWithoutTierIsTheModelDefaultTier) {
  auto r = resolve_size({.aspect_ratio = "16:9"}, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->label, "1280x720");
  EXPECT_EQ(r->tier, Tier::k1K);
  ModelCapabilities caps;
  caps.default_tier = Tier::k2K;
  r = resolve_size({.size = "16:9"}, caps);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->label, "2048x1152");
}

TEST(SizesTest, OpenAiQualitiesDoNotSetATier) {
  for (const char* q : {"low", "medium", "high", "auto", "HIGH"}) {
    auto r = resolve_size({.size = "16:9", .quality = q}, {});
    ASSERT_TRUE(r) << q;
    EXPECT_EQ(r->label, "1280x720") << q;
    EXPECT_EQ(r->tier, Tier::k1K) << q;
    EXPECT_EQ(r->quality, to_lower_ascii(q)) << q;
  }
  // Seed 001: quality is the rendering quality, resolution the tier.
  auto r = resolve_size({.quality = "medium", .resolution = "2K", .aspect_ratio = "9:16"}, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->label, "1152x2048");
  EXPECT_EQ(r->tier, Tier::k2K);
  EXPECT_EQ(r->quality, "medium");
}

TEST(SizesTest, TierQualitiesAndResolutionsInAnyCase) {
  EXPECT_EQ(resolve_size({.size = "1:1", .quality = "HD"}, {})->label, "2048x2048");
  EXPECT_EQ(resolve_size({.size = "1:1", .resolution = "4k"}, {})->label, "2880x2880");
  EXPECT_EQ(resolve_size({.size = "1:1", .resolution = "2k"}, {})->label, "2048x2048");
  EXPECT_EQ(parse_tier("1k"), Tier::k1K);
  EXPECT_EQ(parse_tier("4K"), Tier::k4K);
  EXPECT_FALSE(parse_tier("8K").has_value());
  EXPECT_FALSE(parse_tier("1080p").has_value());
}

TEST(SizesTest, BadQualityResolutionAspectRatio) {
  expect_invalid(resolve_size({.quality = "ultra"}, {}), "quality", "ultra");
  expect_invalid(resolve_size({.quality = ""}, {}), "quality", "empty quality");
  for (const char* res : {"8K", "", "1080p", " 1K", "1K "}) {
    expect_invalid(resolve_size({.resolution = res}, {}), "resolution", res);
  }
  for (const char* ar : {"16:10", "1:3", "", "16/9", "16 : 9", "1:1 ", "0:0"}) {
    expect_invalid(resolve_size({.aspect_ratio = ar}, {}), "aspect_ratio", ar);
  }
  // Quality and resolution naming different tiers.
  expect_invalid(resolve_size({.quality = "hd", .resolution = "4K"}, {}), "resolution", "hd vs 4K");
  EXPECT_TRUE(resolve_size({.quality = "hd", .resolution = "2k"}, {}));
  // A model that only takes some qualities.
  ModelCapabilities caps;
  caps.qualities = {"standard", "hd", "uhd"};
  expect_invalid(resolve_size({.quality = "high"}, caps), "quality", "high not offered");
  EXPECT_TRUE(resolve_size({.quality = "uhd", .aspect_ratio = "16:9"}, caps));
}

TEST(SizesTest, WxhTierFromLongEdge) {
  struct Case {
    const char* size;
    Tier tier;
  };
  for (const Case& c :
       {Case{"1024x1024", Tier::k1K}, Case{"1536x1024", Tier::k1K}, Case{"1024x1536", Tier::k1K},
        Case{"1552x1024", Tier::k2K}, Case{"2048x2048", Tier::k2K}, Case{"2048x1152", Tier::k2K},
        Case{"1152x2048", Tier::k2K}, Case{"2064x1376", Tier::k4K}, Case{"3840x2160", Tier::k4K},
        Case{"2160x3840", Tier::k4K}, Case{"1792x1024", Tier::k2K}}) {
    auto r = size_only(c.size);
    ASSERT_TRUE(r) << c.size << ": " << r.error().message;
    EXPECT_EQ(r->label, c.size);
    EXPECT_EQ(format_size(r->size), c.size);
    EXPECT_EQ(r->tier, c.tier) << c.size;
  }
  EXPECT_EQ(size_only("1536x1024")->ratio, "3:2");
  EXPECT_FALSE(size_only("1792x1024")->ratio.has_value());  // 7:4 is not one of the 13
}

TEST(SizesTest, InvalidWxh) {
  for (const char* bad : {"1000x1000",  // not multiples of 16
                          "4000x2000",  // longest side > 3840
                          "3840x1024",  // ratio 3.75 > 3:1
                          "0x0",
                          "-1024x1024",
                          "+1024x1024",
                          "1024X1024",
                          " 1024x1024",
                          "1024x1024 ",
                          "1024x",
                          "x1024",
                          "x",
                          "1024",
                          "99999999999x1",
                          "1x99999999999",
                          "99999999999999999999x16",
                          "1024x1024x1",
                          "01024x1024",
                          "1024x01024",
                          "1024*1024",
                          "1024\xc3\x97"
                          "1024",
                          "",
                          "1024.0x1024",
                          "16:10",
                          "4:1",
                          "1:1:1",
                          "0x1024",
                          "1024x0",
                          "16x16",
                          "3856x2160",  // longest side 3856
                          "1024x320"}) {
    expect_invalid(size_only(bad), "size", std::string("'") + bad + "'");
  }
}

TEST(SizesTest, Boundaries) {
  // Pixel count: 655,360 and 8,294,400 inclusive.
  EXPECT_TRUE(size_only("1024x640"));  // 655,360 exactly
  EXPECT_TRUE(size_only("640x1024"));
  expect_invalid(size_only("1024x624"), "size", "638,976 pixels");
  expect_invalid(size_only("1008x640"), "size", "645,120 pixels");
  EXPECT_TRUE(size_only("3840x2160"));  // 8,294,400 exactly
  EXPECT_TRUE(size_only("2880x2880"));  // 8,294,400 exactly
  expect_invalid(size_only("2896x2880"), "size", "8,340,480 pixels");
  expect_invalid(size_only("3840x2176"), "size", "8,355,840 pixels");
  // Aspect ratio: 3:1 exactly is fine, a step beyond is not.
  EXPECT_TRUE(size_only("1536x512"));
  EXPECT_TRUE(size_only("512x1536"));
  EXPECT_TRUE(size_only("3840x1280"));
  expect_invalid(size_only("1552x512"), "size", "ratio 3.03");
  expect_invalid(size_only("3840x1264"), "size", "ratio 3.04");
  // Longest side 3840 exactly.
  EXPECT_TRUE(size_only("3840x1920"));
  EXPECT_EQ(validate_size({3840, 2160})->width, 3840);
  EXPECT_FALSE(validate_size({-16, 1024}));
}

TEST(SizesTest, FourKRatiosArePerModel) {
  // Unrestricted model: 1:1 at 4K is fine.
  EXPECT_EQ(resolve_size({.size = "1:1", .quality = "uhd"}, {})->label, "2880x2880");
  const auto caps = restricted_4k();
  expect_invalid(resolve_size({.size = "1:1", .quality = "uhd"}, caps), "size", "uhd 1:1");
  expect_invalid(resolve_size({.size = "4:3", .resolution = "4K"}, caps), "size", "4K 4:3");
  expect_invalid(resolve_size({.resolution = "4k", .aspect_ratio = "1:1"}, caps), "aspect_ratio",
                 "seed 003 4k 1:1");
  expect_invalid(size_only("2880x2880", caps), "size", "explicit 4K square");
  expect_invalid(resolve_size({.size = "1024x1024", .quality = "uhd"}, caps), "size",
                 "1024x1024 rescaled to 4K");
  // Seed 003: resolution=4k needs an explicit ratio; auto falls back to the 1:1 default.
  expect_invalid(resolve_size({.resolution = "4k", .aspect_ratio = "auto"}, caps), "aspect_ratio",
                 "4k + auto");
  // With no size sent, the field that asked for 4K is named.
  expect_invalid(resolve_size({.quality = "uhd"}, caps), "quality", "uhd alone");
  expect_invalid(resolve_size({.resolution = "4k"}, caps), "resolution", "4k alone");
  // A 4K WxH must be close (2 %) to an allowed ratio, not merely nearest to one.
  for (const char* size : {"3840x1280", "1280x3840", "3840x1728", "3840x2880"}) {
    expect_invalid(size_only(size, caps), "size", size);
  }
  for (const char* size : {"3824x2160", "3600x2000", "3840x1648", "2160x3824", "3840x1920"}) {
    auto r = size_only(size, caps);
    ASSERT_TRUE(r) << size << ": " << r.error().message;
    EXPECT_EQ(r->tier, Tier::k4K) << size;
  }
  // An unrestricted model takes any valid 4K size.
  EXPECT_EQ(size_only("3840x1280", {})->tier, Tier::k4K);
  // Allowed ratios still work, and lower tiers are unrestricted.
  for (const char* ratio : {"16:9", "9:16", "2:1", "1:2", "21:9", "9:21"}) {
    auto r = resolve_size({.size = ratio, .quality = "uhd"}, caps);
    ASSERT_TRUE(r) << ratio;
    EXPECT_EQ(r->tier, Tier::k4K);
    EXPECT_EQ(r->size, *table_size(ratio, Tier::k4K));
  }
  EXPECT_EQ(size_only("3840x2160", caps)->tier, Tier::k4K);
  EXPECT_EQ(resolve_size({.size = "1:1", .quality = "hd"}, caps)->label, "2048x2048");
}

TEST(SizesTest, AutoWithoutReferenceIsTheDefault) {
  for (const SizeRequest& req :
       {SizeRequest{}, SizeRequest{.size = "auto"}, SizeRequest{.size = "AUTO"},
        SizeRequest{.aspect_ratio = "auto"}, SizeRequest{.quality = "high"}}) {
    auto r = resolve_size(req, {});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->label, "1024x1024");
    EXPECT_EQ(r->tier, Tier::k1K);
    EXPECT_EQ(r->ratio, "1:1");
  }
  ModelCapabilities caps;
  caps.default_size = "1536x1024";
  EXPECT_EQ(resolve_size({.size = "auto"}, caps)->label, "1536x1024");
  // A tier hint rescales the default's ratio (seed 000: quality sets the pixel size).
  EXPECT_EQ(resolve_size({.quality = "hd"}, {})->label, "2048x2048");
  EXPECT_EQ(resolve_size({.size = "auto", .resolution = "2K"}, caps)->label, "2064x1376");
  caps.default_size = "bogus";
  auto r = resolve_size({}, caps);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInternal);
}

TEST(SizesTest, AutoFollowsTheReferenceImage) {
  // 1000x700 = 1.43: 3:2 (x1.05) is nearer than 4:3 (x1.07).
  auto r = resolve_size({.size = "auto", .reference_image = ImageSize{1000, 700}}, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->label, "1008x672");
  EXPECT_EQ(r->ratio, "3:2");
  EXPECT_EQ(resolve_size({.quality = "hd", .reference_image = ImageSize{1000, 700}}, {})->label,
            "2064x1376");
  // Portrait phone photo 3024x4032 = 3:4 exactly (too large to keep as it is).
  EXPECT_EQ(resolve_size({.reference_image = ImageSize{3024, 4032}}, {})->label, "768x1024");
  // A reference that is itself a valid size keeps it, billed by its long edge.
  for (auto [w, h, tier] : {std::tuple{1536, 1024, Tier::k1K}, std::tuple{2048, 1152, Tier::k2K},
                            std::tuple{1024, 1536, Tier::k1K}, std::tuple{3840, 2160, Tier::k4K}}) {
    auto own = resolve_size({.size = "auto", .reference_image = ImageSize{w, h}}, {});
    ASSERT_TRUE(own) << w << "x" << h;
    EXPECT_EQ(own->size, (ImageSize{w, h}));
    EXPECT_EQ(own->tier, tier) << w << "x" << h;
  }
  // ...unless the model refuses that size: then the nearest ratio at the default tier.
  EXPECT_EQ(resolve_size({.reference_image = ImageSize{2880, 2880}}, restricted_4k())->label,
            "1024x1024");
  EXPECT_EQ(resolve_size({.reference_image = ImageSize{1536, 1024}}, seed002())->label,
            "1536x1024");
  // 4K on a restricted model: only the allowed ratios are candidates.
  const auto caps = restricted_4k();
  r = resolve_size({.quality = "uhd", .reference_image = ImageSize{3000, 1000}}, caps);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ratio, "21:9");  // 3.0: 21:9 (x1.29) beats 2:1 (x1.5)
  EXPECT_EQ(r->label, "3808x1632");
  // A square reference at 4K: 16:9 and 9:16 tie; the earlier ratio wins.
  r = resolve_size({.resolution = "4K", .reference_image = ImageSize{1000, 1000}}, caps);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->label, "3840x2160");
  // An explicit ratio beats the reference image.
  EXPECT_EQ(
      resolve_size({.aspect_ratio = "1:1", .reference_image = ImageSize{1600, 900}}, {})->label,
      "1024x1024");
  expect_invalid(resolve_size({.reference_image = ImageSize{0, 700}}, {}), "image", "0 width");
}

TEST(SizesTest, ConflictingRatioFields) {
  expect_invalid(resolve_size({.size = "16:9", .aspect_ratio = "9:16"}, {}), "aspect_ratio",
                 "16:9 vs 9:16");
  expect_invalid(resolve_size({.size = "1024x1024", .aspect_ratio = "16:9"}, {}), "aspect_ratio",
                 "square vs 16:9");
  EXPECT_EQ(resolve_size({.size = "1280x720", .aspect_ratio = "16:9"}, {})->label, "1280x720");
  EXPECT_EQ(resolve_size({.size = "16:9", .aspect_ratio = "16:9"}, {})->label, "1280x720");
}

TEST(SizesTest, WxhWithADifferentTierHint) {
  // Seed 000: "the pixel resolution is set by quality": a table ratio is rescaled.
  auto r = resolve_size({.size = "1024x1024", .quality = "hd"}, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->label, "2048x2048");
  EXPECT_EQ(r->tier, Tier::k2K);
  EXPECT_EQ(resolve_size({.size = "1536x1024", .quality = "uhd"}, {})->label, "3504x2336");
  // Matching hint: honoured exactly.
  EXPECT_EQ(resolve_size({.size = "1792x1024", .quality = "hd"}, {})->label, "1792x1024");
  EXPECT_EQ(resolve_size({.size = "1024x1024", .quality = "standard"}, {})->label, "1024x1024");
  // A ratio outside the table cannot be rescaled.
  expect_invalid(resolve_size({.size = "1792x1024", .quality = "standard"}, {}), "quality",
                 "7:4 at 1K");
  expect_invalid(resolve_size({.size = "1792x1024", .resolution = "4K"}, {}), "resolution",
                 "7:4 at 4K");
}

TEST(SizesTest, Seed002FixedListIsAValidCapability) {
  const auto caps = seed002();
  EXPECT_TRUE(validate_capabilities(caps).has_value());
  for (const char* size : {"1024x1024", "1536x1024", "1024x1536", "1920x1088", "1088x1920",
                           "3824x2160", "2160x3824"}) {
    auto r = size_only(size, caps);
    ASSERT_TRUE(r) << size << ": " << r.error().message;
    EXPECT_EQ(r->label, size);
  }
  EXPECT_EQ(size_only("3824x2160", caps)->tier, Tier::k4K);
  EXPECT_EQ(size_only("1920x1088", caps)->tier, Tier::k2K);
  EXPECT_EQ(size_only("auto", caps)->label, "1024x1024");
  expect_invalid(size_only("2048x2048", caps), "size", "valid but not listed");
  expect_invalid(size_only("1280x720", caps), "size", "valid but not listed");
  // Ratios map to the listed size of that ratio at the tier.
  EXPECT_EQ(resolve_size({.size = "16:9", .quality = "uhd"}, caps)->label, "3824x2160");
  EXPECT_EQ(resolve_size({.size = "9:16", .resolution = "2K"}, caps)->label, "1088x1920");
  EXPECT_EQ(resolve_size({.size = "3:2"}, caps)->label, "1536x1024");
  expect_invalid(resolve_size({.size = "16:9"}, caps), "size", "no 16:9 at 1K");
  expect_invalid(resolve_size({.resolution = "4K", .aspect_ratio = "21:9"}, caps), "aspect_ratio",
                 "no 21:9 at 4K");
  // auto + reference: the listed size at the tier nearest the reference's aspect.
  EXPECT_EQ(resolve_size({.reference_image = ImageSize{1600, 900}}, caps)->label, "1536x1024");
  EXPECT_EQ(
      resolve_size({.resolution = "4K", .reference_image = ImageSize{900, 1600}}, caps)->label,
      "2160x3824");
}

TEST(SizesTest, CapabilityValidation) {
  EXPECT_TRUE(validate_capabilities({}).has_value());
  EXPECT_TRUE(validate_capabilities(restricted_4k()).has_value());
  auto param_of = [](const ModelCapabilities& caps) {
    auto r = validate_capabilities(caps);
    return r ? std::string("ok") : r.error().param.value_or("");
  };
  ModelCapabilities caps;
  caps.ratios_at_4k = {"16:10"};
  EXPECT_EQ(param_of(caps), "ratios_at_4k");
  caps = {};
  caps.allowed_sizes = {"1000x1000"};
  EXPECT_EQ(param_of(caps), "allowed_sizes");
  caps = {};
  caps.allowed_sizes = {"1536x1024"};
  EXPECT_EQ(param_of(caps), "default_size");
  caps = {};
  caps.qualities = {"ultra"};
  EXPECT_EQ(param_of(caps), "qualities");
  caps = {};
  caps.output_formats = {"gif"};
  EXPECT_EQ(param_of(caps), "output_formats");
  caps = {};
  caps.max_n = 0;
  EXPECT_EQ(param_of(caps), "max_n");
}

TEST(SizesTest, NearestAndExactRatio) {
  EXPECT_EQ(exact_ratio({1344, 576}), "21:9");
  EXPECT_FALSE(exact_ratio({1920, 1088}).has_value());
  EXPECT_EQ(nearest_ratio({1920, 1088}), "16:9");
  EXPECT_EQ(nearest_ratio({3824, 2160}), "16:9");
  EXPECT_EQ(nearest_ratio({1000, 1000}, {"16:9", "9:16"}), "16:9");
  EXPECT_EQ(nearest_ratio({100000, 1}), "21:9");
  EXPECT_EQ(nearest_ratio({2147483647, 2147483646}), "1:1");
}

}  // namespace
}  // namespace ig::jobs
