#pragma once
// Shared by every dialect: authenticate the request's bearer key.

#include <boost/asio/awaitable.hpp>

#include "accounts/authenticator.h"
#include "http/message.h"

namespace ig::api {

inline boost::asio::awaitable<Result<accounts::Principal>> authenticate_request(
    accounts::Authenticator& auth, const http::Request& req) {
  co_return co_await auth.authenticate(req.header("authorization").value_or(""));
}

// The body gate (http::BodyGate) of every dialect: a request with a body must carry a valid key
// before its body is read, except the upstream callbacks (signed URLs, no key).
inline boost::asio::awaitable<std::optional<Error>> require_key_before_body(
    accounts::Authenticator& auth, const http::Request& req) {
  if (req.path.starts_with("/v1/upstream/") || req.path.starts_with("/api/v1/upstream/")) {
    co_return std::nullopt;
  }
  auto principal = co_await authenticate_request(auth, req);
  if (!principal) co_return principal.error();
  co_return std::nullopt;
}

}  // namespace ig::api
