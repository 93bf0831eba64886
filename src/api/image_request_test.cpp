#include "api/image_request.h"

#include <gtest/gtest.h>

namespace ig::api {
namespace {

Error parse_error(std::string_view body) {
  auto r = parse_image_json(body, false);
  EXPECT_FALSE(r.has_value()) << body;
  return r ? Error{} : r.error();
}

TEST(ImageRequestTest, ParsesOpenAiGeneration) {
  auto r = parse_image_json(
      R"({"model":"gpt-image-2","prompt":"a cat","n":2,"size":"1536x1024","quality":"high",
          "background":"transparent","output_format":"webp","output_compression":80,
          "response_format":"url","stream":true,"partial_images":2,"user":"u1",
          "moderation":"low","unknown_extra":{"x":1},"style":null})",
      false);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->model, "gpt-image-2");
  EXPECT_EQ(r->prompt, "a cat");
  EXPECT_EQ(r->n, 2);
  EXPECT_EQ(r->size, "1536x1024");
  EXPECT_EQ(r->quality, "high");
  EXPECT_EQ(r->background, "transparent");
  EXPECT_EQ(r->output_format, "webp");
  EXPECT_EQ(r->output_compression, 80);
  EXPECT_EQ(r->response_format, "url");
  EXPECT_TRUE(r->stream);
  EXPECT_EQ(r->partial_images, 2);
  EXPECT_EQ(r->user, "u1");
  EXPECT_FALSE(r->is_edit());
}

TEST(ImageRequestTest, ReferenceImageMakesAnEdit) {
  auto r = parse_image_json(
      R"({"model":"m","prompt":"p","image_urls":["https://x/a.png","data:image/png;base64,AAAA"]})",
      false);
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->images.size(), 2u);
  EXPECT_EQ(r->images[0].kind, ImageSource::Kind::kUrl);
  EXPECT_EQ(r->images[1].kind, ImageSource::Kind::kDataUrl);
  EXPECT_EQ(r->images[0].field, "image_urls");
  EXPECT_TRUE(r->is_edit());
}

TEST(ImageRequestTest, JsonEditShapes) {
  auto r = parse_image_json(
      R"({"model":"m","prompt":"p","images":[{"image_url":"https://x/a.png"}],
          "mask":{"image_url":"https://x/m.png"}})",
      true);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  ASSERT_EQ(r->images.size(), 1u);
  ASSERT_TRUE(r->mask.has_value());
  EXPECT_EQ(r->mask->value, "https://x/m.png");
  auto b = parse_image_json(R"({"model":"m","prompt":"p","image_base64":"iVBORw0K","mask_url":"https://x/m.png"})", true);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->images[0].kind, ImageSource::Kind::kBase64);
  EXPECT_EQ(b->mask->field, "mask_url");
}

TEST(ImageRequestTest, Seed003InputObject) {
  auto r = parse_image_json(
      R"({"model":"gpt-image-2","callback_url":"https://h/cb","input":{"prompt":"room",
          "image_urls":["https://x/room.jpg"],"aspect_ratio":"3:2","resolution":"4K",
          "nsfw_checker":true}})",
      false);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_TRUE(r->input_object);
  EXPECT_EQ(r->prompt, "room");
  EXPECT_EQ(r->aspect_ratio, "3:2");
  EXPECT_EQ(r->resolution, "4k");
  EXPECT_EQ(r->callback_url, "https://h/cb");
  EXPECT_EQ(r->nsfw_checker, true);
  EXPECT_EQ(r->images.size(), 1u);
  EXPECT_EQ(parse_error(R"({"model":"m","input":"x"})").param, "input");
}

