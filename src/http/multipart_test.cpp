#include "http/multipart.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <string_view>

namespace ig::http {
namespace {

using ::testing::HasSubstr;

// Joins lines with CRLF (no trailing CRLF), like the bodies HTTP clients send.
std::string crlf(std::initializer_list<std::string_view> lines) {
  std::string out;
  bool first = true;
  for (auto line : lines) {
    if (!first) out += "\r\n";
    out += line;
    first = false;
  }
  return out;
}

// PNG signature and the start of an IHDR chunk: CR, LF, SUB and NUL bytes.
const std::string kPng("\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01", 20);

bool inside(std::string_view view, std::string_view body) {
  return view.data() >= body.data() && view.data() + view.size() <= body.data() + body.size();
}

std::string error_of(std::string_view content_type, std::string_view body,
                     const MultipartLimits& limits = {}) {
  auto parsed = parse_multipart(content_type, body, limits);
  if (parsed) return "<parsed " + std::to_string(parsed->size()) + " parts>";
  EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidRequest);
  EXPECT_EQ(parsed.error().param, std::nullopt);
  return parsed.error().message;
}

constexpr std::string_view kCt = "multipart/form-data; boundary=XyZ";

// A one-part body with the given header lines and data, boundary XyZ.
std::string one_part(std::initializer_list<std::string_view> headers, std::string_view data) {
  std::string out = "--XyZ\r\n";
  for (auto h : headers) {
    out += h;
    out += "\r\n";
  }
  out += "\r\n";
  out += data;
  out += "\r\n--XyZ--\r\n";
  return out;
}

TEST(MultipartTest, ParsesCurlImagesEditBody) {
  // curl -F prompt='a cat' -F model=gpt-image-1 -F n=2 -F size=1024x1024
  //      -F image=@cat.png -F mask=@mask.png
  const std::string boundary = "------------------------d74496d66958873e";
  const std::string ct = "multipart/form-data; boundary=" + boundary;
  const std::string mask_data = std::string("\0\0\0\0", 4) + "mask";
  const std::string body = crlf({
      "--" + boundary,
      R"(Content-Disposition: form-data; name="prompt")",
      "",
      "a cat",
      "--" + boundary,
      R"(Content-Disposition: form-data; name="model")",
      "",
      "gpt-image-1",
      "--" + boundary,
      R"(Content-Disposition: form-data; name="n")",
      "",
      "2",
      "--" + boundary,
      R"(Content-Disposition: form-data; name="size")",
      "",
      "1024x1024",
      "--" + boundary,
      R"(Content-Disposition: form-data; name="image"; filename="cat.png")",
      "Content-Type: image/png",
      "",
      kPng,
      "--" + boundary,
      R"(Content-Disposition: form-data; name="mask"; filename="mask.png")",
      "Content-Type: image/png",
      "",
      mask_data,
      "--" + boundary + "--",
      "",
  });
  auto parts = parse_multipart(ct, body);
  ASSERT_TRUE(parts) << parts.error().message;
  ASSERT_EQ(parts->size(), 6u);
  const auto& p = *parts;
  EXPECT_EQ(p[0].name, "prompt");
  EXPECT_EQ(p[0].data, "a cat");
  EXPECT_EQ(p[0].filename, std::nullopt);
  EXPECT_EQ(p[0].content_type, "text/plain");
  EXPECT_EQ(p[1].name, "model");
  EXPECT_EQ(p[1].data, "gpt-image-1");
  EXPECT_EQ(p[2].data, "2");
  EXPECT_EQ(p[3].data, "1024x1024");
  EXPECT_EQ(p[4].name, "image");
  EXPECT_EQ(p[4].filename, "cat.png");
  EXPECT_EQ(p[4].content_type, "image/png");
  EXPECT_EQ(p[4].data, kPng);
  EXPECT_EQ(p[5].name, "mask");
  EXPECT_EQ(p[5].filename, "mask.png");
  EXPECT_EQ(p[5].data, mask_data);
  for (const auto& part : p) EXPECT_TRUE(inside(part.data, body));
}

TEST(MultipartTest, ParsesNodeSdkBodyWithRepeatedImageArray) {
  // openai-node images.edit({image: [a, b], ...}) through undici's FormData.
  const std::string boundary = "----formdata-undici-055127442158";
  const std::string ct = "multipart/form-data; boundary=" + boundary;
  const std::string second = kPng + "\r\n--" + boundary.substr(0, 10);  // lookalike inside data
  const std::string body = crlf({
      "--" + boundary,
      R"(Content-Disposition: form-data; name="image[]"; filename="a.png")",
      "Content-Type: image/png",
      "",
      kPng,
      "--" + boundary,
      R"(Content-Disposition: form-data; name="image[]"; filename="b.png")",
      "Content-Type: image/png",
      "",
      second,
      "--" + boundary,
      R"(Content-Disposition: form-data; name="prompt")",
      "",
      "Put them in a gift basket",
      "--" + boundary,
      R"(Content-Disposition: form-data; name="model")",
      "",
      "gpt-image-1",
      "--" + boundary + "--",
  });
  auto parts = parse_multipart(ct, body);
  ASSERT_TRUE(parts) << parts.error().message;
  ASSERT_EQ(parts->size(), 4u);
  EXPECT_EQ((*parts)[0].name, "image[]");
  EXPECT_EQ((*parts)[0].filename, "a.png");
  EXPECT_EQ((*parts)[0].data, kPng);
  EXPECT_EQ((*parts)[1].name, "image[]");
  EXPECT_EQ((*parts)[1].filename, "b.png");
  EXPECT_EQ((*parts)[1].data, second);
  EXPECT_EQ((*parts)[2].data, "Put them in a gift basket");
  EXPECT_EQ((*parts)[3].data, "gpt-image-1");
  // Zero copy: the views are ordered, disjoint ranges of the body.
  for (std::size_t i = 0; i < parts->size(); ++i) {
    EXPECT_TRUE(inside((*parts)[i].data, body));
    if (i > 0) {
      EXPECT_LE((*parts)[i - 1].data.data() + (*parts)[i - 1].data.size(), (*parts)[i].data.data());
    }
  }
}

TEST(MultipartTest, ParsesFormDataEncoderBodyWithRepeatedImage) {
  // openai-node v4 (form-data-encoder): repeated plain `image`, epilogue of CRLF CRLF.
  const std::string ct = "multipart/form-data; boundary=form-data-boundary-x6ywn9qnsq0aucpl";
  const std::string body =
      "--form-data-boundary-x6ywn9qnsq0aucpl\r\n"
      "Content-Disposition: form-data; name=\"image\"; filename=\"one.png\"\r\n"
      "Content-Type: image/png\r\n\r\n" +
      kPng +
      "\r\n--form-data-boundary-x6ywn9qnsq0aucpl\r\n"
      "Content-Disposition: form-data; name=\"image\"; filename=\"two.png\"\r\n"
      "Content-Type: image/png\r\n\r\n" +
      kPng + "\r\n--form-data-boundary-x6ywn9qnsq0aucpl--\r\n\r\n";
  auto parts = parse_multipart(ct, body);
  ASSERT_TRUE(parts) << parts.error().message;
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].filename, "one.png");
  EXPECT_EQ((*parts)[1].filename, "two.png");
  EXPECT_EQ((*parts)[1].data, kPng);
}

