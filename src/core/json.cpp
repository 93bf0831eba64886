#include "core/json.h"

#include <boost/json.hpp>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace ig {
namespace {

bool needs_escape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

// The first byte of [p, end) that needs an escape, or end. Eight bytes at a time: a word with
// no control byte, quote or backslash is skipped whole (prompts and base64 images have none).
// The zero-byte test can flag a word falsely only above a byte that truly matched, so a
// flagged word always holds a match and the byte loop below finds it.
const char* find_escape(const char* p, const char* const end) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  constexpr std::uint64_t kHighs = 0x8080808080808080ULL;
  while (end - p >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, sizeof w);
    const std::uint64_t quote = w ^ (kOnes * '"');
    const std::uint64_t backslash = w ^ (kOnes * '\\');
    const std::uint64_t hits =
        ((quote - kOnes) & ~quote) | ((backslash - kOnes) & ~backslash) | ((w - kOnes * 0x20) & ~w);
    if ((hits & kHighs) != 0) break;
    p += 8;
  }
  while (p != end && !needs_escape(static_cast<unsigned char>(*p))) ++p;
  return p;
}

// The escapes Boost.JSON's serializer writes (json_test.cpp holds the two to the same bytes):
// quote, backslash and the C0 controls; every other byte, UTF-8 included, passes through. Going
// through boost::json::serialize cost two allocations per string and key of every reply.
void append_string(std::string& out, boost::json::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + s.size() + 2);
  out += '"';
  const char* const end = s.data() + s.size();
  const char* run = s.data();
  for (const char* p = find_escape(run, end); p != end; p = find_escape(p, end)) {
    out.append(run, static_cast<std::size_t>(p - run));
    const auto c = static_cast<unsigned char>(*p);
    run = ++p;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        const char u[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        out.append(u, sizeof u);
      }
    }
  }
  out.append(run, static_cast<std::size_t>(end - run));
  out += '"';
}

void append(std::string& out, const boost::json::value& v) {
  char buf[64];
  switch (v.kind()) {
    case boost::json::kind::null:
      out += "null";
      break;
    case boost::json::kind::bool_:
      out += v.get_bool() ? "true" : "false";
      break;
    case boost::json::kind::int64: {
      auto r = std::to_chars(buf, buf + sizeof buf, v.get_int64());
      out.append(buf, static_cast<std::size_t>(r.ptr - buf));
      break;
    }
    case boost::json::kind::uint64: {
      auto r = std::to_chars(buf, buf + sizeof buf, v.get_uint64());
      out.append(buf, static_cast<std::size_t>(r.ptr - buf));
      break;
    }
    case boost::json::kind::double_: {
      double d = v.get_double();
      if (!std::isfinite(d)) {
        out += "null";
        break;
      }
      // Shortest round-trip digits; plain decimal notation in the range money lives in.
      const double mag = std::fabs(d);
      auto r = (mag >= 1e-7 && mag < 1e15)
                   ? std::to_chars(buf, buf + sizeof buf, d, std::chars_format::fixed)
                   : std::to_chars(buf, buf + sizeof buf, d);
      out.append(buf, static_cast<std::size_t>(r.ptr - buf));
      break;
    }
    case boost::json::kind::string:
      append_string(out, v.get_string());
      break;
    case boost::json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& item : v.get_array()) {
        if (!first) out += ',';
        first = false;
        append(out, item);
      }
      out += ']';
      break;
    }
    case boost::json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& kv : v.get_object()) {
        if (!first) out += ',';
        first = false;
        append_string(out, kv.key());
        out += ':';
        append(out, kv.value());
      }
      out += '}';
      break;
    }
  }
}

}  // namespace

std::string to_json_text(const boost::json::value& value) {
  std::string out;
  out.reserve(128);
  append(out, value);
  return out;
}

JsonWriter& JsonWriter::key(std::string_view name) {
  separate();
  append_string(out_, boost::json::string_view(name.data(), name.size()));
  out_ += ':';
  need_comma_ = false;
  return *this;
}

JsonWriter& JsonWriter::string(std::string_view value) {
  separate();
  append_string(out_, boost::json::string_view(value.data(), value.size()));
  need_comma_ = true;
  return *this;
}

JsonWriter& JsonWriter::number(std::int64_t value) {
  separate();
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, value);
  out_.append(buf, static_cast<std::size_t>(r.ptr - buf));
  need_comma_ = true;
  return *this;
}

JsonWriter& JsonWriter::boolean(bool value) {
  separate();
  out_ += value ? "true" : "false";
  need_comma_ = true;
  return *this;
}

JsonWriter& JsonWriter::value(const boost::json::value& value) {
  separate();
  append(out_, value);
  need_comma_ = true;
  return *this;
}

}  // namespace ig
