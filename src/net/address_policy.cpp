#include "net/address_policy.h"
#include "net/http_client.h"

#include <boost/url/parse.hpp>

#include <array>
#include <cstdint>

namespace ig::net {
namespace {

namespace ip = boost::asio::ip;

struct V4Range {
  std::uint32_t base;
  int prefix;
  AddressClass kind;
};

constexpr std::uint32_t v4(int a, int b, int c, int d) {
  return (static_cast<std::uint32_t>(a) << 24) | (static_cast<std::uint32_t>(b) << 16) |
         (static_cast<std::uint32_t>(c) << 8) | static_cast<std::uint32_t>(d);
}

// Most specific first where ranges nest.
constexpr std::array kV4Ranges = {
    V4Range{v4(255, 255, 255, 255), 32, AddressClass::kBroadcast},
    V4Range{v4(0, 0, 0, 0), 8, AddressClass::kUnspecified},  // "this network"; 0.0.0.0 = local
    V4Range{v4(10, 0, 0, 0), 8, AddressClass::kPrivate},
    V4Range{v4(100, 64, 0, 0), 10, AddressClass::kPrivate},  // CGNAT shared space
    V4Range{v4(127, 0, 0, 0), 8, AddressClass::kLoopback},
    V4Range{v4(169, 254, 0, 0), 16, AddressClass::kLinkLocal},
    V4Range{v4(172, 16, 0, 0), 12, AddressClass::kPrivate},
    V4Range{v4(192, 0, 0, 0), 24, AddressClass::kReserved},  // IETF protocol assignments
    V4Range{v4(192, 0, 2, 0), 24, AddressClass::kDocumentation},
    V4Range{v4(192, 88, 99, 0), 24, AddressClass::kReserved},  // deprecated 6to4 relay anycast
    V4Range{v4(192, 168, 0, 0), 16, AddressClass::kPrivate},
    V4Range{v4(198, 18, 0, 0), 15, AddressClass::kPrivate},  // benchmarking networks
    V4Range{v4(198, 51, 100, 0), 24, AddressClass::kDocumentation},
    V4Range{v4(203, 0, 113, 0), 24, AddressClass::kDocumentation},
    V4Range{v4(224, 0, 0, 0), 4, AddressClass::kMulticast},
    V4Range{v4(240, 0, 0, 0), 4, AddressClass::kReserved},
};

AddressClass classify_v4(std::uint32_t a) {
  for (const auto& r : kV4Ranges) {
    std::uint32_t mask = r.prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - r.prefix);
    if ((a & mask) == (r.base & mask)) return r.kind;
  }
  return AddressClass::kPublic;
}

std::uint32_t v4_at(const ip::address_v6::bytes_type& b, std::size_t i) {
  return (std::uint32_t{b[i]} << 24) | (std::uint32_t{b[i + 1]} << 16) |
         (std::uint32_t{b[i + 2]} << 8) | std::uint32_t{b[i + 3]};
}

bool starts_with(const ip::address_v6::bytes_type& b, std::initializer_list<std::uint8_t> prefix,
                 int bits) {
  int i = 0;
  for (std::uint8_t p : prefix) {
    int take = bits - i * 8;
    if (take <= 0) break;
    std::uint8_t mask = take >= 8 ? 0xff : static_cast<std::uint8_t>(0xff << (8 - take));
    if ((b[i] & mask) != (p & mask)) return false;
    ++i;
  }
  return true;
}

AddressClass classify_v6(const ip::address_v6& address) {
  const auto b = address.to_bytes();
  bool first_96_zero = true;
  for (int i = 0; i < 12; ++i) first_96_zero = first_96_zero && b[i] == 0;
  if (first_96_zero) {
    std::uint32_t tail = v4_at(b, 12);
    if (tail == 0) return AddressClass::kUnspecified;
    if (tail == 1) return AddressClass::kLoopback;
    return AddressClass::kReserved;  // deprecated IPv4-compatible ::a.b.c.d
  }
  // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (SIIT translated).
  if (starts_with(b, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 96) ||
      starts_with(b, {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0}, 96)) {
    return classify_v4(v4_at(b, 12));
  }
  if (starts_with(b, {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0}, 96)) {
    return classify_v4(v4_at(b, 12));  // NAT64 well-known prefix
  }
  if (starts_with(b, {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48)) return AddressClass::kPrivate;
  if (starts_with(b, {0x20, 0x02}, 16)) return classify_v4(v4_at(b, 2));  // 6to4
  if (starts_with(b, {0x20, 0x01, 0x0d, 0xb8}, 32)) return AddressClass::kDocumentation;
  if (starts_with(b, {0x3f, 0xff, 0x00}, 20)) return AddressClass::kDocumentation;   // RFC 9637
  if (starts_with(b, {0x20, 0x01, 0x00, 0x00}, 32)) return AddressClass::kReserved;  // Teredo
  if (starts_with(b, {0xff}, 8)) return AddressClass::kMulticast;
  if (starts_with(b, {0xfe, 0x80}, 10)) return AddressClass::kLinkLocal;
  if (starts_with(b, {0xfe, 0xc0}, 10)) return AddressClass::kPrivate;  // deprecated site-local
  if (starts_with(b, {0xfc}, 7)) return AddressClass::kPrivate;         // unique local
  if (starts_with(b, {0x20}, 3)) return AddressClass::kPublic;          // global unicast 2000::/3
  return AddressClass::kReserved;  // 100::/64 discard and everything unallocated
}

}  // namespace

std::string_view to_string(AddressClass c) {
  switch (c) {
    case AddressClass::kPublic:
      return "public";
    case AddressClass::kLoopback:
      return "loopback";
    case AddressClass::kPrivate:
      return "private";
    case AddressClass::kLinkLocal:
      return "link-local";
    case AddressClass::kUnspecified:
      return "unspecified";
    case AddressClass::kMulticast:
      return "multicast";
    case AddressClass::kBroadcast:
      return "broadcast";
    case AddressClass::kDocumentation:
      return "documentation";
    case AddressClass::kReserved:
      return "reserved";
  }
  return "reserved";
}

AddressClass classify(const ip::address& address) {
  if (address.is_v4()) return classify_v4(address.to_v4().to_uint());
  return classify_v6(address.to_v6());
}

bool is_allowed(const ip::address& address, const AddressPolicy& policy) {
  switch (classify(address)) {
    case AddressClass::kPublic:
      return true;
    case AddressClass::kLoopback:
      return policy.allow_loopback;
    case AddressClass::kPrivate:
      return policy.allow_private;
    case AddressClass::kLinkLocal:
      return policy.allow_link_local;
    default:
      return false;
  }
}

std::string url_origin(std::string_view url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return {};
  auto lower = [](std::string_view text) {
    std::string out(text);
    for (char& c : out) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
  };
  const std::string scheme = lower(parsed->scheme());
  std::string port = parsed->port();
  if (port.empty()) port = scheme == "https" ? "443" : scheme == "http" ? "80" : "";
  return scheme + "://" + lower(parsed->encoded_host()) + ":" + port;
}

HttpRequest upstream_file_request(std::string url, std::string_view upstream_base,
                                  const std::optional<AddressPolicy>& upstream_policy) {
  HttpRequest request;
  request.method = "GET";
  const std::string origin = url_origin(url);
  request.address_policy = !origin.empty() && origin == url_origin(upstream_base)
                               ? upstream_policy
                               : std::optional<AddressPolicy>(AddressPolicy{});
  request.url = std::move(url);
  request.max_redirects = 3;
  return request;
}

}  // namespace ig::net