TEST(ImageRequestTest, BadValuesNameTheField) {
  struct Case {
    const char* body;
    const char* param;
  };
  for (const Case& c : {
           Case{R"({"n":0})", "n"},
           Case{R"({"n":11})", "n"},
           Case{R"({"n":"2"})", "n"},
           Case{R"({"n":1.5})", "n"},
           Case{R"({"quality":"ultra"})", "quality"},
           Case{R"({"output_compression":101})", "output_compression"},
           Case{R"({"output_compression":-1})", "output_compression"},
           Case{R"({"background":"transparent","output_format":"jpeg"})", "background"},
           Case{R"({"background":"clear"})", "background"},
           Case{R"({"output_format":"gif"})", "output_format"},
           Case{R"({"response_format":"png"})", "response_format"},
           Case{R"({"partial_images":4})", "partial_images"},
           Case{R"({"stream":"yes"})", "stream"},
           Case{R"({"prompt":7})", "prompt"},
           Case{R"({"resolution":"8K"})", "resolution"},
           Case{R"({"image_urls":"https://x"})", "image_urls"},
           Case{R"({"image_urls":[1]})", "image_urls"},
           Case{R"({"mask":5})", "mask"},
       }) {
    Error e = parse_error(c.body);
    EXPECT_EQ(e.code, ErrorCode::kInvalidRequest) << c.body;
    EXPECT_EQ(e.param.value_or("<none>"), c.param) << c.body << ": " << e.message;
  }
}

TEST(ImageRequestTest, LimitsPromptAndReferenceCount) {
  std::string long_prompt(32'001, 'a');
  EXPECT_EQ(parse_error(R"({"prompt":")" + long_prompt + "\"}").param, "prompt");
  std::string ok_cjk;
  for (int i = 0; i < 32'000; ++i) ok_cjk += "\xe7\x8c\xab";  // 猫: 3 bytes, 1 character
  EXPECT_TRUE(parse_image_json(R"({"prompt":")" + ok_cjk + "\"}", false).has_value());
  std::string urls = "[";
  for (int i = 0; i < 17; ++i) urls += std::string(i ? "," : "") + "\"https://x/" + std::to_string(i) + ".png\"";
  urls += "]";
  EXPECT_EQ(parse_error(R"({"image_urls":)" + urls + "}").param, "image_urls");
}

TEST(ImageRequestTest, MalformedJson) {
  EXPECT_EQ(parse_error("{").code, ErrorCode::kInvalidRequest);
  EXPECT_EQ(parse_error("[1,2]").code, ErrorCode::kInvalidRequest);
  EXPECT_EQ(parse_error("").code, ErrorCode::kInvalidRequest);
}

TEST(ImageRequestTest, MultipartFields) {
  std::vector<http::MultipartPart> parts;
  parts.push_back({"model", std::nullopt, "text/plain", "gpt-image-2"});
  parts.push_back({"prompt", std::nullopt, "text/plain", "edit it"});
  parts.push_back({"n", std::nullopt, "text/plain", "2"});
  parts.push_back({"stream", std::nullopt, "text/plain", "true"});
  parts.push_back({"image[]", std::string("a.png"), "image/png", "PNGDATA1"});
  parts.push_back({"image[]", std::string("b.png"), "image/png", "PNGDATA2"});
  parts.push_back({"mask", std::string("m.png"), "image/png", "MASK"});
  auto r = parse_image_multipart(parts, true);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->n, 2);
  EXPECT_TRUE(r->stream);
  ASSERT_EQ(r->images.size(), 2u);
  EXPECT_EQ(r->images[1].value, "PNGDATA2");
  EXPECT_EQ(r->images[1].kind, ImageSource::Kind::kUpload);
  ASSERT_TRUE(r->mask.has_value());
  EXPECT_EQ(r->mask->value, "MASK");

  std::vector<http::MultipartPart> bad = {{"n", std::nullopt, "text/plain", "two"}};
  auto e = parse_image_multipart(bad, true);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().param, "n");
}

TEST(ImageRequestTest, AFilePartWithoutAFilenameIsStillAFile) {
  // The OpenAI SDK sends a File with an empty name as a part with a Content-Type and no filename.
  std::vector<http::MultipartPart> parts;
  parts.push_back({"prompt", std::nullopt, "text/plain", "edit it"});
  parts.push_back({"image", std::nullopt, "image/png", "PNGDATA"});
  parts.push_back({"mask", std::nullopt, "application/octet-stream", "MASK"});
  parts.push_back({"image[]", std::nullopt, "text/plain", "https://example.com/b.png"});
  auto r = parse_image_multipart(parts, true);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  ASSERT_EQ(r->images.size(), 2u);
  EXPECT_EQ(r->images[0].kind, ImageSource::Kind::kUpload);
  EXPECT_EQ(r->images[0].value, "PNGDATA");
  EXPECT_EQ(r->images[1].kind, ImageSource::Kind::kUrl);
  ASSERT_TRUE(r->mask.has_value());
  EXPECT_EQ(r->mask->kind, ImageSource::Kind::kUpload);
}

}  // namespace
}  // namespace ig::api
