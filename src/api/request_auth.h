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

}  // namespace ig::api
