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
#include "jobs/image_request.h"

namespace ig::api {

using jobs::ImageSource;
using jobs::ImageRequest;

inline constexpr std::size_t kMaxPromptChars = 32'000;
inline constexpr std::size_t kMaxReferenceImages = 16;

Result<ImageRequest> parse_image_json(std::string_view body, bool edit_endpoint);
Result<ImageRequest> parse_image_multipart(const std::vector<http::MultipartPart>& parts,
                                           bool edit_endpoint);

}  // namespace ig::api
