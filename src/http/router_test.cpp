#include "http/router.h"

#include <gtest/gtest.h>

namespace ig::http {
namespace {

Handler noop() {
  return [](Request&) -> boost::asio::awaitable<Response> { co_return Response::json(200, "{}"); };
}

TEST(RouterTest, MatchesLiteralAndCaptures) {
  Router r;
  r.add("GET", "/v1/me", noop());
  r.add("GET", "/v1/tasks/{id}", noop());
  r.add("POST", "/v1/tasks/{id}/cancel", noop());
  EXPECT_NE(r.match("GET", "/v1/me").handler, nullptr);
  auto m = r.match("GET", "/v1/tasks/abc");
  ASSERT_NE(m.handler, nullptr);
  ASSERT_EQ(m.params.size(), 1u);
  EXPECT_EQ(m.params[0].first, "id");
  EXPECT_EQ(m.params[0].second, "abc");
  EXPECT_NE(r.match("POST", "/v1/tasks/x/cancel").handler, nullptr);
  EXPECT_NE(r.match("HEAD", "/v1/me").handler, nullptr);
}

TEST(RouterTest, ServesApiV1Twins) {
  Router r;
  r.add("GET", "/v1/me", noop());
  EXPECT_NE(r.match("GET", "/api/v1/me").handler, nullptr);
  EXPECT_EQ(r.match("GET", "/api/v2/me").handler, nullptr);
}

TEST(RouterTest, Distinguishes404And405) {
  Router r;
  r.add("GET", "/v1/me", noop());
  auto missing = r.match("GET", "/v1/nope");
  EXPECT_EQ(missing.handler, nullptr);
  EXPECT_EQ(missing.error->code, ErrorCode::kNotFound);
  auto wrong = r.match("POST", "/api/v1/me");
  EXPECT_EQ(wrong.handler, nullptr);
  EXPECT_EQ(wrong.error->code, ErrorCode::kMethodNotAllowed);
  EXPECT_EQ(wrong.allow, "GET");
  EXPECT_EQ(r.match("GET", "/v1/tasks/").handler, nullptr);
  EXPECT_EQ(r.match("GET", "").handler, nullptr);
}

TEST(RequestTest, QueryParamsAreDecoded) {
  Request req;
  req.query = "task_id=a%2Fb&x=1+2&flag";
  EXPECT_EQ(req.query_param("task_id"), "a/b");
  EXPECT_EQ(req.query_param("x"), "1 2");
  EXPECT_EQ(req.query_param("flag"), "");
  EXPECT_FALSE(req.query_param("nope").has_value());
}

}  // namespace
}  // namespace ig::http
