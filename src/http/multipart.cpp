#include "http/multipart.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "core/text.h"

namespace ig::http {
namespace {

constexpr std::string_view kCrlf = "\r\n";
constexpr std::size_t kMaxBoundaryLength = 70;  // RFC 2046 §5.1.1

bool is_lwsp(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_lwsp(std::string_view s) {
  while (!s.empty() && is_lwsp(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_lwsp(s.back())) s.remove_suffix(1);
  return s;
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

// RFC 7230 tchar.
bool is_tchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

// RFC 2046 bchars.
bool is_bchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("'()+_,-./:=? ").find(c) != std::string_view::npos;
}

std::unexpected<Error> invalid(std::string message) {
  return std::unexpected(Error::invalid(std::move(message), std::nullopt));
}

// A header value split into its leading token (`form-data`, `multipart/form-data`) and its
// `; name=value` parameters: names lower-cased and unique, values unquoted.
struct HeaderValue {
  std::string_view type;
  std::vector<std::pair<std::string, std::string>> params;

  const std::string* param(std::string_view lower_name) const {
    for (const auto& [n, v] : params) {
      if (n == lower_name) return &v;
    }
    return nullptr;
  }
};

// Parses `type *( OWS ";" OWS name OWS "=" OWS ( token / quoted-string ) ) OWS`. Empty
// parameters (";;", trailing ";") are tolerated; unquoted values run to the next ';'.
Result<HeaderValue> parse_header_value(std::string_view value, std::string_view header) {
  HeaderValue out;
  std::size_t i = value.find(';');
  out.type = trim_lwsp(value.substr(0, i));
  if (i == std::string_view::npos) return out;
  const auto bad = [&](std::string_view what) {
    return invalid("malformed " + std::string(header) + " header: " + std::string(what));
  };
  const std::size_t n = value.size();
  while (i < n) {
    // value[i] is ';' here.
    ++i;
    while (i < n && is_lwsp(value[i])) ++i;
    if (i == n) break;
    if (value[i] == ';') continue;
    std::size_t name_start = i;
    while (i < n && value[i] != '=' && value[i] != ';' && !is_lwsp(value[i])) ++i;
    std::string_view name = value.substr(name_start, i - name_start);
    if (!is_token(name)) return bad("invalid parameter name");
    while (i < n && is_lwsp(value[i])) ++i;
    if (i == n || value[i] != '=') return bad("parameter without a value");
    ++i;
    while (i < n && is_lwsp(value[i])) ++i;
    std::string param_value;
    if (i < n && value[i] == '"') {
      ++i;
      bool closed = false;
      while (i < n) {
        char c = value[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\') {
          if (i == n) break;
          c = value[i++];
        }
        param_value += c;
      }
      if (!closed) return bad("unterminated quoted string");
      while (i < n && is_lwsp(value[i])) ++i;
      if (i < n && value[i] != ';') return bad("junk after quoted string");
    } else {
      std::size_t end = std::min(value.find(';', i), n);
      std::string_view raw = trim_lwsp(value.substr(i, end - i));
      if (raw.empty()) return bad("empty parameter value");
      if (raw.find('"') != std::string_view::npos) return bad("stray quote in parameter value");
      param_value = raw;
      i = end;
    }
    std::string lower_name = to_lower_ascii(name);
    if (out.param(lower_name) != nullptr) return bad("duplicate parameter " + lower_name);
    out.params.emplace_back(std::move(lower_name), std::move(param_value));
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// RFC 8187 ext-value: charset "'" [ language ] "'" value-chars, decoded to UTF-8.
std::optional<std::string> decode_ext_value(std::string_view ext) {
  std::size_t q1 = ext.find('\'');
  if (q1 == std::string_view::npos) return std::nullopt;
  std::size_t q2 = ext.find('\'', q1 + 1);
  if (q2 == std::string_view::npos) return std::nullopt;
  std::string_view charset = ext.substr(0, q1);
  bool latin1 = iequals(charset, "iso-8859-1");
  if (!latin1 && !iequals(charset, "utf-8")) return std::nullopt;
  std::string_view pct = ext.substr(q2 + 1);
  std::string out;
  for (std::size_t i = 0; i < pct.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(pct[i]);
    if (c == '%') {
      if (i + 2 >= pct.size()) return std::nullopt;
      int hi = hex_value(pct[i + 1]);
      int lo = hex_value(pct[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      c = static_cast<unsigned char>(hi * 16 + lo);
      i += 2;
    }
    if (c < 0x20 || c == 0x7f) return std::nullopt;
    if (latin1 && c >= 0x80) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(c);
    }
  }
  if (!is_valid_utf8(out)) return std::nullopt;
  return out;
}

// Name, filename and content type of one part from its header block (lines separated by CRLF,
// without the blank line that ends it). `data` is left empty.
Result<MultipartPart> parse_part_headers(std::string_view block, std::size_t index) {
  const std::string where = "multipart part " + std::to_string(index) + ": ";
  std::optional<HeaderValue> disposition;
  std::optional<std::string_view> content_type;
  while (!block.empty()) {
    std::size_t eol = block.find(kCrlf);
    std::string_view line = block.substr(0, eol);
    block = eol == std::string_view::npos ? std::string_view() : block.substr(eol + 2);
    for (char ch : line) {
      auto c = static_cast<unsigned char>(ch);
      if ((c < 0x20 && c != '\t') || c == 0x7f) {
        return invalid(where + "part header contains a control character");
      }
    }
    if (line.empty() || is_lwsp(line.front())) {
      return invalid(where + "folded or empty part header lines are not supported");
    }
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) {
      return invalid(where + "malformed part header line");
    }
    std::string_view name = line.substr(0, colon);
    std::string_view value = trim_lwsp(line.substr(colon + 1));
    if (iequals(name, "content-disposition")) {
      if (disposition) return invalid(where + "duplicate Content-Disposition header");
      auto parsed = parse_header_value(value, "Content-Disposition");
      if (!parsed) return invalid(where + parsed.error().message);
      disposition = std::move(*parsed);
    } else if (iequals(name, "content-type")) {
      if (content_type) return invalid(where + "duplicate Content-Type header");
      content_type = value;
    }
  }
  if (!disposition) return invalid(where + "part has no Content-Disposition header");
  if (!iequals(disposition->type, "form-data")) {
    return invalid(where + "Content-Disposition type must be form-data");
  }
  const std::string* name = disposition->param("name");
  if (name == nullptr || name->empty()) {
    return invalid(where + "part without Content-Disposition form-data name");
  }
  MultipartPart part;
  part.name = *name;
  if (const std::string* ext = disposition->param("filename*")) {
    auto decoded = decode_ext_value(*ext);
    if (!decoded) return invalid(where + "invalid filename* parameter");
    part.filename = std::move(*decoded);
  } else if (const std::string* filename = disposition->param("filename")) {
    part.filename = *filename;
  }
  if (content_type && !content_type->empty()) {
    std::size_t semi = content_type->find(';');
    part.content_type = to_lower_ascii(trim_lwsp(content_type->substr(0, semi)));
    if (semi != std::string_view::npos) part.content_type += content_type->substr(semi);
  } else {
    part.content_type = "text/plain";
  }
  return part;
}

// Checks the media type and extracts and validates the boundary.
Result<std::string> request_boundary(std::string_view content_type) {
  auto parsed = parse_header_value(content_type, "Content-Type");
  if (!parsed) return std::unexpected(parsed.error());
  if (!iequals(parsed->type, "multipart/form-data")) {
    return invalid("Content-Type must be multipart/form-data");
  }
  const std::string* boundary = parsed->param("boundary");
  if (boundary == nullptr || boundary->empty()) {
    return invalid("multipart Content-Type has no boundary parameter");
  }
  if (boundary->size() > kMaxBoundaryLength) {
    return invalid("multipart boundary is longer than 70 characters");
  }
  if (!std::all_of(boundary->begin(), boundary->end(), is_bchar) || boundary->back() == ' ') {
    return invalid("multipart boundary contains an invalid character");
  }
  return *boundary;
}

// What follows "--boundary" at some position of the body.
enum class DelimiterKind {
  kNext,          // LWSP* CRLF: another part follows
  kClose,         // "--": last part ended
  kBareLf,        // LWSP* LF: an LF-only body, rejected
  kNotDelimiter,  // anything else, including the end of the body: the bytes are data
};

struct Delimiter {
  std::size_t data_end = 0;  // where the preceding data (or preamble) ends
  DelimiterKind kind = DelimiterKind::kNotDelimiter;
  std::size_t next = 0;  // for kNext: first byte of the following part's headers
};

// Finds delimiters in one body. Holds a Boyer-Moore-Horspool searcher for CRLF "--" boundary.
class DelimiterFinder {
 public:
  DelimiterFinder(std::string_view body, const std::string& boundary)
      : body_(body),
        delimiter_(std::string(kCrlf) + "--" + boundary),
        searcher_(delimiter_.begin(), delimiter_.end()) {}
  // The searcher points into delimiter_, so the object must not be copied or moved.
  DelimiterFinder(const DelimiterFinder&) = delete;
  DelimiterFinder& operator=(const DelimiterFinder&) = delete;

  // The first delimiter at or after `from`. When `at_line_start`, "--boundary" right at `from`
  // (without the CRLF) counts as well. nullopt when there is none.
  std::optional<Delimiter> find(std::size_t from, bool at_line_start) const {
    std::string_view dash_boundary = std::string_view(delimiter_).substr(kCrlf.size());
    if (at_line_start && body_.substr(from).starts_with(dash_boundary)) {
      Delimiter d = classify(from, from + dash_boundary.size());
      if (d.kind != DelimiterKind::kNotDelimiter) return d;
    }
    std::size_t start = from;
    while (start < body_.size()) {
      auto it = std::search(body_.begin() + start, body_.end(), searcher_);
      if (it == body_.end()) return std::nullopt;
      std::size_t at = static_cast<std::size_t>(it - body_.begin());
      Delimiter d = classify(at, at + delimiter_.size());
      if (d.kind != DelimiterKind::kNotDelimiter) return d;
      // The pattern starts with CR and has no other CR, so matches never overlap: linear.
      start = at + 1;
    }
    return std::nullopt;
  }

 private:
  Delimiter classify(std::size_t data_end, std::size_t after) const {
    Delimiter d{data_end, DelimiterKind::kNotDelimiter, 0};
    std::string_view rest = body_.substr(after);
    if (rest.starts_with("--")) {
      d.kind = DelimiterKind::kClose;
      return d;
    }
    std::size_t i = 0;
    while (i < rest.size() && is_lwsp(rest[i])) ++i;
    if (rest.substr(i).starts_with(kCrlf)) {
      d.kind = DelimiterKind::kNext;
      d.next = after + i + kCrlf.size();
    } else if (i < rest.size() && rest[i] == '\n') {
      d.kind = DelimiterKind::kBareLf;
    }
    return d;
  }

  std::string_view body_;
  std::string delimiter_;
  std::boyer_moore_horspool_searcher<std::string::const_iterator> searcher_;
};

}  // namespace

std::optional<std::string> boundary_from_content_type(std::string_view content_type) {
  auto parsed = parse_header_value(content_type, "Content-Type");
  if (!parsed) return std::nullopt;
  const std::string* boundary = parsed->param("boundary");
  if (boundary == nullptr || boundary->empty()) return std::nullopt;
  return *boundary;
}

Result<std::vector<MultipartPart>> parse_multipart(std::string_view content_type,
                                                   std::string_view body,
                                                   const MultipartLimits& limits) {
  auto boundary = request_boundary(content_type);
  if (!boundary) return std::unexpected(boundary.error());
  const DelimiterFinder finder(body, *boundary);
  const auto bare_lf = [] { return invalid("multipart delimiter lines must end with CRLF"); };

  std::optional<Delimiter> delim = finder.find(0, /*at_line_start=*/true);
  if (!delim) return invalid("multipart body does not contain the boundary from Content-Type");
  std::vector<MultipartPart> parts;
  while (true) {
    if (delim->kind == DelimiterKind::kBareLf) return bare_lf();
    if (delim->kind == DelimiterKind::kClose) return parts;
    if (parts.size() >= limits.max_parts) {
      return invalid("multipart body has more than " + std::to_string(limits.max_parts) + " parts");
    }
    const std::size_t index = parts.size() + 1;
    const std::size_t pos = delim->next;
    std::string_view block;
    std::size_t data_start;
    if (body.substr(pos).starts_with(kCrlf)) {
      data_start = pos + kCrlf.size();  // no headers at all; rejected below
    } else {
      const std::size_t avail = body.size() - pos;
      const std::size_t window = std::min(avail, limits.max_part_header_bytes) + 4;
      std::size_t end = body.substr(pos, window).find("\r\n\r\n");
      if (end == std::string_view::npos) {
        if (avail >= 4 && avail - 4 >= limits.max_part_header_bytes) {
          return invalid("multipart part " + std::to_string(index) +
                         ": header block is larger than " +
                         std::to_string(limits.max_part_header_bytes) + " bytes");
        }
        return invalid("multipart part " + std::to_string(index) +
                       ": header block is not terminated by an empty line");
      }
      block = body.substr(pos, end);
      data_start = pos + end + 4;
    }
    auto part = parse_part_headers(block, index);
    if (!part) return std::unexpected(part.error());
    delim = finder.find(data_start, /*at_line_start=*/true);
    if (!delim) return invalid("multipart body has no closing delimiter (broken boundary?)");
    part->data = body.substr(data_start, delim->data_end - data_start);
    parts.push_back(std::move(*part));
  }
}

}  // namespace ig::http
