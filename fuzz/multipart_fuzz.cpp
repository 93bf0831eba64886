// Fuzzes multipart/form-data parsing (images.edit uploads): untrusted header value and body.
// Input format: everything before the first '\n' is the Content-Type value, everything after it
// is the body (no '\n': the whole input is the Content-Type and the body is empty). Checks that
// every part's data lies inside the body, parts are ordered and disjoint, limits hold, and no
// part's data contains a real delimiter line.
#include <cstdint>
#include <string>
#include <string_view>

#include "http/multipart.h"

namespace {

void check(std::string_view content_type, std::string_view body,
           const ig::http::MultipartLimits& limits) {
  auto parts = ig::http::parse_multipart(content_type, body, limits);
  if (!parts) {
    if (parts.error().message.empty()) __builtin_trap();
    if (parts.error().code != ig::ErrorCode::kInvalidRequest) __builtin_trap();
    return;
  }
  if (parts->size() > limits.max_parts) __builtin_trap();
  auto boundary = ig::http::boundary_from_content_type(content_type);
  if (!boundary || boundary->empty() || boundary->size() > 70) __builtin_trap();
  const std::string next_line = "\r\n--" + *boundary + "\r\n";
  const std::string close = "\r\n--" + *boundary + "--";
  const char* body_begin = body.data();
  const char* body_end = body.data() + body.size();
  const char* previous_end = body_begin;
  for (const auto& part : *parts) {
    const char* begin = part.data.data();
    const char* end = begin + part.data.size();
    if (part.data.size() > body.size()) __builtin_trap();
    if (begin < body_begin || end > body_end) __builtin_trap();
    if (begin < previous_end) __builtin_trap();
    previous_end = end;
    if (part.name.empty() || part.content_type.empty()) __builtin_trap();
    if (part.data.find(next_line) != std::string_view::npos) __builtin_trap();
    if (part.data.find(close) != std::string_view::npos) __builtin_trap();
    // Touch every byte so ASan sees any out-of-bounds view.
    volatile unsigned sum = 0;
    for (char c : part.data) sum = sum + static_cast<unsigned char>(c);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::size_t newline = input.find('\n');
  std::string_view content_type = input.substr(0, newline);
  std::string_view body =
      newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1);
  // Copy the body into its own allocation so ASan flags any read past its end.
  std::string owned(body);
  check(content_type, owned, {});
  check(content_type, owned, {.max_parts = 3, .max_part_header_bytes = 64});
  (void)ig::http::boundary_from_content_type(content_type);
  return 0;
}
