#pragma once
// The base URL that reply links (result images) are built on, for one request. Pure: the caller
// decides whether the request came from a trusted proxy.

#include <optional>
#include <string>
#include <string_view>

namespace ig::api {

struct ForwardedHeaders {
  std::optional<std::string_view> proto;       // X-Forwarded-Proto
  std::optional<std::string_view> host;        // X-Forwarded-Host
  std::optional<std::string_view> plain_host;  // Host
};

// From a trusted proxy: X-Forwarded-Proto (http or https) replaces the scheme of
// `configured_base` and X-Forwarded-Host its host; the base's path prefix stays. Without
// X-Forwarded-Host, the Host header stands in only when the operator configured no public base
// URL (`base_is_default`), since proxies often send their upstream's name as Host. Each header
// may be a comma-separated list (one entry per proxy hop): the first entry is the client's.
// Values that are not a plain scheme or host[:port] are ignored.
std::string forwarded_base_url(std::string_view configured_base, bool base_is_default,
                               const ForwardedHeaders& headers);

}  // namespace ig::api
