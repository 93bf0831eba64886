#include "net/address_policy.h"

#include <gtest/gtest.h>

#include <string>

namespace ig::net {
namespace {

namespace ip = boost::asio::ip;

struct Case {
  const char* address;
  AddressClass kind;
};

constexpr AddressPolicy kStrict{};
constexpr AddressPolicy kLoopback{.allow_loopback = true};
constexpr AddressPolicy kPrivate{.allow_private = true};
constexpr AddressPolicy kLinkLocal{.allow_link_local = true};
constexpr AddressPolicy kAll{true, true, true};

const Case kCases[] = {
    // Public unicast, both families, incl. range edges next to the special ones.
    {"8.8.8.8", AddressClass::kPublic},
    {"1.1.1.1", AddressClass::kPublic},
    {"9.255.255.255", AddressClass::kPublic},
    {"11.0.0.0", AddressClass::kPublic},
    {"100.63.255.255", AddressClass::kPublic},
    {"100.128.0.0", AddressClass::kPublic},
    {"126.255.255.255", AddressClass::kPublic},
    {"128.0.0.0", AddressClass::kPublic},
    {"169.253.255.255", AddressClass::kPublic},
    {"169.255.0.0", AddressClass::kPublic},
    {"172.15.255.255", AddressClass::kPublic},
    {"172.32.0.0", AddressClass::kPublic},
    {"192.167.255.255", AddressClass::kPublic},
    {"192.169.0.0", AddressClass::kPublic},
    {"223.255.255.255", AddressClass::kPublic},
    {"2606:4700:4700::1111", AddressClass::kPublic},
    {"2a00:1450:4001:80b::200e", AddressClass::kPublic},
    // Loopback.
    {"127.0.0.1", AddressClass::kLoopback},
    {"127.255.255.254", AddressClass::kLoopback},
    {"::1", AddressClass::kLoopback},
    // Private.
    {"10.0.0.1", AddressClass::kPrivate},
    {"10.255.255.255", AddressClass::kPrivate},
    {"172.16.0.1", AddressClass::kPrivate},
    {"172.31.255.255", AddressClass::kPrivate},
    {"192.168.0.1", AddressClass::kPrivate},
    {"192.168.255.255", AddressClass::kPrivate},
    {"100.64.0.1", AddressClass::kPrivate},
    {"100.127.255.255", AddressClass::kPrivate},
    {"198.18.0.1", AddressClass::kPrivate},
    {"198.19.255.255", AddressClass::kPrivate},
    {"fc00::1", AddressClass::kPrivate},
    {"fd12:3456:789a::1", AddressClass::kPrivate},
    {"fec0::1", AddressClass::kPrivate},
    {"64:ff9b:1::1", AddressClass::kPrivate},
    // Link-local, incl. the cloud metadata endpoints.
    {"169.254.0.1", AddressClass::kLinkLocal},
    {"169.254.169.254", AddressClass::kLinkLocal},
    {"fe80::1", AddressClass::kLinkLocal},
    {"febf:ffff::1", AddressClass::kLinkLocal},
    {"fd00:ec2::254", AddressClass::kPrivate},
    // Unspecified / "this network".
    {"0.0.0.0", AddressClass::kUnspecified},
    {"0.1.2.3", AddressClass::kUnspecified},
    {"::", AddressClass::kUnspecified},
    // Multicast and broadcast.
    {"224.0.0.1", AddressClass::kMulticast},
    {"239.255.255.255", AddressClass::kMulticast},
    {"ff02::1", AddressClass::kMulticast},
    {"ff0e::1", AddressClass::kMulticast},
    {"255.255.255.255", AddressClass::kBroadcast},
    // Documentation (always refused).
    {"192.0.2.1", AddressClass::kDocumentation},
    {"198.51.100.7", AddressClass::kDocumentation},
    {"203.0.113.9", AddressClass::kDocumentation},
    {"2001:db8::1", AddressClass::kDocumentation},
    {"3fff::1", AddressClass::kDocumentation},
    // Reserved.
    {"240.0.0.1", AddressClass::kReserved},
    {"255.255.255.254", AddressClass::kReserved},
    {"192.0.0.8", AddressClass::kReserved},
    {"192.88.99.1", AddressClass::kReserved},
    {"::7f00:1", AddressClass::kReserved},  // deprecated IPv4-compatible ::127.0.0.1
    {"100::1", AddressClass::kReserved},
    {"2001::1", AddressClass::kReserved},  // Teredo
    {"4000::1", AddressClass::kReserved},  // outside 2000::/3
    // IPv4-mapped IPv6: judged by the IPv4 address.
    {"::ffff:127.0.0.1", AddressClass::kLoopback},
    {"::ffff:10.1.2.3", AddressClass::kPrivate},
    {"::ffff:172.16.5.4", AddressClass::kPrivate},
    {"::ffff:192.168.1.1", AddressClass::kPrivate},
    {"::ffff:100.64.0.1", AddressClass::kPrivate},
    {"::ffff:169.254.169.254", AddressClass::kLinkLocal},
    {"::ffff:0.0.0.0", AddressClass::kUnspecified},
    {"::ffff:224.0.0.1", AddressClass::kMulticast},
    {"::ffff:255.255.255.255", AddressClass::kBroadcast},
    {"::ffff:8.8.8.8", AddressClass::kPublic},
    {"::ffff:0:127.0.0.1", AddressClass::kLoopback},  // SIIT IPv4-translated
    // NAT64 well-known prefix: judged by the IPv4 address.
    {"64:ff9b::127.0.0.1", AddressClass::kLoopback},
    {"64:ff9b::10.0.0.1", AddressClass::kPrivate},
    {"64:ff9b::192.168.0.1", AddressClass::kPrivate},
    {"64:ff9b::169.254.169.254", AddressClass::kLinkLocal},
    {"64:ff9b::0.0.0.0", AddressClass::kUnspecified},
    {"64:ff9b::224.0.0.1", AddressClass::kMulticast},
    {"64:ff9b::8.8.8.8", AddressClass::kPublic},
    // 6to4: judged by the embedded IPv4 address.
    {"2002:7f00:1::1", AddressClass::kLoopback},
    {"2002:a9fe:a9fe::1", AddressClass::kLinkLocal},
    {"2002:808:808::1", AddressClass::kPublic},
};

bool expected_allowed(AddressClass kind, const AddressPolicy& policy) {
  switch (kind) {
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

TEST(AddressPolicyTest, ClassifiesEveryRange) {
  for (const Case& c : kCases) {
    auto address = ip::make_address(c.address);
    EXPECT_EQ(classify(address), c.kind)
        << c.address << " classified as " << to_string(classify(address)) << ", want "
        << to_string(c.kind);
  }
}

TEST(AddressPolicyTest, EachFlagOpensOnlyItsOwnClass) {
  for (const Case& c : kCases) {
    auto address = ip::make_address(c.address);
    for (const AddressPolicy& policy : {kStrict, kLoopback, kPrivate, kLinkLocal, kAll}) {
      EXPECT_EQ(is_allowed(address, policy), expected_allowed(c.kind, policy))
          << c.address << " with loopback=" << policy.allow_loopback
          << " private=" << policy.allow_private << " link_local=" << policy.allow_link_local;
    }
  }
}

TEST(AddressPolicyTest, DefaultPolicyRefusesEverythingInternal) {
  for (const char* a : {"127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1",
                        "64:ff9b::a9fe:a9fe", "0.0.0.0", "::", "fe80::1%1"}) {
    EXPECT_FALSE(is_allowed(ip::make_address(a), AddressPolicy{})) << a;
  }
  EXPECT_TRUE(is_allowed(ip::make_address("93.184.216.34"), AddressPolicy{}));
}

TEST(AddressPolicyTest, AllFlagsStillRefuseTheNeverUsefulClasses) {
  for (const char* a : {"0.0.0.0", "::", "224.0.0.251", "ff02::fb", "255.255.255.255", "192.0.2.10",
                        "2001:db8::5", "240.1.2.3", "::ffff:0.0.0.0"}) {
    EXPECT_FALSE(is_allowed(ip::make_address(a), kAll)) << a;
  }
}

TEST(UrlOrigin, NormalizesSchemeHostAndDefaultPort) {
  EXPECT_EQ(url_origin("https://CDN.Example/r/0.png"), "https://cdn.example:443");
  EXPECT_EQ(url_origin("http://127.0.0.1:8080/files/a"), "http://127.0.0.1:8080");
  EXPECT_EQ(url_origin("HTTP://kie.example"), "http://kie.example:80");
  EXPECT_EQ(url_origin("https://kie.example:443/x"), url_origin("https://kie.example/y"));
  EXPECT_NE(url_origin("https://kie.example.evil/x"), url_origin("https://kie.example/x"));
  EXPECT_EQ(url_origin("not a url"), "");
}

}  // namespace
}  // namespace ig::net