TEST(MultipartTest, QuotedBoundaryAndCaseInsensitiveNames) {
  const std::string boundary = "a b'()+_,-./:=?Z";  // every bchar class, space inside
  const std::string ct = "Multipart/Form-Data ;  Charset=utf-8 ; BOUNDARY=\"" + boundary + "\"";
  const std::string body = crlf({
      "--" + boundary,
      "CONTENT-DISPOSITION: Form-Data; NAME=prompt; FileName=\"p.txt\"",
      "content-type: Text/Markdown; charset=UTF-8",
      "X-Ignored: yes",
      "Content-Transfer-Encoding: binary",
      "",
      "hello",
      "--" + boundary + "--",
  });
  auto parts = parse_multipart(ct, body);
  ASSERT_TRUE(parts) << parts.error().message;
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].name, "prompt");
  EXPECT_EQ((*parts)[0].filename, "p.txt");
  EXPECT_EQ((*parts)[0].content_type, "text/markdown; charset=UTF-8");
  EXPECT_EQ((*parts)[0].data, "hello");
}

TEST(MultipartTest, UnquotedAndEscapedBoundaryParameter) {
  EXPECT_EQ(boundary_from_content_type("multipart/form-data; boundary=abc"), "abc");
  EXPECT_EQ(boundary_from_content_type("multipart/form-data;boundary=abc;charset=x"), "abc");
  EXPECT_EQ(boundary_from_content_type("multipart/form-data; BoUnDaRy = \"a\\\"b\" "), "a\"b");
  EXPECT_EQ(boundary_from_content_type("multipart/form-data; boundary=\"a;b\""), "a;b");
  EXPECT_EQ(boundary_from_content_type("multipart/form-data"), std::nullopt);
  EXPECT_EQ(boundary_from_content_type("multipart/form-data; boundary="), std::nullopt);
  EXPECT_EQ(boundary_from_content_type("multipart/form-data; boundary=\"\""), std::nullopt);
  EXPECT_EQ(boundary_from_content_type("multipart/form-data; boundary=\"abc"), std::nullopt);
  EXPECT_EQ(boundary_from_content_type("multipart/form-data; xboundary=abc"), std::nullopt);
  EXPECT_EQ(boundary_from_content_type(""), std::nullopt);
}

