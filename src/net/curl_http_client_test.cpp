#include "net/curl_http_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net/fake_http_client.h"

namespace ig::net {
namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using namespace std::string_literals;

// ---------------------------------------------------------------------------------------------
// A scriptable HTTP/1.1 server on 127.0.0.1 with its own thread. Requests are parsed by Beast;
// replies are raw bytes, so tests can send anything (truncated bodies, resets, slow chunks).

struct SeenRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names
  std::string body;
  std::size_t connection = 0;

  std::string header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (k == name) return v;
    }
    return "";
  }
};

struct Reply {
  std::vector<std::string> pieces;    // raw bytes, written in order
  int delay_ms = 0;                   // before the first piece
  int piece_gap_ms = 0;               // between pieces
  std::size_t wait_for_requests = 0;  // hold the reply until this many requests arrived (≤10 s)
  bool reset = false;                 // RST the connection after the pieces
  bool close = false;                 // close the connection after the pieces
};

Reply http_reply(int status, std::string body, std::string extra_headers = "") {
  Reply r;
  r.pieces.push_back("HTTP/1.1 " + std::to_string(status) + " Whatever\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" + body);
  return r;
}

class TestServer {
 public:
  using Handler = std::function<Reply(const SeenRequest&)>;

  explicit TestServer(Handler handler)
      : handler_(std::move(handler)),
        acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(ioc_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~TestServer() {
    ioc_.stop();
    thread_.join();
  }

  std::string url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }
  std::uint16_t port() const { return port_; }
  std::size_t connections() const { return connections_.load(); }
  std::size_t requests() const { return requests_.load(); }
  std::vector<SeenRequest> seen() const {
    std::lock_guard lock(mutex_);
    return seen_;
  }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      std::size_t id = ++connections_;
      asio::co_spawn(ioc_, session(std::move(socket), id), asio::detached);
    }
  }

  asio::awaitable<void> pause(asio::steady_timer& timer, std::chrono::milliseconds how_long) {
    timer.expires_after(how_long);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }

  asio::awaitable<void> session(tcp::socket socket, std::size_t id) {
    boost::beast::flat_buffer buffer;
    asio::steady_timer timer(socket.get_executor());
    for (;;) {
      bhttp::request_parser<bhttp::string_body> parser;
      parser.body_limit(64 << 20);
      auto [ec, n] =
          co_await bhttp::async_read(socket, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      SeenRequest seen;
      const auto& msg = parser.get();
      seen.method = std::string(msg.method_string());
      seen.target = std::string(msg.target());
      for (const auto& field : msg) {
        std::string name(field.name_string());
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        seen.headers.emplace_back(std::move(name), std::string(field.value()));
      }
      seen.body = msg.body();
      seen.connection = id;
      {
        std::lock_guard lock(mutex_);
        seen_.push_back(seen);
      }
      ++requests_;
      Reply reply = handler_(seen);
      if (reply.wait_for_requests > 0) {
        auto deadline = std::chrono::steady_clock::now() + 10s;
        while (requests_.load() < reply.wait_for_requests &&
               std::chrono::steady_clock::now() < deadline) {
          co_await pause(timer, 5ms);
        }
      }
      if (reply.delay_ms > 0) co_await pause(timer, std::chrono::milliseconds(reply.delay_ms));
      for (std::size_t i = 0; i < reply.pieces.size(); ++i) {
        if (i > 0 && reply.piece_gap_ms > 0) {
          co_await pause(timer, std::chrono::milliseconds(reply.piece_gap_ms));
        }
        auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(reply.pieces[i]),
                                                    asio::as_tuple(asio::use_awaitable));
        if (wec) co_return;
      }
      boost::system::error_code ignored;
      if (reply.reset) {
        socket.set_option(tcp::socket::linger(true, 0), ignored);
        socket.close(ignored);
        co_return;
      }
      if (reply.close || !msg.keep_alive()) {
        socket.shutdown(tcp::socket::shutdown_send, ignored);
        co_return;
      }
    }
  }

  Handler handler_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<std::size_t> connections_{0};
  std::atomic<std::size_t> requests_{0};
  mutable std::mutex mutex_;
  std::vector<SeenRequest> seen_;
};

// ---------------------------------------------------------------------------------------------

struct Part {
  std::string name;
  std::optional<std::string> filename;
  std::string content_type;
  std::string data;
};

std::string quoted_param(std::string_view header, std::string_view key) {
  std::string needle = std::string(key) + "=\"";
  auto pos = header.find(needle);
  if (pos == std::string_view::npos) return "";
  pos += needle.size();
  return std::string(header.substr(pos, header.find('"', pos) - pos));
}

