#pragma once
// HttpClient: the one way the product talks to upstream HTTP servers. A request is a plain value;
// the result is a response (any status, 500 included) or a NetError saying what failed and
// whether the request certainly never reached the server. Implementations never block a thread
// while waiting (CurlHttpClient) or never touch the network at all (FakeHttpClient).

#include <boost/asio/awaitable.hpp>
#include <cstddef>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net/address_policy.h"

namespace ig::net {

// One part of a multipart/form-data body (OpenAI images.edit). `value` is sent as-is (binary
// safe) and is read in place while uploading, not copied into a second buffer.
struct MimeField {
  std::string name;
  std::string value;
  std::optional<std::string> filename;  // set for file parts: `filename="..."`
  std::string content_type;             // "" = none given (curl picks none for plain fields)
};

// Everything one HTTP exchange needs. Plain data: cheap to move, safe to record in fakes.
struct HttpRequest {
  std::string method = "GET";
  std::string url;  // http:// or https:// only
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;             // sent as-is when `mime` is empty
  std::vector<MimeField> mime;  // non-empty: multipart/form-data (body is ignored)
  int connect_timeout_ms = 10'000;
  int total_timeout_ms = 300'000;  // whole exchange, including time queued for a connection
  // "" = none (environment proxies are ignored too). With a proxy, the address policy is applied
  // to the proxy's address (the one we connect to); the proxy must police the origin itself.
  std::string proxy;
  std::size_t max_response_bytes = 64 << 20;  // body bytes; enforced while receiving
  int max_redirects = 0;                      // 0 = a 3xx is returned as the response
  // Which addresses this request may connect to; nullopt = the client's default. Use the strict
  // policy for user-supplied URLs and a permissive one only for operator-configured upstreams.
  std::optional<AddressPolicy> address_policy;
  // Optional streaming sink (e.g. an SSE relay): called with each received body chunk, in
  // order; return false to abort (the send then fails with kAborted). When set, the body is
  // NOT accumulated in HttpResponse::body (max_response_bytes still bounds the total). It runs
  // on the client's internal strand, not the caller's executor: it must be quick, must not
  // block, must not throw (a throw counts as `false`) and must synchronize what it shares.
  std::function<bool(std::string_view)> on_body_chunk;
};

// A complete response. Any status is a response, not an error.
struct HttpResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names, in order
  std::string body;

  // The first header with this name (case-insensitive), or nullopt.
  std::optional<std::string_view> header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (key.size() != name.size()) continue;
      bool same = true;
      for (std::size_t i = 0; i < key.size() && same; ++i) {
        char c = name[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        same = key[i] == c;
      }
      if (same) return value;
    }
    return std::nullopt;
  }
};

// What went wrong, coarse enough for retry/fallback decisions and error mapping.
enum class NetErrc {
  kConnect,           // DNS failure, connection refused, proxy unreachable
  kTimeout,           // connect or total deadline passed
  kReset,             // the connection broke (reset, closed early, truncated body, HTTP/2 error)
  kTooLarge,          // body above max_response_bytes, or headers above 256 KiB
  kBlockedAddress,    // the address policy refused every address the host resolved to
  kBadUrl,            // malformed URL, unsupported scheme or proxy scheme
  kTooManyRedirects,  // more than max_redirects
  kAborted,           // on_body_chunk returned false, the caller cancelled, or client shutdown
  kTls,               // handshake or certificate failure
  kOther,             // invalid request fields, out of memory, anything else
};

inline std::string_view to_string(NetErrc code) {
  switch (code) {
    case NetErrc::kConnect:
      return "connect";
    case NetErrc::kTimeout:
      return "timeout";
    case NetErrc::kReset:
      return "reset";
    case NetErrc::kTooLarge:
      return "too_large";
    case NetErrc::kBlockedAddress:
      return "blocked_address";
    case NetErrc::kBadUrl:
      return "bad_url";
    case NetErrc::kTooManyRedirects:
      return "too_many_redirects";
    case NetErrc::kAborted:
      return "aborted";
    case NetErrc::kTls:
      return "tls";
    case NetErrc::kOther:
      return "other";
  }
  return "other";
}

// Why a send produced no response. `sent_nothing` is conservative: false unless curl certainly
// wrote no request byte (DNS/connect/TLS-handshake failures, address blocked, invalid request).
struct NetError {
  NetErrc code = NetErrc::kOther;
  std::string message;
  // True when the request certainly never reached the server (safe to retry elsewhere).
  bool sent_nothing = false;
  // The status line that arrived before the failure (0: none), e.g. 200 for a body cut short.
  int status = 0;
};

template <class T>
using NetResult = std::expected<T, NetError>;

// The interface other modules depend on; CurlHttpClient is the production implementation.
class HttpClient {
 public:
  virtual ~HttpClient() = default;

  // Performs one exchange; the coroutine resumes on the caller's executor.
  //
  // The request is taken by value: pass a NAMED variable moved in
  // (`co_await client.send(std::move(req))`), never a temporary built inside the co_await
  // expression (GCC 12 destroys such temporaries twice; see docs/architecture.md).
  virtual boost::asio::awaitable<NetResult<HttpResponse>> send(HttpRequest request) = 0;
};

// A GET for a file an upstream handed back by URL (a result image). No Authorization header
// (such files usually sit on a CDN that must not see our key), at most 3 redirects. The
// upstream's own origin (`upstream_base`) gets `upstream_policy`, as trusted as the upstream;
// any other origin gets the strict default policy, so a reply cannot point us at internal
// addresses.
HttpRequest upstream_file_request(std::string url, std::string_view upstream_base,
                                  const std::optional<AddressPolicy>& upstream_policy);

}  // namespace ig::net
