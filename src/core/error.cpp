#include "core/error.h"

#include <boost/json.hpp>

#include "core/json.h"

namespace ig {
namespace {

struct ErrorInfo {
  int status;
  std::string_view type;
  std::string_view code;
};

ErrorInfo info(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidRequest:
      return {400, "invalid_request_error", "invalid_request"};
    case ErrorCode::kInvalidApiKey:
      return {401, "authentication_error", "invalid_api_key"};
    case ErrorCode::kInsufficientCredits:
      return {402, "billing_error", "insufficient_credits"};
    case ErrorCode::kIpNotAllowed:
      return {403, "permission_error", "ip_not_allowed"};
    case ErrorCode::kPermissionDenied:
      return {403, "permission_error", "permission_denied"};
    case ErrorCode::kModelNotFound:
      return {404, "invalid_request_error", "model_not_found"};
    case ErrorCode::kTaskNotFound:
      return {404, "invalid_request_error", "task_not_found"};
    case ErrorCode::kNotFound:
      return {404, "invalid_request_error", "not_found"};
    case ErrorCode::kMethodNotAllowed:
      return {405, "invalid_request_error", "method_not_allowed"};
    case ErrorCode::kConflict:
      return {409, "invalid_request_error", "conflict"};
    case ErrorCode::kResultExpired:
      return {410, "invalid_request_error", "result_expired"};
    case ErrorCode::kPayloadTooLarge:
      return {413, "invalid_request_error", "payload_too_large"};
    case ErrorCode::kRateLimitExceeded:
      return {429, "rate_limit_error", "rate_limit_exceeded"};
    case ErrorCode::kSpendLimitExceeded:
      return {429, "billing_error", "spend_limit_exceeded"};
    case ErrorCode::kInternal:
      return {500, "api_error", "internal_error"};
    case ErrorCode::kUpstream:
      return {503, "upstream_error", "upstream_error"};
    case ErrorCode::kUnavailable:
      return {503, "api_error", "service_unavailable"};
  }
  return {500, "api_error", "internal_error"};
}

}  // namespace

int http_status(ErrorCode code) { return info(code).status; }
std::string_view error_type(ErrorCode code) { return info(code).type; }
std::string_view error_code_name(ErrorCode code) { return info(code).code; }

std::string render_error_body(const Error& error) {
  boost::json::object inner;
  inner["message"] = error.message;
  inner["type"] = error_type(error.code);
  if (error.param) {
    inner["param"] = *error.param;
  } else {
    inner["param"] = nullptr;
  }
  inner["code"] = error_code_name(error.code);
  boost::json::object outer;
  outer["error"] = std::move(inner);
  return to_json_text(outer);
}

}  // namespace ig