// A minimal multipart/form-data parser for the echo test.
std::vector<Part> parse_multipart(std::string_view content_type, std::string_view body) {
  std::vector<Part> parts;
  auto b = content_type.find("boundary=");
  if (b == std::string_view::npos) return parts;
  std::string delimiter = "--" + std::string(content_type.substr(b + 9));
  auto pos = body.find(delimiter);
  if (pos == std::string_view::npos) return parts;
  pos += delimiter.size();
  while (body.substr(pos, 2) == "\r\n") {
    pos += 2;
    auto header_end = body.find("\r\n\r\n", pos);
    if (header_end == std::string_view::npos) break;
    std::string_view head = body.substr(pos, header_end - pos);
    auto data_start = header_end + 4;
    auto next = body.find("\r\n" + delimiter, data_start);
    if (next == std::string_view::npos) break;
    Part part;
    part.name = quoted_param(head, "name");
    if (head.find("filename=\"") != std::string_view::npos) {
      part.filename = quoted_param(head, "filename");
    }
    auto ct = head.find("Content-Type: ");
    if (ct != std::string_view::npos) {
      auto end = head.find("\r\n", ct);
      part.content_type = std::string(head.substr(
          ct + 14, end == std::string_view::npos ? std::string_view::npos : end - ct - 14));
    }
    part.data = std::string(body.substr(data_start, next - data_start));
    parts.push_back(std::move(part));
    pos = next + 2 + delimiter.size();
  }
  return parts;
}

class CurlEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { ASSERT_TRUE(init_curl().has_value()); }
  void TearDown() override { cleanup_curl(); }
};
[[maybe_unused]] ::testing::Environment* const kCurlEnvironment =
    ::testing::AddGlobalTestEnvironment(new CurlEnvironment);

CurlClientSettings loopback_settings() {
  CurlClientSettings settings;
  settings.address_policy.allow_loopback = true;
  return settings;
}

class CurlHttpClientTest : public ::testing::Test {
 protected:
  CurlHttpClientTest() { client_ = std::make_unique<CurlHttpClient>(ioc_, loopback_settings()); }

  void TearDown() override {
    client_.reset();
    ioc_.restart();
    ioc_.run_for(2s);
  }

  void use_settings(CurlClientSettings settings) {
    client_.reset();
    client_ = std::make_unique<CurlHttpClient>(ioc_, std::move(settings));
  }

  // Runs this thread's io_context until `done()` or the limit.
  template <class Done>
  bool run_until(Done done, std::chrono::milliseconds limit = 10s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      ioc_.restart();
      if (ioc_.run_for(5ms) == 0) std::this_thread::sleep_for(1ms);
    }
    return true;
  }

  NetResult<HttpResponse> send(HttpRequest request) {
    auto task = client_->send(std::move(request));
    auto future = asio::co_spawn(ioc_, std::move(task), asio::use_future);
    if (!run_until([&] { return future.wait_for(0s) == std::future_status::ready; })) {
      return std::unexpected(NetError{NetErrc::kOther, "test: no completion in time", false});
    }
    return future.get();
  }

  static HttpRequest get(std::string url) {
    HttpRequest r;
    r.url = std::move(url);
    return r;
  }

  asio::io_context ioc_;
  std::unique_ptr<CurlHttpClient> client_;
};

#define EXPECT_NET_ERROR(result, errc)                                                            \
  do {                                                                                            \
    const auto& r_ = (result);                                                                    \
    ASSERT_FALSE(r_.has_value()) << "status " << r_->status;                                      \
    EXPECT_EQ(r_.error().code, errc) << to_string(r_.error().code) << ": " << r_.error().message; \
  } while (0)

TEST_F(CurlHttpClientTest, GetReturnsStatusHeadersAndBody) {
  TestServer server([](const SeenRequest&) {
    return http_reply(200, R"({"ok":true})",
                      "Content-Type: application/json\r\nX-Custom-Thing:  Some Value \r\n");
  });
  HttpRequest request = get(server.url("/v1/models?q=1"));
  request.headers = {{"Authorization", "Bearer sk-test"}, {"X-Empty", ""}};
  auto result = send(std::move(request));
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->body, R"({"ok":true})");
  EXPECT_EQ(result->header("Content-Type"), "application/json");
  EXPECT_EQ(result->header("x-custom-thing"), "Some Value");
  EXPECT_FALSE(result->header("x-missing").has_value());
  for (const auto& [name, value] : result->headers) {
    for (char c : name) EXPECT_FALSE(c >= 'A' && c <= 'Z') << name;
  }
  auto seen = server.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "GET");
  EXPECT_EQ(seen[0].target, "/v1/models?q=1");
  EXPECT_EQ(seen[0].header("authorization"), "Bearer sk-test");
  EXPECT_EQ(seen[0].header("user-agent"), "imagegate/0.1");
  bool has_empty = false;
  for (const auto& [k, v] : seen[0].headers) has_empty = has_empty || (k == "x-empty" && v.empty());
  EXPECT_TRUE(has_empty);
}

