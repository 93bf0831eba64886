#pragma once
// A reference image (or mask) as a client gave it, before any fetch or decode. Every dialect's
// parser produces these; the job pipeline turns them into bytes.

#include <string>

namespace ig::jobs {

struct ImageSource {
  enum class Kind { kUrl, kDataUrl, kBase64, kUpload };
  Kind kind = Kind::kUrl;
  std::string value;  // URL, data: URL or base64 text; for uploads the bytes
  std::string filename;
  std::string content_type;
  std::string field;  // request field it came from, for error.param
};

}  // namespace ig::jobs
