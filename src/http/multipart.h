#pragma once
// multipart/form-data (RFC 7578 over RFC 2046) for request bodies already held in memory, such as
// OpenAI SDK `images.edit` uploads (`image`, repeated `image` / `image[]`, `mask`, `prompt`, ...).
//
// Why hand-written: Debian 12 ships no maintained C++ form-data parser. Boost 1.81 (Beast, URL)
// has none; libmicrohttpd's post processor is tied to its own server and streams into callbacks;
// libgmime / libvmime / Poco are whole mail or network frameworks that copy every part. What we
// need is small: one pass over a body we already hold, part data returned as views into it, hard
// limits, no allocations proportional to the data, and a fuzz target (fuzz/multipart_fuzz.cpp).
//
// Accepted syntax, deliberately narrow:
//  * Line endings are CRLF only, as RFC 2046 requires and as every client we serve (curl,
//    browsers, the Node / Python SDKs) sends. Bare LF is rejected with its own error rather than
//    guessed at: a lenient LF delimiter could split binary image data that contains "\n--b".
//  * A delimiter is CRLF "--" boundary, then either "--" (close) or optional spaces/tabs and
//    CRLF. The boundary string anywhere else (not at a line start, or followed by other bytes) is
//    data. The delimiter that opens the first part may also be the very first bytes of the body,
//    and a part's data may be empty with the closing delimiter right after its blank line.
//  * Preamble and epilogue are ignored. A body whose first delimiter is the close delimiter has
//    no parts and parses to an empty list.
//  * Header names and parameter names are case-insensitive; values may be tokens or quoted
//    strings (backslash escapes removed; WHATWG-style %22 escapes are kept verbatim). Folded
//    headers, control characters in headers and duplicate Content-Disposition / Content-Type
//    headers or parameters are errors. Other part headers are ignored; RFC 2231 continuations
//    (name*0=) are not supported.
//  * Every part must have `Content-Disposition: form-data; name="..."` with a non-empty name.
//    `filename*=UTF-8''...` (RFC 5987 / 8187; ISO-8859-1 converted to UTF-8) wins over
//    `filename`. Filenames are untrusted: they may contain '/' or "..".
//
// Cost: linear in the body (the delimiter is at most 74 bytes; each header block is scanned at
// most once within the header limit). Never reads outside `body`.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace ig::http {

// One form field. `data` points into the body passed to parse_multipart and is valid only as long
// as that body is; every other member owns its bytes. `name` is non-empty.
struct MultipartPart {
  std::string name;                     // from Content-Disposition; quoted-string unescaped
  std::optional<std::string> filename;  // present for file parts (filename or filename*)
  std::string content_type;  // media type lower-cased, parameters verbatim; "text/plain" if absent
  std::string_view data;     // view into the body (zero copy); may be empty, may hold NULs
};

// Hard caps checked while parsing, so a hostile body fails fast. A header block is the bytes
// between a delimiter line and the blank line that ends the part's headers.
struct MultipartLimits {
  std::size_t max_parts = 64;
  std::size_t max_part_header_bytes = 8192;
};

// Parses a whole multipart/form-data body. `content_type` is the request's Content-Type header
// value (must be multipart/form-data); the boundary comes from it. On success the parts are in
// body order and their data views are disjoint, ordered sub-ranges of `body`. Every failure is
// Error::invalid with a message saying what is wrong (never echoing body bytes).
Result<std::vector<MultipartPart>> parse_multipart(std::string_view content_type,
                                                   std::string_view body,
                                                   const MultipartLimits& limits = {});

// The `boundary` parameter of a Content-Type value (parameter name case-insensitive, value quoted
// or not, unescaped), whatever the media type. nullopt when it is absent, empty or the parameter
// list is malformed. Length and character rules are checked only by parse_multipart.
std::optional<std::string> boundary_from_content_type(std::string_view content_type);

}  // namespace ig::http