TEST_F(CurlHttpClientTest, PostJsonSendsBodyAndHeaders) {
  TestServer server([](const SeenRequest& req) {
    return http_reply(201, req.method + "|" + req.header("content-type") + "|" + req.body + "|" +
                               req.header("expect"));
  });
  HttpRequest request;
  request.method = "POST";
  request.url = server.url("/v1/images/generations");
  request.headers = {{"Content-Type", "application/json"}};
  request.body = R"({"prompt":"a cat","n":1})";
  auto result = send(std::move(request));
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(result->status, 201);
  EXPECT_EQ(result->body, R"(POST|application/json|{"prompt":"a cat","n":1}|)");

  HttpRequest put;
  put.method = "PUT";
  put.url = server.url("/thing");
  put.body = std::string(2 << 20, 'x');  // big enough that curl would ask for 100-continue
  auto put_result = send(std::move(put));
  ASSERT_TRUE(put_result.has_value()) << put_result.error().message;
  EXPECT_EQ(put_result->body, "PUT||" + std::string(2 << 20, 'x') + "|");

  HttpRequest del;
  del.method = "DELETE";
  del.url = server.url("/thing/1");
  auto del_result = send(std::move(del));
  ASSERT_TRUE(del_result.has_value()) << del_result.error().message;
  EXPECT_EQ(del_result->body, "DELETE|||");
  auto seen = server.seen();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[2].header("content-length"), "");  // no body, no bogus form content type

  HttpRequest head;
  head.method = "HEAD";
  head.url = server.url("/thing/1");
  auto head_result = send(std::move(head));
  ASSERT_TRUE(head_result.has_value()) << head_result.error().message;
  EXPECT_EQ(head_result->status, 201);
  EXPECT_TRUE(head_result->body.empty());
}

