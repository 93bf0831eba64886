#include "blobs/http_range.h"

#include <algorithm>
#include <limits>
#include <optional>

namespace ig::blobs {
namespace {

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool iequals(std::string_view a, std::string_view b) {
  return std::ranges::equal(a, b, [](char x, char y) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
    return lower(x) == lower(y);
  });
}

// 1*DIGIT from the front of `s`, saturating at the uint64 maximum (a huge position is still
// well-formed: past any end).
std::optional<std::uint64_t> take_number(std::string_view& s) {
  if (s.empty() || !is_digit(s.front())) return std::nullopt;
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t value = 0;
  while (!s.empty() && is_digit(s.front())) {
    std::uint64_t digit = static_cast<std::uint64_t>(s.front() - '0');
    value = value > (kMax - digit) / 10 ? kMax : value * 10 + digit;
    s.remove_prefix(1);
  }
  return value;
}

// The non-empty, trimmed elements of a comma-separated list (empty elements are allowed).
std::size_t count_elements(std::string_view list, std::string_view& only) {
  std::size_t count = 0;
  while (true) {
    std::size_t comma = list.find(',');
    std::string_view element = trim(list.substr(0, comma));
    if (!element.empty()) {
      ++count;
      only = element;
    }
    if (comma == std::string_view::npos) return count;
    list.remove_prefix(comma + 1);
  }
}

struct EntityTag {
  bool weak = false;
  std::string_view opaque;  // with its quotes
};

bool is_etagc(char c) {
  auto u = static_cast<unsigned char>(c);
  return u == 0x21 || (u >= 0x23 && u <= 0x7e) || u >= 0x80;
}

// entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, from the front of `s`.
std::optional<EntityTag> take_entity_tag(std::string_view& s) {
  EntityTag tag;
  if (s.starts_with("W/")) {
    tag.weak = true;
    s.remove_prefix(2);
  }
  if (s.empty() || s.front() != '"') return std::nullopt;
  std::size_t end = 1;
  while (end < s.size() && is_etagc(s[end])) ++end;
  if (end >= s.size() || s[end] != '"') return std::nullopt;
  tag.opaque = s.substr(0, end + 1);
  s.remove_prefix(end + 1);
  return tag;
}

std::optional<EntityTag> whole_entity_tag(std::string_view s) {
  s = trim(s);
  auto tag = take_entity_tag(s);
  if (!tag || !s.empty()) return std::nullopt;
  return tag;
}

}  // namespace

ParsedRange parse_range(std::string_view header, std::uint64_t size) {
  header = trim(header);
  std::size_t eq = header.find('=');
  if (eq == std::string_view::npos || !iequals(header.substr(0, eq), "bytes")) return {};
  std::string_view spec;
  if (count_elements(header.substr(eq + 1), spec) != 1) return {};  // none, or several

  std::optional<std::uint64_t> first, last;
  std::optional<std::uint64_t> suffix;
  if (spec.front() == '-') {
    spec.remove_prefix(1);
    suffix = take_number(spec);
    if (!suffix) return {};
  } else {
    first = take_number(spec);
    if (!first || spec.empty() || spec.front() != '-') return {};
    spec.remove_prefix(1);
    if (!spec.empty()) {
      last = take_number(spec);
      if (!last || *last < *first) return {};
    }
  }
  if (!spec.empty()) return {};
  if (size == 0) return {};

  if (suffix) {
    if (*suffix == 0) return {RangeKind::kUnsatisfiable, {}};
    std::uint64_t length = std::min(*suffix, size);
    return {RangeKind::kSatisfiable, {size - length, length}};
  }
  if (*first >= size) return {RangeKind::kUnsatisfiable, {}};
  std::uint64_t end = std::min(last.value_or(size - 1), size - 1);
  return {RangeKind::kSatisfiable, {*first, end - *first + 1}};
}

bool if_none_match_matches(std::string_view header, std::string_view etag) {
  header = trim(header);
  if (header == "*") return true;
  auto ours = whole_entity_tag(etag);
  if (!ours) return false;
  bool matched = false, any = false;
  while (true) {
    while (!header.empty() && (is_ows(header.front()) || header.front() == ',')) {
      header.remove_prefix(1);
    }
    if (header.empty()) break;
    auto tag = take_entity_tag(header);
    if (!tag) return false;  // malformed: no match at all
    any = true;
    matched = matched || tag->opaque == ours->opaque;
    header = trim(header);
    if (!header.empty() && header.front() != ',') return false;
  }
  return any && matched;
}

bool if_range_matches(std::string_view header, std::string_view etag) {
  auto theirs = whole_entity_tag(header);
  auto ours = whole_entity_tag(etag);
  return theirs && ours && !theirs->weak && !ours->weak && theirs->opaque == ours->opaque;
}

ResponsePlan plan_response(const ConditionalHeaders& headers, std::uint64_t size,
                           std::string_view etag) {
  if (!headers.if_none_match.empty() && if_none_match_matches(headers.if_none_match, etag)) {
    return {.status = 304};
  }
  ResponsePlan full{.status = 200, .offset = 0, .length = size};
  if (headers.range.empty()) return full;
  if (!headers.if_range.empty() && !if_range_matches(headers.if_range, etag)) return full;

  ParsedRange parsed = parse_range(headers.range, size);
  switch (parsed.kind) {
    case RangeKind::kIgnore:
      return full;
    case RangeKind::kUnsatisfiable:
      return {.status = 416, .content_range = "bytes */" + std::to_string(size)};
    case RangeKind::kSatisfiable:
      break;
  }
  const ByteRange& r = parsed.range;
  return {.status = 206,
          .offset = r.offset,
          .length = r.length,
          .content_range = "bytes " + std::to_string(r.offset) + "-" +
                           std::to_string(r.offset + r.length - 1) + "/" + std::to_string(size)};
}

}  // namespace ig::blobs
