#include "api/callback_url.h"

#include <boost/asio/ip/address.hpp>
#include <boost/url/parse.hpp>
#include <string>

#include "core/text.h"

namespace ig::api {

namespace {
std::unexpected<Error> bad(std::string message) {
  return std::unexpected(Error::invalid(std::move(message), "callback_url"));
}
}  // namespace

Result<void> check_callback_url(std::string_view url, const net::AddressPolicy& policy) {
  if (url.empty()) return bad("'callback_url' must not be empty");
  if (url.size() > 2048) return bad("'callback_url' is longer than 2048 characters");
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed) return bad("'callback_url' is not an absolute URL");
  const std::string scheme = to_lower_ascii(parsed->scheme());
  if (scheme != "http" && scheme != "https") return bad("'callback_url' must be http or https");
  if (parsed->has_userinfo()) return bad("'callback_url' must not carry credentials");
  std::string host = to_lower_ascii(parsed->encoded_host_address());
  if (host.empty()) return bad("'callback_url' has no host");
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost" || host.ends_with(".localhost")) {
    if (!policy.allow_loopback) return bad("'callback_url' points at a loopback address");
    return {};
  }
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(host, ec);
  if (!ec && !net::is_allowed(address, policy)) {
    return bad("'callback_url' points at a refused address (" +
               std::string(net::to_string(net::classify(address))) + ")");
  }
  return {};
}

}  // namespace ig::api