TEST_F(CurlHttpClientTest, MultipartUploadArrivesIntact) {
  TestServer server([](const SeenRequest& req) {
    return http_reply(200, req.header("content-type") + "\n" + req.body);
  });
  std::string binary;
  for (int i = 0; i < 300'000; ++i) binary.push_back(static_cast<char>((i * 7 + i / 256) & 0xff));
  std::string tricky = "\r\n--\r\n\0\0--boundary\r\n\r\nend"s;
  HttpRequest request;
  request.method = "POST";
  request.url = server.url("/v1/images/edits");
  request.mime = {
      {"prompt", "a cat in a hat", std::nullopt, ""},
      {"n", "2", std::nullopt, ""},
      {"image", binary, "cat.png", "image/png"},
      {"mask", tricky, "mask.png", "image/png"},
      {"empty", "", std::nullopt, ""},
  };
  auto result = send(std::move(request));
  ASSERT_TRUE(result.has_value()) << result.error().message;
  ASSERT_EQ(result->status, 200);
  auto newline = result->body.find('\n');
  ASSERT_NE(newline, std::string::npos);
  std::string content_type = result->body.substr(0, newline);
  EXPECT_TRUE(content_type.starts_with("multipart/form-data; boundary=")) << content_type;
  auto parts = parse_multipart(content_type, std::string_view(result->body).substr(newline + 1));
  ASSERT_EQ(parts.size(), 5u);
  EXPECT_EQ(parts[0].name, "prompt");
  EXPECT_EQ(parts[0].data, "a cat in a hat");
  EXPECT_FALSE(parts[0].filename.has_value());
  EXPECT_EQ(parts[1].name, "n");
  EXPECT_EQ(parts[1].data, "2");
  EXPECT_EQ(parts[2].name, "image");
  EXPECT_EQ(parts[2].filename, "cat.png");
  EXPECT_EQ(parts[2].content_type, "image/png");
  EXPECT_EQ(parts[2].data.size(), binary.size());
  EXPECT_TRUE(parts[2].data == binary);
  EXPECT_EQ(parts[3].name, "mask");
  EXPECT_EQ(parts[3].filename, "mask.png");
  EXPECT_TRUE(parts[3].data == tricky);
  EXPECT_EQ(parts[4].name, "empty");
  EXPECT_EQ(parts[4].data, "");
}

TEST_F(CurlHttpClientTest, ErrorStatusIsAResponseNotAnError) {
  TestServer server([](const SeenRequest&) {
    return http_reply(500, R"({"error":"boom"})", "Content-Type: application/json\r\n");
  });
  auto result = send(get(server.url("/")));
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(result->status, 500);
  EXPECT_EQ(result->body, R"({"error":"boom"})");
}

TEST_F(CurlHttpClientTest, SlowServerTimesOutWithinTheDeadline) {
  TestServer server([](const SeenRequest&) {
    Reply r = http_reply(200, "late");
    r.delay_ms = 3000;
    return r;
  });
  HttpRequest request = get(server.url("/slow"));
  request.total_timeout_ms = 300;
  auto start = std::chrono::steady_clock::now();
  auto result = send(std::move(request));
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_NET_ERROR(result, NetErrc::kTimeout);
  EXPECT_FALSE(result.error().sent_nothing);  // the request reached the server
  EXPECT_GE(elapsed, 250ms);
  EXPECT_LT(elapsed, 1500ms);
}

TEST_F(CurlHttpClientTest, ConnectionRefusedIsConnectAndSentNothing) {
  std::uint16_t port;
  {
    asio::io_context scratch;
    tcp::acceptor acceptor(scratch, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = acceptor.local_endpoint().port();
  }
  auto result = send(get("http://127.0.0.1:" + std::to_string(port) + "/"));
  EXPECT_NET_ERROR(result, NetErrc::kConnect);
  EXPECT_TRUE(result.error().sent_nothing);
}

TEST_F(CurlHttpClientTest, ResetMidBodyIsReset) {
  TestServer server([](const SeenRequest& req) {
    Reply r;
    r.pieces.push_back("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" +
                       std::string(1000, 'a'));
    r.reset = req.target == "/rst";
    r.close = req.target == "/fin";
    return r;
  });
  auto reset = send(get(server.url("/rst")));
  EXPECT_NET_ERROR(reset, NetErrc::kReset);
  EXPECT_FALSE(reset.error().sent_nothing);
  auto truncated = send(get(server.url("/fin")));
  EXPECT_NET_ERROR(truncated, NetErrc::kReset);
  EXPECT_FALSE(truncated.error().sent_nothing);
}

TEST_F(CurlHttpClientTest, OversizeBodyIsTooLarge) {
  TestServer server([](const SeenRequest& req) {
    if (req.target == "/declared") return http_reply(200, std::string(5000, 'x'));
    Reply r;  // chunked: the size is only known while receiving
    r.pieces.push_back("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 5; ++i) r.pieces.push_back("3e8\r\n" + std::string(1000, 'y') + "\r\n");
    r.pieces.push_back("0\r\n\r\n");
    return r;
  });
  HttpRequest declared = get(server.url("/declared"));
  declared.max_response_bytes = 1000;
  EXPECT_NET_ERROR(send(std::move(declared)), NetErrc::kTooLarge);

  HttpRequest chunked = get(server.url("/chunked"));
  chunked.max_response_bytes = 2500;
  EXPECT_NET_ERROR(send(std::move(chunked)), NetErrc::kTooLarge);

  HttpRequest fits = get(server.url("/chunked"));
  fits.max_response_bytes = 5000;
  auto ok = send(std::move(fits));
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  EXPECT_EQ(ok->body.size(), 5000u);
}

Reply redirect_chain(const SeenRequest& req) {
  // /r/N redirects to /r/N-1; /r/0 answers.
  if (req.target.starts_with("/r/")) {
    int n = std::stoi(req.target.substr(3));
    if (n == 0) return http_reply(200, "done");
    return http_reply(302, "moved!", "Location: /r/" + std::to_string(n - 1) + "\r\n");
  }
  if (req.target == "/metadata") {
    return http_reply(302, "", "Location: http://169.254.169.254/latest/meta-data/\r\n");
  }
  if (req.target == "/private") return http_reply(307, "", "Location: http://10.0.0.1:8080/x\r\n");
  if (req.target == "/file") return http_reply(302, "", "Location: file:///etc/passwd\r\n");
  return http_reply(404, "");
}

TEST_F(CurlHttpClientTest, RedirectIsNotFollowedByDefault) {
  TestServer server(redirect_chain);
  auto result = send(get(server.url("/r/1")));
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(result->status, 302);
  EXPECT_EQ(result->body, "moved!");
  EXPECT_EQ(result->header("location"), "/r/0");
  EXPECT_EQ(server.requests(), 1u);
}

TEST_F(CurlHttpClientTest, RedirectsAreFollowedUpToMax) {
  TestServer server(redirect_chain);
  HttpRequest within = get(server.url("/r/3"));
  within.max_redirects = 3;
  auto result = send(std::move(within));
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->body, "done");  // bodies of the followed 3xx are not part of it
  EXPECT_FALSE(result->header("location").has_value());  // headers of the final response only
  EXPECT_EQ(server.requests(), 4u);

  HttpRequest beyond = get(server.url("/r/3"));
  beyond.max_redirects = 2;
  EXPECT_NET_ERROR(send(std::move(beyond)), NetErrc::kTooManyRedirects);
}

TEST_F(CurlHttpClientTest, RedirectToBlockedAddressIsBlocked) {
  TestServer server(redirect_chain);
  for (const char* path : {"/metadata", "/private"}) {
    HttpRequest request = get(server.url(path));
    request.max_redirects = 5;
    auto result = send(std::move(request));
    EXPECT_NET_ERROR(result, NetErrc::kBlockedAddress);
    EXPECT_FALSE(result.error().sent_nothing);  // the first hop did reach a server
  }
  HttpRequest to_file = get(server.url("/file"));
  to_file.max_redirects = 5;
  EXPECT_NET_ERROR(send(std::move(to_file)), NetErrc::kBadUrl);
}

TEST_F(CurlHttpClientTest, LoopbackIsBlockedByTheDefaultPolicy) {
  TestServer server([](const SeenRequest&) { return http_reply(200, "hi"); });
  use_settings(CurlClientSettings{});
  auto blocked = send(get(server.url("/")));
  EXPECT_NET_ERROR(blocked, NetErrc::kBlockedAddress);
  EXPECT_TRUE(blocked.error().sent_nothing);
  EXPECT_NE(blocked.error().message.find("127.0.0.1"), std::string::npos);
  // Through the resolver too (localhost resolves to loopback).
  auto by_name = send(get("http://localhost:" + std::to_string(server.port()) + "/"));
  EXPECT_NET_ERROR(by_name, NetErrc::kBlockedAddress);
  EXPECT_EQ(server.connections(), 0u);

  HttpRequest trusted = get(server.url("/"));
  trusted.address_policy = AddressPolicy{.allow_loopback = true};
  auto allowed = send(std::move(trusted));
  ASSERT_TRUE(allowed.has_value()) << allowed.error().message;
  EXPECT_EQ(allowed->body, "hi");
  HttpRequest trusted_by_name = get("http://localhost:" + std::to_string(server.port()) + "/");
  trusted_by_name.address_policy = AddressPolicy{.allow_loopback = true};
  auto allowed_by_name = send(std::move(trusted_by_name));
  ASSERT_TRUE(allowed_by_name.has_value()) << allowed_by_name.error().message;
  EXPECT_EQ(allowed_by_name->body, "hi");
}

TEST_F(CurlHttpClientTest, PerRequestPolicyCanForbidLoopback) {
  TestServer server([](const SeenRequest&) { return http_reply(200, "hi"); });
  HttpRequest untrusted = get(server.url("/"));
  untrusted.address_policy = AddressPolicy{};
  EXPECT_NET_ERROR(send(std::move(untrusted)), NetErrc::kBlockedAddress);
  auto allowed = send(get(server.url("/")));
  ASSERT_TRUE(allowed.has_value()) << allowed.error().message;
  EXPECT_EQ(server.connections(), 1u);
}

TEST_F(CurlHttpClientTest, ManyConcurrentRequestsOnOneThread) {
  constexpr std::size_t kRequests = 200;
  // Every reply waits until all requests have arrived: this only completes if all of them are
  // in flight at once, on the single thread running ioc_.
  TestServer server([](const SeenRequest& req) {
    Reply r = http_reply(200, req.target);
    r.wait_for_requests = kRequests;
    return r;
  });
  CurlClientSettings settings = loopback_settings();
  settings.max_connections_per_host = kRequests;
  use_settings(settings);
  std::vector<std::optional<NetResult<HttpResponse>>> results(kRequests);
  std::size_t done = 0;
  std::size_t peak_in_flight = 0;
  for (std::size_t i = 0; i < kRequests; ++i) {
    HttpRequest request = get(server.url("/n/" + std::to_string(i)));
    auto task = client_->send(std::move(request));
    asio::co_spawn(ioc_, std::move(task),
                   [&results, &done, i](std::exception_ptr, NetResult<HttpResponse> r) {
                     results[i] = std::move(r);
                     ++done;
                   });
  }
  ASSERT_TRUE(run_until(
      [&] {
        peak_in_flight = std::max(peak_in_flight, client_->in_flight());
        return done == kRequests;
      },
      20s));
  EXPECT_EQ(peak_in_flight, kRequests);
  EXPECT_EQ(server.requests(), kRequests);
  for (std::size_t i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(results[i] && results[i]->has_value()) << i;
    EXPECT_EQ((*results[i])->body, "/n/" + std::to_string(i));
  }
  EXPECT_EQ(client_->in_flight(), 0u);
}

TEST_F(CurlHttpClientTest, SendFromManyThreadsAndStrands) {
  TestServer server([](const SeenRequest& req) { return http_reply(200, req.target); });
  constexpr int kRequests = 60;
  std::atomic<int> ok{0};
  std::atomic<int> done{0};
  for (int i = 0; i < kRequests; ++i) {
    HttpRequest request = get(server.url("/t/" + std::to_string(i)));
    auto task = client_->send(std::move(request));
    asio::co_spawn(asio::make_strand(ioc_), std::move(task),
                   [&ok, &done, i](std::exception_ptr, NetResult<HttpResponse> r) {
                     if (r && r->body == "/t/" + std::to_string(i)) ++ok;
                     ++done;
                   });
  }
  std::vector<std::thread> threads;
  auto work = asio::make_work_guard(ioc_);
  for (int i = 0; i < 3; ++i) threads.emplace_back([this] { ioc_.run(); });
  auto deadline = std::chrono::steady_clock::now() + 15s;
  while (done.load() < kRequests && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  work.reset();
  ioc_.stop();
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kRequests);
}

TEST_F(CurlHttpClientTest, BodySinkReceivesChunksInOrder) {
  TestServer server([](const SeenRequest&) {
    Reply r;
    r.pieces = {
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"};
    for (std::string event : {"data: alpha\n\n", "data: beta\n\n", "data: gamma\n\n"}) {
      char size[16];
      std::snprintf(size, sizeof size, "%zx\r\n", event.size());
      r.pieces.push_back(size + event + "\r\n");
    }
    r.pieces.push_back("0\r\n\r\n");
    r.piece_gap_ms = 60;
    return r;
  });
  std::vector<std::string> chunks;
  HttpRequest request = get(server.url("/stream"));
  request.on_body_chunk = [&chunks](std::string_view chunk) {
    chunks.emplace_back(chunk);
    return true;
  };
  auto result = send(std::move(request));
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->header("content-type"), "text/event-stream");
  EXPECT_TRUE(result->body.empty());
  std::string joined;
  for (const auto& c : chunks) joined += c;
  EXPECT_EQ(joined, "data: alpha\n\ndata: beta\n\ndata: gamma\n\n");
  EXPECT_GE(chunks.size(), 2u);

  HttpRequest aborting = get(server.url("/stream"));
  int calls = 0;
  aborting.on_body_chunk = [&calls](std::string_view) { return ++calls < 2; };
  EXPECT_NET_ERROR(send(std::move(aborting)), NetErrc::kAborted);
  EXPECT_EQ(calls, 2);
}

TEST_F(CurlHttpClientTest, KeepAliveReusesTheConnection) {
  TestServer server([](const SeenRequest& req) { return http_reply(200, req.target); });
  for (int i = 0; i < 5; ++i) {
    auto result = send(get(server.url("/k/" + std::to_string(i))));
    ASSERT_TRUE(result.has_value()) << result.error().message;
    EXPECT_EQ(result->body, "/k/" + std::to_string(i));
  }
  EXPECT_EQ(server.requests(), 5u);
  EXPECT_EQ(server.connections(), 1u);
}

// curl resends a request whose reused connection closed without an answer (a stale
// keep-alive, it assumes). A POST may have started a paid render: it must reach the server once.
TEST_F(CurlHttpClientTest, PostIsNotResentWhenAReusedConnectionClosesUnanswered) {
  std::atomic<int> drops{0};
  TestServer server([&drops](const SeenRequest& req) {
    Reply r;
    if (req.target == "/drop" && drops.fetch_add(1) == 0) {
      r.close = true;  // read the request, answer nothing
      return r;
    }
    return http_reply(200, req.method + " " + req.target);
  });
  auto warm = send(get(server.url("/warm")));
  ASSERT_TRUE(warm.has_value()) << warm.error().message;

  HttpRequest post;
  post.method = "POST";
  post.url = server.url("/drop");
  post.body = R"({"prompt":"once"})";
  auto result = send(std::move(post));
  EXPECT_NET_ERROR(result, NetErrc::kReset);
  EXPECT_FALSE(result.error().sent_nothing);
  EXPECT_EQ(result.error().status, 0);
  EXPECT_EQ(server.requests(), 2u) << "the POST was sent twice";

  // A GET is idempotent: curl's resend on a fresh connection stays.
  drops = 0;
  auto again = send(get(server.url("/warm")));
  ASSERT_TRUE(again.has_value()) << again.error().message;
  auto get_result = send(get(server.url("/drop")));
  ASSERT_TRUE(get_result.has_value()) << get_result.error().message;
  EXPECT_EQ(get_result->body, "GET /drop");

  // Redirects of a POST are new requests, not resends.
  TestServer redirecting([](const SeenRequest& req) {
    if (req.target == "/from") return http_reply(307, "", "Location: /to\r\n");
    return http_reply(200, req.method + " " + req.target + " " + req.body);
  });
  HttpRequest moved;
  moved.method = "POST";
  moved.url = redirecting.url("/from");
  moved.body = "x";
  moved.max_redirects = 2;
  auto followed = send(std::move(moved));
  ASSERT_TRUE(followed.has_value()) << followed.error().message;
  EXPECT_EQ(followed->body, "POST /to x");
}

// A listener whose accept queue is full: the kernel drops further SYNs, so a connect to it
// hangs until the client's connect timeout (a black-holed upstream).
class BlackHole {
 public:
  BlackHole() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof addr;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), length) != 0 ||
        ::listen(listener_, 0) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    for (int i = 0; i < 8; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      (void)::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
      fillers_.push_back(fd);
    }
    std::this_thread::sleep_for(50ms);
  }
  ~BlackHole() {
    for (int fd : fillers_) ::close(fd);
    ::close(listener_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1/x"; }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::vector<int> fillers_;
};

// curl closes a connect attempt it gave up on without the close-socket callback. A watch kept
// for that socket was found again when its number came back as a new connection, and that
// transfer then waited for curl's next timeout instead of its socket.
TEST_F(CurlHttpClientTest, AnAbandonedConnectDoesNotStallLaterTransfers) {
  BlackHole hole;
  TestServer server([](const SeenRequest& req) { return http_reply(200, req.target); });
  for (int round = 0; round < 3; ++round) {
    HttpRequest hung = get(hole.url());
    hung.connect_timeout_ms = 150;
    hung.total_timeout_ms = 3000;
    EXPECT_NET_ERROR(send(std::move(hung)), NetErrc::kTimeout);

    HttpRequest fresh = get(server.url("/after/" + std::to_string(round)));
    fresh.connect_timeout_ms = 5000;
    fresh.total_timeout_ms = 8000;
    const auto started = std::chrono::steady_clock::now();
    auto result = send(std::move(fresh));
    const auto took = std::chrono::steady_clock::now() - started;
    ASSERT_TRUE(result.has_value()) << result.error().message;
    EXPECT_LT(took, 1s) << "round " << round << ": the transfer waited for a timer";
  }
}

TEST_F(CurlHttpClientTest, DestroyingTheClientAbortsInFlightSends) {
  TestServer server([](const SeenRequest&) {
    Reply r = http_reply(200, "late");
    r.delay_ms = 5000;
    return r;
  });
  auto task = client_->send(get(server.url("/slow")));
  auto future = asio::co_spawn(ioc_, std::move(task), asio::use_future);
  ASSERT_TRUE(run_until([&] { return server.requests() == 1; }));
  auto start = std::chrono::steady_clock::now();
  client_.reset();
  ASSERT_TRUE(run_until([&] { return future.wait_for(0s) == std::future_status::ready; }));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  auto result = future.get();
  EXPECT_NET_ERROR(result, NetErrc::kAborted);
  EXPECT_FALSE(result.error().sent_nothing);
}

std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

TEST_F(CurlHttpClientTest, EveryDescriptorIsClosedAfterShutdown) {
  client_.reset();  // the baseline is without any client (curl's multi owns a socketpair)
  ioc_.run_for(100ms);
  const std::size_t baseline = open_descriptors();
  use_settings(loopback_settings());
  {
    TestServer server([](const SeenRequest& req) {
      if (req.target == "/rst") {
        Reply r;
        r.pieces.push_back("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
        r.reset = true;
        return r;
      }
      Reply r = http_reply(200, "ok");
      r.delay_ms = req.target == "/slow" ? 5000 : 0;
      return r;
    });
    for (const char* path : {"/a", "/b", "/rst", "/c"}) send(get(server.url(path)));
    HttpRequest timeout = get(server.url("/slow"));
    timeout.total_timeout_ms = 50;
    send(std::move(timeout));
    HttpRequest blocked = get(server.url("/a"));
    blocked.address_policy = AddressPolicy{};
    send(std::move(blocked));
    auto task = client_->send(get(server.url("/slow")));  // in flight at shutdown
    auto future = asio::co_spawn(ioc_, std::move(task), asio::use_future);
    ASSERT_TRUE(run_until([&] { return server.requests() >= 6; }));
    client_.reset();
    ASSERT_TRUE(run_until([&] { return future.wait_for(0s) == std::future_status::ready; }));
    ioc_.restart();
    ioc_.run_for(100ms);
  }
  EXPECT_EQ(open_descriptors(), baseline);
}

TEST_F(CurlHttpClientTest, RequestQueuedForAConnectionWasNotSent) {
  TestServer server([](const SeenRequest&) {
    Reply r = http_reply(200, "late");
    r.delay_ms = 5000;
    return r;
  });
  CurlClientSettings settings = loopback_settings();
  settings.max_connections_per_host = 1;
  use_settings(settings);
  auto first_task = client_->send(get(server.url("/first")));
  auto first = asio::co_spawn(ioc_, std::move(first_task), asio::use_future);
  auto second_task = client_->send(get(server.url("/second")));
  auto second = asio::co_spawn(ioc_, std::move(second_task), asio::use_future);
  ASSERT_TRUE(run_until([&] { return server.requests() == 1 && client_->in_flight() == 2; }));
  client_->shutdown();
  ASSERT_TRUE(run_until([&] {
    return first.wait_for(0s) == std::future_status::ready &&
           second.wait_for(0s) == std::future_status::ready;
  }));
  auto first_result = first.get();
  auto second_result = second.get();
  EXPECT_NET_ERROR(first_result, NetErrc::kAborted);
  EXPECT_FALSE(first_result.error().sent_nothing);
  EXPECT_NET_ERROR(second_result, NetErrc::kAborted);
  EXPECT_TRUE(second_result.error().sent_nothing);
  EXPECT_EQ(server.requests(), 1u);
}

TEST_F(CurlHttpClientTest, ShutdownFailsLaterSends) {
  client_->shutdown();
  auto result = send(get("http://127.0.0.1:9/"));
  EXPECT_NET_ERROR(result, NetErrc::kAborted);
  EXPECT_TRUE(result.error().sent_nothing);

  // A send created before the client died but awaited after.
  use_settings(loopback_settings());
  auto task = client_->send(get("http://127.0.0.1:9/"));
  client_.reset();
  auto future = asio::co_spawn(ioc_, std::move(task), asio::use_future);
  ASSERT_TRUE(run_until([&] { return future.wait_for(0s) == std::future_status::ready; }));
  EXPECT_NET_ERROR(future.get(), NetErrc::kAborted);
}

TEST_F(CurlHttpClientTest, CancellationAbortsTheTransfer) {
  TestServer server([](const SeenRequest&) {
    Reply r = http_reply(200, "late");
    r.delay_ms = 5000;
    return r;
  });
  asio::cancellation_signal signal;
  std::optional<NetResult<HttpResponse>> result;
  auto task = client_->send(get(server.url("/slow")));
  asio::co_spawn(ioc_, std::move(task),
                 asio::bind_cancellation_slot(
                     signal.slot(), [&result](std::exception_ptr, NetResult<HttpResponse> r) {
                       result = std::move(r);
                     }));
  ASSERT_TRUE(run_until([&] { return server.requests() == 1; }));
  signal.emit(asio::cancellation_type::terminal);
  ASSERT_TRUE(run_until([&] { return result.has_value(); }, 2s));
  EXPECT_NET_ERROR(*result, NetErrc::kAborted);
  EXPECT_EQ(client_->in_flight(), 0u);
}

TEST_F(CurlHttpClientTest, ProxyReceivesTheAbsoluteUrl) {
  TestServer proxy([](const SeenRequest& req) { return http_reply(200, "via " + req.target); });
  HttpRequest request = get("http://upstream.invalid/v1/x");
  request.proxy = proxy.url("");
  auto result = send(std::move(request));
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(result->body, "via http://upstream.invalid/v1/x");

  HttpRequest socks = get("http://upstream.invalid/v1/x");
  socks.proxy = "socks5://127.0.0.1:1080";
  EXPECT_NET_ERROR(send(std::move(socks)), NetErrc::kBadUrl);
}

TEST_F(CurlHttpClientTest, InvalidRequestsFailWithoutSending) {
  auto ftp = send(get("ftp://127.0.0.1/file"));
  EXPECT_NET_ERROR(ftp, NetErrc::kBadUrl);
  EXPECT_TRUE(ftp.error().sent_nothing);
  EXPECT_NET_ERROR(send(get("")), NetErrc::kBadUrl);
  EXPECT_NET_ERROR(send(get("http://exa mple.com/")), NetErrc::kBadUrl);

  HttpRequest injected = get("http://127.0.0.1:9/");
  injected.headers = {{"X-Evil", "a\r\nHost: other"}};
  auto bad_header = send(std::move(injected));
  EXPECT_NET_ERROR(bad_header, NetErrc::kOther);
  EXPECT_TRUE(bad_header.error().sent_nothing);

  HttpRequest bad_method = get("http://127.0.0.1:9/");
  bad_method.method = "GET /x HTTP/1.1\r\n";
  EXPECT_NET_ERROR(send(std::move(bad_method)), NetErrc::kOther);
}

// --- FakeHttpClient (lives here: it is the double for this interface) ---

NetResult<HttpResponse> run_fake(FakeHttpClient& fake, HttpRequest request) {
  asio::io_context ioc;
  auto task = fake.send(std::move(request));
  auto future = asio::co_spawn(ioc, std::move(task), asio::use_future);
  ioc.run();
  return future.get();
}

HttpRequest fake_get(std::string url) {
  HttpRequest r;
  r.url = std::move(url);
  return r;
}

TEST(FakeHttpClientTest, ScriptedResponsesAreUsedInOrderAndTheLastRepeats) {
  FakeHttpClient fake;
  fake.add_response("https://up/a", 429, "slow down", {{"Retry-After", "1"}});
  fake.add_response("https://up/a", 200, "ok");
  auto first = run_fake(fake, fake_get("https://up/a"));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->status, 429);
  EXPECT_EQ(first->header("retry-after"), "1");
  for (int i = 0; i < 2; ++i) {
    auto next = run_fake(fake, fake_get("https://up/a"));
    ASSERT_TRUE(next.has_value());
    EXPECT_EQ(next->status, 200);
    EXPECT_EQ(next->body, "ok");
  }
}

TEST(FakeHttpClientTest, ErrorsCanBeScriptedAndUnscriptedUrlsFailToConnect) {
  FakeHttpClient fake;
  fake.add_response("https://up/t", std::unexpected(NetError{NetErrc::kTimeout, "slow", false}));
  auto timeout = run_fake(fake, fake_get("https://up/t"));
  ASSERT_FALSE(timeout.has_value());
  EXPECT_EQ(timeout.error().code, NetErrc::kTimeout);
  auto missing = run_fake(fake, fake_get("https://up/none"));
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, NetErrc::kConnect);
  EXPECT_TRUE(missing.error().sent_nothing);
}