TEST(MultipartTest, BoundaryLookalikesInsideDataDoNotSplit) {
  constexpr char kRaw[] = "a--XyZ b\r\n--XyZX\r\n--XyZ-x\r\n--Xy\r\n-\0\r\n\r\n--xyz";
  const std::string data(kRaw, sizeof(kRaw) - 1);
  const std::string body = one_part({R"(Content-Disposition: form-data; name="f")"}, data);
  auto parts = parse_multipart(kCt, body);
  ASSERT_TRUE(parts) << parts.error().message;
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].data, data);
  EXPECT_EQ((*parts)[0].data.size(), 44u);  // the NUL did not end it
}

TEST(MultipartTest, BinaryDataWithEveryByteValue) {
  std::string data;
  for (int i = 0; i < 256; ++i) data += static_cast<char>(i);
  data += data;
  const std::string body =
      one_part({R"(Content-Disposition: form-data; name="image"; filename="x.bin")",
                "Content-Type: application/octet-stream"},
               data);
  auto parts = parse_multipart(kCt, body);
  ASSERT_TRUE(parts) << parts.error().message;
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].data, data);
}

TEST(MultipartTest, EmptyParts) {
  // Empty data written the usual way, and with the closing delimiter sharing the blank line's
  // CRLF (no data line at all).
  const std::string body =
      "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"b\"; filename=\"\"\r\n\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\nc\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"d\"\r\n\r\n--XyZ--";
  auto parts = parse_multipart(kCt, body);
  ASSERT_TRUE(parts) << parts.error().message;
  ASSERT_EQ(parts->size(), 4u);
  EXPECT_EQ((*parts)[0].data, "");
  EXPECT_EQ((*parts)[1].data, "");
  EXPECT_EQ((*parts)[1].filename, "");
  EXPECT_EQ((*parts)[2].data, "c");
  EXPECT_EQ((*parts)[3].data, "");
  for (const auto& p : *parts) EXPECT_TRUE(inside(p.data, body));
}

