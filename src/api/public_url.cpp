#include "api/public_url.h"

#include <cctype>

namespace ig::api {
namespace {

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

std::string_view first_entry(std::string_view v) { return trim(v.substr(0, v.find(','))); }

bool valid_port(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  int value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  return value >= 1 && value <= 65535;
}

// host[:port], where host is a DNS name, an IPv4 literal or a bracketed IPv6 literal.
bool valid_authority(std::string_view v) {
  if (v.empty() || v.size() > 255) return false;
  std::string_view host = v;
  std::string_view port;
  if (v.front() == '[') {
    const std::size_t close = v.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    for (char c : v.substr(1, close - 1)) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return false;
    }
    const std::string_view rest = v.substr(close + 1);
    if (rest.empty()) return true;
    return rest.front() == ':' && valid_port(rest.substr(1));
  }
  if (const std::size_t colon = v.rfind(':'); colon != std::string_view::npos) {
    host = v.substr(0, colon);
    port = v.substr(colon + 1);
    if (!valid_port(port)) return false;
  }
  if (host.empty() || host.front() == '.' || host.front() == '-') return false;
  for (char c : host) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') return false;
  }
  return true;
}

}  // namespace

std::string forwarded_base_url(std::string_view configured_base, bool base_is_default,
                               const ForwardedHeaders& headers) {
  const std::size_t scheme_end = configured_base.find("://");
  if (scheme_end == std::string_view::npos) return std::string(configured_base);
  std::string_view scheme = configured_base.substr(0, scheme_end);
  const std::string_view after = configured_base.substr(scheme_end + 3);
  const std::size_t slash = after.find('/');
  std::string_view authority = after.substr(0, slash);
  const std::string_view prefix = slash == std::string_view::npos ? "" : after.substr(slash);

  if (headers.proto) {
    std::string proto(first_entry(*headers.proto));
    for (char& c : proto) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (proto == "http" || proto == "https") scheme = proto == "http" ? "http" : "https";
  }
  if (headers.host && valid_authority(first_entry(*headers.host))) {
    authority = first_entry(*headers.host);
  } else if (base_is_default && headers.plain_host && valid_authority(trim(*headers.plain_host))) {
    authority = trim(*headers.plain_host);
  }
  std::string out;
  out.reserve(scheme.size() + 3 + authority.size() + prefix.size());
  out.append(scheme).append("://").append(authority).append(prefix);
  return out;
}

}  // namespace ig::api
