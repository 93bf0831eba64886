#pragma once
// Transport-neutral request and response. The Beast types stay inside http/server.cpp so the
// api modules compile quickly and can be unit-tested without sockets.

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"

namespace ig::http {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // raw request-target
  std::string path;    // target without the query string
  std::string query;   // after '?', undecoded
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string remote_ip;
  std::string request_id;
  std::vector<std::pair<std::string, std::string>> path_params;  // filled by the router

  // First header with this (lower-case) name.
  std::optional<std::string_view> header(std::string_view lower_name) const;
  std::optional<std::string_view> param(std::string_view name) const;
  // Decoded value of the first query parameter `name`.
  std::optional<std::string> query_param(std::string_view name) const;
};

// Incremental body output for streamed replies (server-sent events).
class BodyWriter {
 public:
  virtual ~BodyWriter() = default;
  // Sends one chunk now. Returns false once the client is gone; the producer should then stop
  // writing (but finish its work: a job completes whether or not anyone is listening).
  virtual boost::asio::awaitable<bool> write(std::string_view chunk) = 0;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  // Filled by handlers for the access log.
  std::string key_prefix;

  // When set, `body` is ignored: the server sends the status and headers with chunked
  // transfer encoding, then runs stream(writer) to produce the body. The server keeps this
  // Response alive until the returned coroutine completes.
  std::function<boost::asio::awaitable<void>(BodyWriter&)> stream;

  static Response json(int status, std::string body);
  static Response error(const Error& error);
  Response& with_header(std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
    return *this;
  }
};

}  // namespace ig::http