TEST(MultipartTest, PreambleEpilogueAndTransportPadding) {
  const std::string body =
      "This is the preamble. --XyZ is not a delimiter here.\r\n"
      "--XyZ \t\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nA\r\n"
      "--XyZ\t\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\nB\r\n"
      "--XyZ--  \r\nThis is the epilogue.\r\n--XyZ\r\nContent-Disposition: form-data; "
      "name=\"c\"\r\n\r\nC\r\n--XyZ--\r\n";
  auto parts = parse_multipart(kCt, body);
  ASSERT_TRUE(parts) << parts.error().message;
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].data, "A");
  EXPECT_EQ((*parts)[1].data, "B");
}

TEST(MultipartTest, DataEndsRightBeforeClosingDelimiterAtEndOfBody) {
  const std::string body =
      "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nabc\r\n--XyZ--";
  auto parts = parse_multipart(kCt, body);
  ASSERT_TRUE(parts) << parts.error().message;
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].data, "abc");
  EXPECT_EQ((*parts)[0].data.data() + 3, body.data() + body.size() - 9);
}

TEST(MultipartTest, BodyWithOnlyTheCloseDelimiterHasNoParts) {
  auto parts = parse_multipart(kCt, "--XyZ--\r\n");
  ASSERT_TRUE(parts) << parts.error().message;
  EXPECT_TRUE(parts->empty());
}

TEST(MultipartTest, FilenameStarWinsAndIsDecoded) {
  auto parts = parse_multipart(
      kCt, one_part({"Content-Disposition: form-data; name=\"image\"; filename=\"fallback.png\"; "
                     "filename*=UTF-8''%E2%82%AC%20rates.png"},
                    "x"));
  ASSERT_TRUE(parts) << parts.error().message;
  EXPECT_EQ((*parts)[0].filename, "\xE2\x82\xAC rates.png");

  parts = parse_multipart(
      kCt, one_part({"Content-Disposition: form-data; name=i; filename*=iso-8859-1'fr'%E9t%E9.png"},
                    "x"));
  ASSERT_TRUE(parts) << parts.error().message;
  EXPECT_EQ((*parts)[0].filename, "\xC3\xA9t\xC3\xA9.png");

  for (std::string_view bad : {"filename*=UTF-8''%E2%82", "filename*=UTF-8''%G0",
                               "filename*=UTF-8''%2", "filename*=koi8-r''abc", "filename*=abc",
                               "filename*=UTF-8''a%0Ab", "filename*=UTF-8'abc"}) {
    std::string header = "Content-Disposition: form-data; name=i; " + std::string(bad);
    EXPECT_THAT(error_of(kCt, one_part({header}, "x")), HasSubstr("invalid filename* parameter"))
        << bad;
  }
}

TEST(MultipartTest, QuotedStringsAreUnescapedAndPercentEscapesKept) {
  auto parts = parse_multipart(
      kCt,
      one_part({R"(Content-Disposition: form-data; name="a\"b"; filename="C:\\x\\%22y%22.png")"},
               "x"));
  ASSERT_TRUE(parts) << parts.error().message;
  EXPECT_EQ((*parts)[0].name, "a\"b");
  EXPECT_EQ((*parts)[0].filename, "C:\\x\\%22y%22.png");
  // Raw UTF-8 in a quoted filename, as browsers send it.
  parts = parse_multipart(
      kCt, one_part({"Content-Disposition: form-data; name=\"f\"; filename=\"\xC3\xA9.png\""}, ""));
  ASSERT_TRUE(parts) << parts.error().message;
  EXPECT_EQ((*parts)[0].filename, "\xC3\xA9.png");
}

TEST(MultipartTest, RejectsWrongMediaType) {
  const std::string body = one_part({R"(Content-Disposition: form-data; name="a")"}, "x");
  EXPECT_THAT(error_of("application/json", body), HasSubstr("must be multipart/form-data"));
  EXPECT_THAT(error_of("multipart/mixed; boundary=XyZ", body),
              HasSubstr("must be multipart/form-data"));
  EXPECT_THAT(error_of("", body), HasSubstr("must be multipart/form-data"));
}

