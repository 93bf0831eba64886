#pragma once
// One error enum for the whole request path. Every value maps to exactly one HTTP status,
// OpenAI error `type` and `code` (REQUIREMENTS §5), so a failure anywhere renders the same way.

#include <expected>
#include <optional>
#include <string>
#include <string_view>

namespace ig {

enum class ErrorCode {
  kInvalidRequest,       // 400 invalid_request / invalid_request_error
  kInvalidApiKey,        // 401 invalid_api_key / authentication_error
  kInsufficientCredits,  // 402 insufficient_credits / billing_error
  kIpNotAllowed,         // 403 ip_not_allowed / permission_error
  kPermissionDenied,     // 403 permission_denied / permission_error
  kModelNotFound,        // 404 model_not_found / invalid_request_error
  kTaskNotFound,         // 404 task_not_found / invalid_request_error
  kNotFound,             // 404 not_found / invalid_request_error (routes, other resources)
  kMethodNotAllowed,     // 405 method_not_allowed / invalid_request_error
  kConflict,             // 409 conflict / invalid_request_error
  kResultExpired,        // 410 result_expired / invalid_request_error (retention deleted it)
  kPayloadTooLarge,      // 413 payload_too_large / invalid_request_error
  kRateLimitExceeded,    // 429 rate_limit_exceeded / rate_limit_error
  kSpendLimitExceeded,   // 429 spend_limit_exceeded / billing_error
  kInternal,             // 500 internal_error / api_error
  kUpstream,             // 503 upstream_error / upstream_error
  kUnavailable,          // 503 service_unavailable / api_error (overload, shutting down)
};

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  std::optional<std::string> param;
  // False when sending the same request again could repeat work that may have been done (an
  // upstream that may have rendered, and billed, the image): replies then carry
  // `x-should-retry: false`, which the OpenAI SDKs obey instead of retrying every 5xx.
  bool retry_safe = true;

  static Error invalid(std::string message, std::optional<std::string> param = std::nullopt) {
    return {ErrorCode::kInvalidRequest, std::move(message), std::move(param)};
  }
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(ErrorCode code, std::string message,
                                   std::optional<std::string> param = std::nullopt) {
  return std::unexpected(Error{code, std::move(message), std::move(param)});
}

int http_status(ErrorCode code);
std::string_view error_type(ErrorCode code);
std::string_view error_code_name(ErrorCode code);

// {"error":{"message","type","param","code"}}
std::string render_error_body(const Error& error);

}  // namespace ig
