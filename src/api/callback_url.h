#pragma once
// Checks a client's callback_url before a task is accepted: absolute http(s), a host, at most
// 2048 characters, no credentials, and, when the host is an IP literal (or "localhost"), an
// address the policy allows. Names are checked again on the address actually connected to when
// the callback is delivered, so DNS tricks gain nothing. Errors are 400s naming callback_url.

#include <string_view>

#include "core/error.h"
#include "net/address_policy.h"

namespace ig::api {

Result<void> check_callback_url(std::string_view url, const net::AddressPolicy& policy);

}  // namespace ig::api