TEST(MultipartTest, RejectsMissingBoundary) {
  const std::string body = one_part({R"(Content-Disposition: form-data; name="a")"}, "x");
  EXPECT_THAT(error_of("multipart/form-data", body), HasSubstr("no boundary parameter"));
  EXPECT_THAT(error_of("multipart/form-data; charset=utf-8", body),
              HasSubstr("no boundary parameter"));
  EXPECT_THAT(error_of("multipart/form-data; boundary=\"\"", body),
              HasSubstr("no boundary parameter"));
  EXPECT_THAT(error_of("multipart/form-data; boundary=", body),
              HasSubstr("malformed Content-Type header"));
  EXPECT_THAT(error_of("multipart/form-data; boundary=\"XyZ", body),
              HasSubstr("unterminated quoted string"));
  EXPECT_THAT(error_of("multipart/form-data; boundary", body),
              HasSubstr("parameter without a value"));
  EXPECT_THAT(error_of("multipart/form-data; boundary=a; boundary=b", body),
              HasSubstr("duplicate parameter boundary"));
}

TEST(MultipartTest, BoundaryLengthLimitIsSeventy) {
  const std::string b70(70, 'b');
  const std::string ok =
      "--" + b70 + "\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--" + b70 + "--";
  auto parts = parse_multipart("multipart/form-data; boundary=" + b70, ok);
  ASSERT_TRUE(parts) << parts.error().message;
  EXPECT_EQ((*parts)[0].data, "x");
  const std::string b71(71, 'b');
  EXPECT_THAT(error_of("multipart/form-data; boundary=" + b71, ok),
              HasSubstr("boundary is longer than 70 characters"));
}

TEST(MultipartTest, RejectsInvalidBoundaryCharacters) {
  const std::string body = one_part({R"(Content-Disposition: form-data; name="a")"}, "x");
  for (std::string_view ct :
       {"multipart/form-data; boundary=\"ab \"", "multipart/form-data; boundary=\"a\\\rb\"",
        "multipart/form-data; boundary=a@b", "multipart/form-data; boundary=\"a\\\"b\""}) {
    EXPECT_THAT(error_of(ct, body), HasSubstr("boundary contains an invalid character")) << ct;
  }
}

TEST(MultipartTest, RejectsBrokenBoundary) {
  // The body uses a different boundary than the header announces.
  const std::string body = one_part({R"(Content-Disposition: form-data; name="a")"}, "x");
  EXPECT_THAT(error_of("multipart/form-data; boundary=Other", body),
              HasSubstr("does not contain the boundary"));
  // The boundary is only a prefix of the one the body uses.
  EXPECT_THAT(error_of("multipart/form-data; boundary=Xy", body),
              HasSubstr("does not contain the boundary"));
  // The second delimiter is mangled, so the first part never ends.
  const std::string mangled =
      "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nA\r\n"
      "--XyQ\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\nB\r\n--XyQ--\r\n";
  EXPECT_THAT(error_of(kCt, mangled), HasSubstr("no closing delimiter"));
  // The closing delimiter is missing (truncated upload) or cut short.
  const std::string open = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nA";
  EXPECT_THAT(error_of(kCt, open), HasSubstr("no closing delimiter"));
  EXPECT_THAT(error_of(kCt, open + "\r\n--XyZ"), HasSubstr("no closing delimiter"));
  EXPECT_THAT(error_of(kCt, open + "\r\n--XyZ-"), HasSubstr("no closing delimiter"));
  EXPECT_THAT(error_of(kCt, open + "\r\n--XyZ\r\n"), HasSubstr("not terminated"));
  EXPECT_THAT(error_of(kCt, ""), HasSubstr("does not contain the boundary"));
  EXPECT_THAT(error_of(kCt, "--XyZ"), HasSubstr("does not contain the boundary"));
}

