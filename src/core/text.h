#pragma once
// Small text helpers for untrusted bytes.

#include <string>
#include <string_view>

namespace ig {

// Printable-ASCII rendering of untrusted bytes for logs and error messages: other bytes become
// %XX, and the result is cut at max_len characters (with "..." appended when cut).
std::string printable(std::string_view bytes, std::size_t max_len = 200);

std::string to_lower_ascii(std::string_view s);

// Number of Unicode code points (prompt limits count characters, not bytes).
std::size_t utf8_length(std::string_view s);

// True when every byte sequence is well-formed UTF-8.
bool is_valid_utf8(std::string_view s);

}  // namespace ig
