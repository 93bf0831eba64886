// Fuzzes the request front end: raw bytes through Beast's parser with the server's limits, then
// the router, query decoding and the request-id check, as http/server.cpp does.
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>

#include "core/text.h"
#include "http/router.h"
#include "http/server.h"

namespace {

ig::http::Router& router() {
  static ig::http::Router* r = [] {
    auto* r = new ig::http::Router();
    auto h = [](ig::http::Request&) -> boost::asio::awaitable<ig::http::Response> {
      co_return ig::http::Response::json(200, "{}");
    };
    r->add("GET", "/v1/me", h);
    r->add("GET", "/v1/tasks/{id}", h);
    r->add("POST", "/v1/images/generations", h);
    r->add("GET", "/api/jobs/{id}/image", h);
    return r;
  }();
  return *r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace http = boost::beast::http;
  http::request_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(64 * 1024);
  parser.eager(true);
  boost::system::error_code ec;
  parser.put(boost::asio::buffer(data, size), ec);
  if (ec || !parser.is_header_done()) return 0;
  const auto& req = parser.get();
  std::string target(req.target());
  ig::http::Request r;
  auto q = target.find('?');
  r.path = target.substr(0, q);
  if (q != std::string::npos) r.query = target.substr(q + 1);
  auto match = router().match(req.method_string(), r.path);
  if (match.handler == nullptr && !match.error) __builtin_trap();
  (void)r.query_param("task_id");
  (void)ig::printable(r.path);
  auto rid = req.find("x-request-id");
  if (rid != req.end()) (void)ig::http::is_sane_request_id(rid->value());
  return 0;
}