TEST(MultipartTest, RejectsBareLfLineEndings) {
  const std::string body = "--XyZ\nContent-Disposition: form-data; name=\"a\"\n\nA\n--XyZ--\n";
  EXPECT_THAT(error_of(kCt, body), HasSubstr("must end with CRLF"));
  const std::string later =
      "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nA\r\n--XyZ\nmore";
  EXPECT_THAT(error_of(kCt, later), HasSubstr("must end with CRLF"));
}

TEST(MultipartTest, RejectsPartsWithoutFormDataName) {
  EXPECT_THAT(error_of(kCt, one_part({"Content-Type: text/plain"}, "x")),
              HasSubstr("part 1: part has no Content-Disposition header"));
  EXPECT_THAT(error_of(kCt, "--XyZ\r\n\r\nx\r\n--XyZ--"),
              HasSubstr("part has no Content-Disposition header"));
  EXPECT_THAT(error_of(kCt, one_part({"Content-Disposition: form-data"}, "x")),
              HasSubstr("part without Content-Disposition form-data name"));
  EXPECT_THAT(error_of(kCt, one_part({"Content-Disposition: form-data; filename=a.png"}, "x")),
              HasSubstr("part without Content-Disposition form-data name"));
  EXPECT_THAT(error_of(kCt, one_part({"Content-Disposition: form-data; name=\"\""}, "x")),
              HasSubstr("part without Content-Disposition form-data name"));
  EXPECT_THAT(error_of(kCt, one_part({"Content-Disposition: attachment; name=a"}, "x")),
              HasSubstr("Content-Disposition type must be form-data"));
  EXPECT_THAT(error_of(kCt, one_part({"Content-Disposition: form-data; name=a; name=b"}, "x")),
              HasSubstr("duplicate parameter name"));
  EXPECT_THAT(error_of(kCt, one_part({"Content-Disposition: form-data; name=\"a\"x"}, "x")),
              HasSubstr("junk after quoted string"));
  EXPECT_THAT(error_of(kCt, one_part({"Content-Disposition: form-data; name=\"a"}, "x")),
              HasSubstr("unterminated quoted string"));
  // The error names the failing part.
  const std::string second =
      "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n--XyZ\r\nX-A: b\r\n\r\nB\r\n"
      "--XyZ--";
  EXPECT_THAT(error_of(kCt, second), HasSubstr("multipart part 2: "));
}

TEST(MultipartTest, RejectsMalformedPartHeaders) {
  const std::string_view cd = "Content-Disposition: form-data; name=a";
  EXPECT_THAT(error_of(kCt, one_part({cd, cd}, "x")), HasSubstr("duplicate Content-Disposition"));
  EXPECT_THAT(error_of(kCt, one_part({cd, "Content-Type: a/b", "content-type: c/d"}, "x")),
              HasSubstr("duplicate Content-Type"));
  EXPECT_THAT(error_of(kCt, one_part({cd, " folded"}, "x")), HasSubstr("folded"));
  EXPECT_THAT(error_of(kCt, one_part({cd, "no colon"}, "x")),
              HasSubstr("malformed part header line"));
  EXPECT_THAT(error_of(kCt, one_part({cd, ": empty name"}, "x")),
              HasSubstr("malformed part header line"));
  EXPECT_THAT(error_of(kCt, one_part({cd, "Bad Name: x"}, "x")),
              HasSubstr("malformed part header line"));
  EXPECT_THAT(error_of(kCt, one_part({cd, std::string_view("X-A: a\0b", 8)}, "x")),
              HasSubstr("control character"));
  EXPECT_THAT(error_of(kCt, one_part({"Content-Disposition: form-data; name=\"a\nb\""}, "x")),
              HasSubstr("control character"));
  EXPECT_THAT(error_of(kCt, one_part({"Content-Disposition: form-data; name=\"a\rb\""}, "x")),
              HasSubstr("control character"));
}