TEST(FakeHttpClientTest, HandlerAnswersAndRequestsAreRecorded) {
  FakeHttpClient fake;
  fake.set_handler([](const HttpRequest& r) -> NetResult<HttpResponse> {
    return FakeHttpClient::response(200, r.method + " " + r.body);
  });
  HttpRequest post;
  post.method = "POST";
  post.url = "https://up/gen";
  post.body = "{}";
  post.headers = {{"Authorization", "Bearer k"}};
  auto result = run_fake(fake, std::move(post));
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->body, "POST {}");
  ASSERT_EQ(fake.request_count(), 1u);
  auto recorded = fake.last_request();
  ASSERT_TRUE(recorded.has_value());
  EXPECT_EQ(recorded->url, "https://up/gen");
  EXPECT_EQ(recorded->headers[0].second, "Bearer k");
  fake.clear_requests();
  EXPECT_TRUE(fake.requests().empty());
}

TEST(FakeHttpClientTest, StreamsThroughTheSinkAndEnforcesTheLimit) {
  FakeHttpClient fake;
  fake.set_chunk_size(4);
  fake.add_response("https://up/s", 200, "0123456789");
  std::vector<std::string> chunks;
  HttpRequest request = fake_get("https://up/s");
  request.on_body_chunk = [&chunks](std::string_view c) {
    chunks.emplace_back(c);
    return true;
  };
  auto result = run_fake(fake, std::move(request));
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->body.empty());
  EXPECT_EQ(chunks, (std::vector<std::string>{"0123", "4567", "89"}));

  HttpRequest small = fake_get("https://up/s");
  small.max_response_bytes = 5;
  auto too_large = run_fake(fake, std::move(small));
  ASSERT_FALSE(too_large.has_value());
  EXPECT_EQ(too_large.error().code, NetErrc::kTooLarge);

  HttpRequest aborting = fake_get("https://up/s");
  aborting.on_body_chunk = [](std::string_view) { return false; };
  auto aborted = run_fake(fake, std::move(aborting));
  ASSERT_FALSE(aborted.has_value());
  EXPECT_EQ(aborted.error().code, NetErrc::kAborted);
}

}  // namespace
}  // namespace ig::net
