#include "core/error.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "core/json.h"
#include "core/text.h"

namespace ig {
namespace {

TEST(ErrorTest, MapsTheRequirementsTable) {
  struct Row {
    ErrorCode code;
    int status;
    const char* type;
    const char* name;
  };
  for (const Row& row : {
           Row{ErrorCode::kInvalidRequest, 400, "invalid_request_error", "invalid_request"},
           Row{ErrorCode::kInvalidApiKey, 401, "authentication_error", "invalid_api_key"},
           Row{ErrorCode::kInsufficientCredits, 402, "billing_error", "insufficient_credits"},
           Row{ErrorCode::kIpNotAllowed, 403, "permission_error", "ip_not_allowed"},
           Row{ErrorCode::kModelNotFound, 404, "invalid_request_error", "model_not_found"},
           Row{ErrorCode::kTaskNotFound, 404, "invalid_request_error", "task_not_found"},
           Row{ErrorCode::kResultExpired, 410, "invalid_request_error", "result_expired"},
           Row{ErrorCode::kRateLimitExceeded, 429, "rate_limit_error", "rate_limit_exceeded"},
           Row{ErrorCode::kSpendLimitExceeded, 429, "billing_error", "spend_limit_exceeded"},
           Row{ErrorCode::kInternal, 500, "api_error", "internal_error"},
           Row{ErrorCode::kUpstream, 503, "upstream_error", "upstream_error"},
       }) {
    EXPECT_EQ(http_status(row.code), row.status);
    EXPECT_EQ(error_type(row.code), row.type);
    EXPECT_EQ(error_code_name(row.code), row.name);
  }
}

TEST(ErrorTest, RendersOpenAiBody) {
  EXPECT_EQ(render_error_body(Error{ErrorCode::kInvalidApiKey, "Invalid API key."}),
            R"({"error":{"message":"Invalid API key.","type":"authentication_error","param":null,"code":"invalid_api_key"}})");
  auto body = boost::json::parse(render_error_body(Error::invalid("bad \"n\"\n", "n")));
  EXPECT_EQ(body.at("error").at("param").as_string(), "n");
  EXPECT_EQ(body.at("error").at("message").as_string(), "bad \"n\"\n");
}

TEST(JsonTest, RendersNumbersShortest) {
  boost::json::value v = boost::json::object{{"a", 4.7}, {"b", 1}, {"c", -3.25}, {"d", nullptr},
                                             {"e", boost::json::array{true, "x"}}};
  EXPECT_EQ(to_json_text(v), R"({"a":4.7,"b":1,"c":-3.25,"d":null,"e":[true,"x"]})");
}

TEST(TextTest, PrintableEscapesUntrustedBytes) {
  EXPECT_EQ(printable("/v1/me"), "/v1/me");
  EXPECT_EQ(printable("a\xff\n%"), "a%FF%0A%25");
  EXPECT_EQ(printable(std::string(300, 'x'), 10), "xxxxxxxxxx...");
}

TEST(TextTest, Utf8Validation) {
  EXPECT_TRUE(is_valid_utf8("plain"));
  EXPECT_TRUE(is_valid_utf8("\xe4\xb8\x80\xe5\x8f\xaa"));  // 一只
  EXPECT_FALSE(is_valid_utf8("\xff"));
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));      // overlong
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));  // surrogate
  EXPECT_FALSE(is_valid_utf8("\xe4\xb8"));      // truncated
}

}  // namespace
}  // namespace ig
