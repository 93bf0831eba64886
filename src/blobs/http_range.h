#pragma once
// Conditional and range GETs of a stored blob (RFC 9110 §13, §14), as pure functions: the
// HTTP layer passes the request's Range / If-None-Match / If-Range values plus the blob's size
// and ETag, and turns the returned ResponsePlan into a status, headers and a body.
//
// Decisions (each is a choice RFC 9110 allows; every one falls back to a plain 200):
//  - One range only. A header with several ranges is ignored (full 200): no
//    multipart/byteranges, and a client never receives fewer ranges than it asked for.
//  - A malformed header, an invalid range (last < first) or a unit other than "bytes" is
//    ignored (full 200). A well-formed range starting at or past the end is 416.
//  - An empty blob ignores Range (200 with an empty body): no byte range can describe it.
//  - If-None-Match uses weak comparison and "*" matches (the blob exists) → 304; it is checked
//    before Range. A malformed If-None-Match never matches.
//  - If-Range: an entity-tag must match strongly for the Range to apply; a date (we do not
//    compare Last-Modified) or anything else makes the Range ignored (full 200).
// The caller only uses this for GET/HEAD and always sends `Accept-Ranges: bytes`.

#include <cstdint>
#include <string>
#include <string_view>

namespace ig::blobs {

// [offset, offset + length), length >= 1.
struct ByteRange {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  bool operator==(const ByteRange&) const = default;
};

enum class RangeKind {
  kIgnore,         // no usable Range header: serve everything
  kSatisfiable,    // serve `range`
  kUnsatisfiable,  // 416
};

struct ParsedRange {
  RangeKind kind = RangeKind::kIgnore;
  ByteRange range;  // set when kSatisfiable
};

// Parses a Range header value (empty = absent) against a representation of `size` bytes.
ParsedRange parse_range(std::string_view header, std::uint64_t size);

// If-None-Match value (non-empty) against our entity-tag, weak comparison.
bool if_none_match_matches(std::string_view header, std::string_view etag);

// If-Range value (non-empty) against our entity-tag, strong comparison; dates never match.
bool if_range_matches(std::string_view header, std::string_view etag);

// Request header values; empty means absent.
struct ConditionalHeaders {
  std::string_view range;
  std::string_view if_none_match;
  std::string_view if_range;
};

struct ResponsePlan {
  int status = 200;           // 200, 206, 304 or 416
  std::uint64_t offset = 0;   // the body is bytes [offset, offset + length) of the blob
  std::uint64_t length = 0;   // whole size for 200, 0 for 304 and 416
  std::string content_range;  // "bytes 0-99/1000" (206), "bytes */1000" (416), else empty
};

// `etag` is the blob's quoted entity-tag (BlobInfo::etag).
ResponsePlan plan_response(const ConditionalHeaders& headers, std::uint64_t size,
                           std::string_view etag);

}  // namespace ig::blobs