TEST(MultipartTest, PartLimit) {
  std::string body;
  for (int i = 0; i < 3; ++i)
    body += "--XyZ\r\nContent-Disposition: form-data; name=p\r\n\r\nv\r\n";
  body += "--XyZ--\r\n";
  MultipartLimits limits;
  limits.max_parts = 3;
  auto parts = parse_multipart(kCt, body, limits);
  ASSERT_TRUE(parts) << parts.error().message;
  EXPECT_EQ(parts->size(), 3u);
  limits.max_parts = 2;
  EXPECT_THAT(error_of(kCt, body, limits), HasSubstr("more than 2 parts"));
  limits.max_parts = 0;
  EXPECT_THAT(error_of(kCt, body, limits), HasSubstr("more than 0 parts"));
  EXPECT_EQ(error_of(kCt, "--XyZ--", limits), "<parsed 0 parts>");

  // Default limit: 64.
  std::string many;
  for (int i = 0; i < 65; ++i)
    many += "--XyZ\r\nContent-Disposition: form-data; name=p\r\n\r\n\r\n";
  many += "--XyZ--";
  EXPECT_THAT(error_of(kCt, many), HasSubstr("more than 64 parts"));
}

TEST(MultipartTest, HeaderBlockLimit) {
  const std::string header = "Content-Disposition: form-data; name=abcdefg";  // 44 bytes
  ASSERT_EQ(header.size(), 44u);
  const std::string body = one_part({header}, std::string(1000, 'd'));
  MultipartLimits limits;
  limits.max_part_header_bytes = 44;
  auto parts = parse_multipart(kCt, body, limits);
  ASSERT_TRUE(parts) << parts.error().message;
  EXPECT_EQ((*parts)[0].name, "abcdefg");
  limits.max_part_header_bytes = 43;
  EXPECT_THAT(error_of(kCt, body, limits), HasSubstr("header block is larger than 43 bytes"));
  // A header block cut off by the end of the body is "not terminated", not "too large".
  EXPECT_THAT(error_of(kCt, "--XyZ\r\n" + header + "\r\n", limits), HasSubstr("not terminated"));
  // Default limit: 8192.
  const std::string huge = one_part({header, "X-Pad: " + std::string(9000, 'p')}, "x");
  EXPECT_THAT(error_of(kCt, huge), HasSubstr("header block is larger than 8192 bytes"));
}

TEST(MultipartTest, AdversarialBodiesStayLinear) {
  // Megabytes of near-delimiters: each must be rejected in constant time.
  const std::string head = "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n";
  std::string body = head;
  for (int i = 0; i < 200000; ++i) body += "\r\n--XyZ-";
  for (int i = 0; i < 200000; ++i) body += "\r\n--Xy";
  std::string closed = body + "\r\n--XyZ--";
  auto parts = parse_multipart(kCt, closed);
  ASSERT_TRUE(parts) << parts.error().message;
  EXPECT_EQ((*parts)[0].data.size(), body.size() - head.size());
  EXPECT_THAT(error_of(kCt, body), HasSubstr("no closing delimiter"));
  // Many tiny parts up to the limit, and an unterminated header followed by lots of data.
  std::string many;
  for (int i = 0; i < 20000; ++i)
    many += "--XyZ\r\nContent-Disposition: form-data; name=p\r\n\r\n\r\n";
  many += "--XyZ--";
  MultipartLimits limits;
  limits.max_parts = 20000;
  parts = parse_multipart(kCt, many, limits);
  ASSERT_TRUE(parts) << parts.error().message;
  EXPECT_EQ(parts->size(), 20000u);
  std::string crlfs;
  for (int i = 0; i < (2 << 20); ++i) crlfs += "\r\n";
  EXPECT_THAT(error_of(kCt, "--XyZ\r\nContent-Disposition: form-data; name=a\r\n" + crlfs),
              HasSubstr("no closing delimiter"));
  EXPECT_THAT(error_of(kCt, "--XyZ\r\nA: b\r\n" + std::string(4 << 20, 'x')),
              HasSubstr("larger than 8192"));
}

}  // namespace
}  // namespace ig::http
