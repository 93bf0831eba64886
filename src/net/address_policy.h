#pragma once
// AddressPolicy: which IP addresses an outbound connection may reach (SSRF defence). The check
// runs on the exact address a connection is about to be opened to (CurlHttpClient does it in
// CURLOPT_OPENSOCKETFUNCTION), so DNS rebinding and redirects to internal hosts are covered.
//
// Public unicast is always allowed. Loopback, private and link-local each need their flag.
// Everything else that is not public unicast is always refused: unspecified (0.0.0.0/8, ::),
// multicast, broadcast, reserved (240/4, 192.0.0/24, ...) and the documentation ranges
// (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32): they are never a legitimate upstream,
// so refusing them costs nothing and leaves no oddly-routed hole. IPv6 forms that embed an IPv4
// address (::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by that IPv4 address.

#include <boost/asio/ip/address.hpp>
#include <string>
#include <string_view>

namespace ig::net {

// Which non-public destinations are reachable; the default refuses them all.
struct AddressPolicy {
  bool allow_loopback = false;    // 127/8, ::1
  bool allow_private = false;     // 10/8, 172.16/12, 192.168/16, 100.64/10, 198.18/15, fc00::/7
  bool allow_link_local = false;  // 169.254/16 (incl. cloud metadata 169.254.169.254), fe80::/10

  friend bool operator==(const AddressPolicy&, const AddressPolicy&) = default;
};

// What kind of destination an address is (one class per address; never fails).
enum class AddressClass {
  kPublic,
  kLoopback,
  kPrivate,
  kLinkLocal,
  kUnspecified,
  kMulticast,
  kBroadcast,
  kDocumentation,
  kReserved,
};

std::string_view to_string(AddressClass c);

// What kind of address this is (IPv4-embedding IPv6 forms are classified by the IPv4 address).
AddressClass classify(const boost::asio::ip::address& address);

bool is_allowed(const boost::asio::ip::address& address, const AddressPolicy& policy);

// "scheme://host:port" of an absolute URL (lower-cased, default port filled in), or "" when it
// does not parse. Adapters trust their upstream's own origin like the upstream, and any other
// origin (a URL the upstream handed back) only under the strict policy.
std::string url_origin(std::string_view url);

}  // namespace ig::net
