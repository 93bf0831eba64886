#pragma once
// Parsing of image requests in every shape the seeds and the OpenAI SDKs send: JSON
// generations, JSON edits, multipart edits, and seed 003's {"model","input":{...}} task form.
// The output is one normalized ImageRequest. Parsing checks types and model-independent values
// and names the offending field in error.param; model-dependent checks (sizes, counts, prompt
// length, formats) happen later against the model's capabilities.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "http/multipart.h"

namespace ig::api {

// A reference image (or mask) as the client gave it, before any fetch or decode.
struct ImageSource {
  enum class Kind { kUrl, kDataUrl, kBase64, kUpload };
  Kind kind = Kind::kUrl;
  std::string value;  // URL, data: URL or base64 text; for uploads the bytes
  std::string filename;
  std::string content_type;
  std::string field;  // request field it came from, for error.param
};

struct ImageRequest {
  bool edit_endpoint = false;
  bool input_object = false;  // seed 003 task form
  std::string model;
  std::string prompt;
  int n = 1;
  std::optional<std::string> size;
  std::optional<std::string> quality;
  std::optional<std::string> resolution;
  std::optional<std::string> aspect_ratio;
  std::string background = "auto";
  std::string moderation;
  std::string output_format = "png";
  bool output_format_set = false;
  std::optional<int> output_compression;
  std::optional<std::string> response_format;  // "b64_json" | "url"; absent = deployment default
  bool stream = false;
  int partial_images = 0;
  std::string user;
  std::optional<std::string> callback_url;
  std::optional<bool> nsfw_checker;
  std::vector<ImageSource> images;
  std::optional<ImageSource> mask;

  // A reference image turns any request into an edit.
  bool is_edit() const { return edit_endpoint || !images.empty(); }
};

inline constexpr std::size_t kMaxPromptChars = 32'000;
inline constexpr std::size_t kMaxReferenceImages = 16;

Result<ImageRequest> parse_image_json(std::string_view body, bool edit_endpoint);
Result<ImageRequest> parse_image_multipart(const std::vector<http::MultipartPart>& parts,
                                           bool edit_endpoint);

// Number of Unicode code points (prompt limits count characters, not bytes).
std::size_t utf8_length(std::string_view s);

}  // namespace ig::api
