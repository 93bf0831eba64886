#include "http/server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <mutex>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "core/text.h"

namespace ig::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

bool is_sane_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

namespace {

struct Connection {
  explicit Connection(tcp::socket socket) : stream(std::move(socket)) {
    boost::system::error_code ec;
    auto remote = beast::get_lowest_layer(stream).socket().remote_endpoint(ec);
    if (!ec) remote_ip = remote.address().to_string();
  }
  beast::tcp_stream stream;
  std::string remote_ip;  // read once per connection, not per request
  bool busy = false;  // touched only on the connection's strand
};

// Shared by a body read and its deadline timer: the timer's handler may run after the read
// ended (both are queued on the connection's one thread), and must then do nothing.
struct BodyDeadline {
  bool read_done = false;
  bool fired = false;
};

std::string_view trim_header(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 9112 §6.1 and §6.3 for a request's Transfer-Encoding: the only coding imagegate decodes is
// chunked, applied once, last. Anything else gets 501 (a coding it does not implement) or 400
// (a body whose length cannot be known, or one framed two ways: Content-Length too, the classic
// request-smuggling shape), and the connection is closed. Returns nothing when the framing is fine.
template <class Fields>
std::optional<std::pair<int, std::string>> transfer_coding_problem(const Fields& head) {
  auto [first, last] = head.equal_range(bhttp::field::transfer_encoding);
  if (first == last) return std::nullopt;
  std::vector<std::string> codings;
  for (auto it = first; it != last; ++it) {
    std::string_view rest = it->value();
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const std::string_view item = trim_header(rest.substr(0, comma));
      if (!item.empty()) codings.emplace_back(item);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
  }
  if (head.find(bhttp::field::content_length) != head.end()) {
    return std::pair(400,
                     std::string("Transfer-Encoding and Content-Length together are refused."));
  }
  if (codings.empty() || !beast::iequals(codings.back(), "chunked")) {
    return std::pair(400, std::string("A request's final transfer coding must be chunked."));
  }
  if (codings.size() == 1) return std::nullopt;
  for (std::size_t i = 0; i + 1 < codings.size(); ++i) {
    if (beast::iequals(codings[i], "chunked")) {
      return std::pair(400, std::string("The chunked transfer coding may be applied only once."));
    }
  }
  // Parameters (";q=..") are not part of a coding's name.
  const std::string_view first_coding = codings.front();
  const std::string name(trim_header(first_coding.substr(0, first_coding.find(';'))));
  return std::pair(501,
                   "Transfer coding '" + name + "' is not supported; send the body chunked only.");
}

// A request target in absolute form ("http://host/v1/me", which RFC 9112 §3.2.2 says servers
// must accept) as its origin form ("/v1/me").
std::string origin_form(std::string_view target) {
  for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
    if (target.size() >= scheme.size() && beast::iequals(target.substr(0, scheme.size()), scheme)) {
      const auto path = target.find_first_of("/?", scheme.size());
      if (path == std::string_view::npos) return "/";
      if (target[path] == '?') return "/" + std::string(target.substr(path));
      return std::string(target.substr(path));
    }
  }
  return std::string(target);
}

// Writes a streamed body in chunks, or, for an HTTP/1.0 client (which knows no chunked coding),
// as raw bytes that the closing connection delimits.
class ChunkWriter final : public BodyWriter {
 public:
  ChunkWriter(beast::tcp_stream& stream, int timeout_ms, bool chunked)
      : stream_(stream), timeout_ms_(timeout_ms), chunked_(chunked) {}
  asio::awaitable<bool> write(std::string_view chunk) override {
    if (failed_) co_return false;
    if (chunk.empty()) co_return true;  // an empty chunk would end the body
    stream_.expires_after(std::chrono::milliseconds(timeout_ms_));
    boost::system::error_code ec;
    if (chunked_) {
      auto framed = bhttp::make_chunk(asio::buffer(chunk.data(), chunk.size()));
      std::tie(ec, std::ignore) =
          co_await asio::async_write(stream_, framed, asio::as_tuple(asio::use_awaitable));
    } else {
      std::tie(ec, std::ignore) = co_await asio::async_write(
          stream_, asio::buffer(chunk.data(), chunk.size()), asio::as_tuple(asio::use_awaitable));
    }
    if (ec) failed_ = true;
    bytes_ += chunk.size();
    co_return !failed_;
  }
  asio::awaitable<bool> finish() {
    if (failed_) co_return false;
    if (!chunked_) co_return true;
    stream_.expires_after(std::chrono::milliseconds(timeout_ms_));
    auto last = bhttp::make_chunk_last();
    auto [ec, n] = co_await asio::async_write(stream_, last, asio::as_tuple(asio::use_awaitable));
    if (ec) failed_ = true;
    co_return !failed_;
  }
  std::size_t bytes() const { return bytes_; }
  void mark_failed() { failed_ = true; }

 private:
  beast::tcp_stream& stream_;
  int timeout_ms_;
  bool chunked_;
  bool failed_ = false;
  std::size_t bytes_ = 0;
};

}  // namespace

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  Impl(asio::io_context& ioc, std::vector<asio::io_context*> workers, ServerSettings settings,
       const Router& router, std::shared_ptr<spdlog::logger> log)
      : ioc_(ioc),
        workers_(std::move(workers)),
        settings_(std::move(settings)),
        router_(router),
        log_(std::move(log)),
        acceptor_(asio::make_strand(ioc)),
        rid_prefix_(make_rid_prefix()) {}

  static std::string make_rid_prefix() {
    auto now = std::chrono::system_clock::now().time_since_epoch().count();
    return fmt::format("req_{:x}", static_cast<std::uint64_t>(now) & 0xffffffffffULL);
  }

  std::string next_request_id() {
    return fmt::format("{}{:06x}", rid_prefix_, rid_counter_.fetch_add(1) & 0xffffff);
  }

  Result<std::uint16_t> listen() {
    boost::system::error_code ec;
    auto address = asio::ip::make_address(settings_.host, ec);
    if (ec) return fail(ErrorCode::kInvalidRequest, "invalid listen host '" + settings_.host + "'");
    tcp::endpoint endpoint(address, settings_.port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return fail(ErrorCode::kInternal, fmt::format("cannot listen on {}:{}: {}", settings_.host,
                                                    settings_.port, ec.message()));
    }
    return acceptor_.local_endpoint().port();
  }

  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    while (!draining_) {
      // Accept on the main context, then hand the descriptor to a worker: the pending accept
      // then never refers to a worker context, whatever the order of teardown.
      auto [ec, accepted] = co_await acceptor_.async_accept(asio::make_strand(ioc_),
                                                            asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
        // EMFILE and friends: back off instead of spinning.
        log_->warn("accept failed: {}", ec.message());
        asio::steady_timer pause(acceptor_.get_executor(), 50ms);
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      if (connection_count() >= settings_.max_connections) {
        boost::system::error_code ignored;
        accepted.close(ignored);
        continue;
      }
      tcp::socket socket = std::move(accepted);
      if (!workers_.empty()) {
        asio::io_context& worker = *workers_[next_worker_++ % workers_.size()];
        boost::system::error_code move_ec;
        const auto protocol = accepted_protocol(socket);
        tcp::socket moved(worker);
        moved.assign(protocol, socket.release(move_ec), move_ec);
        if (move_ec) continue;
        socket = std::move(moved);
      }
      boost::system::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      auto conn = std::make_shared<Connection>(std::move(socket));
      std::uint64_t id = next_conn_id_.fetch_add(1);
      {
        std::lock_guard lock(mu_);
        connections_.emplace(id, conn);
      }
      asio::co_spawn(conn->stream.get_executor(), session(conn, id), asio::detached);
    }
  }

  static tcp accepted_protocol(const tcp::socket& socket) {
    boost::system::error_code ec;
    auto local = socket.local_endpoint(ec);
    return ec ? tcp::v4() : local.protocol();
  }

  std::size_t connection_count() const {
    std::lock_guard lock(mu_);
    return connections_.size();
  }

  // Writes an error reply on a connection whose request could not be read; the caller closes.
  asio::awaitable<void> write_early_error(Connection& conn, int status, const Error& error,
                                          const std::string& rid) {
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), 11};
    res.set(bhttp::field::content_type, "application/json");
    res.set(bhttp::field::server, "imagegate");
    res.set("X-Request-Id", rid);
    res.keep_alive(false);
    res.body() = render_error_body(error);
    res.prepare_payload();
    conn.stream.expires_after(std::chrono::milliseconds(settings_.write_timeout_ms));
    co_await bhttp::async_write(conn.stream, res, asio::as_tuple(asio::use_awaitable));
    if (settings_.access_log) {
      log_->info("rid={} status={} early_error={} ", rid, status, error_code_name(error.code));
    }
  }

  asio::awaitable<Response> dispatch(Request& req) {
    auto match = router_.match(req.method, req.path);
    if (match.handler == nullptr) {
      Response r = Response::error(*match.error);
      if (!match.allow.empty()) r.headers.emplace_back("Allow", match.allow);
      co_return r;
    }
    req.path_params = std::move(match.params);
    try {
      co_return co_await (*match.handler)(req);
    } catch (const std::exception& e) {
      log_->error("rid={} handler threw: {}", req.request_id, e.what());
    }
    const Error internal{ErrorCode::kInternal, "Internal error."};
    co_return Response::error(internal);
  }

  asio::awaitable<void> session(std::shared_ptr<Connection> conn, std::uint64_t id) {
    auto self = shared_from_this();
    beast::flat_buffer buffer;
    const auto header_timeout = std::chrono::milliseconds(settings_.header_timeout_ms);
    const auto idle_timeout = std::chrono::milliseconds(settings_.idle_timeout_ms);
    bool linger = false;  // an early error left request bytes unread: drain them before closing
    bool first_request = true;
    while (!draining_) {
      conn->busy = false;
      if (buffer.size() == 0) {
        // Wait for the first byte of the next request under the idle deadline; the header
        // deadline starts with that byte. A new connection gets no longer than the header
        // deadline for its first byte (as nginx's client_header_timeout): sockets opened and
        // left silent would otherwise hold connection slots for the whole idle timeout.
        conn->stream.expires_after(first_request ? std::min(idle_timeout, header_timeout)
                                                 : idle_timeout);
        auto [ec, n] = co_await conn->stream.async_read_some(buffer.prepare(4096),
                                                             asio::as_tuple(asio::use_awaitable));
        if (ec) break;
        buffer.commit(n);
      }
      conn->busy = true;
      const auto started = std::chrono::steady_clock::now();
      bhttp::request_parser<bhttp::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(settings_.max_header_bytes));
      parser.body_limit(settings_.max_body_bytes);
      conn->stream.expires_after(header_timeout);
      auto [hec, hn] = co_await bhttp::async_read_header(conn->stream, buffer, parser,
                                                         asio::as_tuple(asio::use_awaitable));
      std::string rid;
      if (!hec) {
        auto it = parser.get().find("x-request-id");
        if (it != parser.get().end() && is_sane_request_id(it->value())) rid = it->value();
      }
      if (rid.empty()) rid = next_request_id();
      if (hec) {
        // Errors are named locals: GCC 12 double-destroys temporaries in co_await expressions.
        if (hec == bhttp::error::header_limit) {
          const Error error{ErrorCode::kInvalidRequest,
                            fmt::format("Request header block exceeds {} bytes.",
                                        settings_.max_header_bytes)};
          linger = true;
          co_await write_early_error(*conn, 431, error, rid);
        } else if (hec == bhttp::error::body_limit) {
          // Beast rejects a declared Content-Length above the limit while parsing the header.
          const Error error{ErrorCode::kPayloadTooLarge,
                            fmt::format("Request body exceeds the limit of {} bytes.",
                                        settings_.max_body_bytes)};
          linger = true;
          co_await write_early_error(*conn, 413, error, rid);
        } else if (hec != beast::error::timeout && hec != asio::error::eof &&
                   hec != asio::error::operation_aborted && hec != asio::error::connection_reset &&
                   hec != bhttp::error::end_of_stream) {
          const Error error{ErrorCode::kInvalidRequest, "Malformed HTTP request: " + hec.message()};
          linger = true;
          co_await write_early_error(*conn, 400, error, rid);
        }
        break;
      }
      auto& head = parser.get();
      if (auto problem = transfer_coding_problem(head)) {
        const Error error{ErrorCode::kInvalidRequest, problem->second};
        linger = true;
        co_await write_early_error(*conn, problem->first, error, rid);
        break;
      }
      if (auto len = parser.content_length(); len && *len > settings_.max_body_bytes) {
        const Error error{ErrorCode::kPayloadTooLarge,
                          fmt::format("Request body of {} bytes exceeds the limit of {} bytes.",
                                      *len, settings_.max_body_bytes)};
        linger = true;
        co_await write_early_error(*conn, 413, error, rid);
        break;
      }
      Request req;
      req.method = std::string(head.method_string());
      req.target = origin_form(head.target());
      auto q = req.target.find('?');
      req.path = req.target.substr(0, q);
      if (q != std::string::npos) req.query = req.target.substr(q + 1);
      req.headers.reserve(8);
      for (const auto& field : head) {
        req.headers.emplace_back(to_lower_ascii(field.name_string()), std::string(field.value()));
      }
      req.request_id = rid;
      req.remote_ip = conn->remote_ip;
      if (!parser.is_done()) {
        // A body already received whole costs nothing more to read: no gate for it.
        const auto declared = parser.content_length();
        const bool more_to_come = !declared || *declared > buffer.size();
        // Only for a route that exists: an unknown route or method still reads as 404 or 405.
        const BodyGate& gate = router_.body_gate();
        if (gate && more_to_come && router_.match(req.method, req.path).handler != nullptr) {
          std::optional<Error> refused = co_await gate(req);
          if (refused) {
            linger = true;
            co_await write_early_error(*conn, http_status(refused->code), *refused, rid);
            break;
          }
        }
        auto expect = head.find(bhttp::field::expect);
        if (expect != head.end() && beast::iequals(trim_header(expect->value()), "100-continue")) {
          bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
          conn->stream.expires_after(std::chrono::milliseconds(settings_.write_timeout_ms));
          auto [cec, cn] = co_await bhttp::async_write(conn->stream, cont,
                                                       asio::as_tuple(asio::use_awaitable));
          if (cec) break;
        }
        // A body still on its way gets its deadline from a timer that cancels the read rather
        // than the stream's own (which closes the socket), so that a client too slow to send it
        // hears 408, as nginx's client_body_timeout answers, instead of a bare close.
        const auto body_timeout = std::chrono::milliseconds(settings_.body_timeout_ms);
        auto deadline = more_to_come ? std::make_shared<BodyDeadline>() : nullptr;
        std::optional<asio::steady_timer> body_timer;  // only for a body still to come
        if (deadline) {
          conn->stream.expires_never();
          body_timer.emplace(conn->stream.get_executor(), body_timeout);
          body_timer->async_wait([deadline, conn](const boost::system::error_code& ec) {
            if (ec || deadline->read_done) return;
            deadline->fired = true;
            boost::system::error_code ignored;
            conn->stream.socket().cancel(ignored);
          });
        } else {
          conn->stream.expires_after(body_timeout);
        }
        auto [bec, bn] = co_await bhttp::async_read(conn->stream, buffer, parser,
                                                    asio::as_tuple(asio::use_awaitable));
        if (deadline) {
          deadline->read_done = true;
          body_timer->cancel();
        }
        if (bec) {
          if (deadline && deadline->fired) {
            const Error error{ErrorCode::kInvalidRequest,
                              fmt::format("The request body did not arrive within {} ms.",
                                          settings_.body_timeout_ms)};
            linger = true;
            co_await write_early_error(*conn, 408, error, rid);
          } else if (bec == bhttp::error::body_limit) {
            const Error error{ErrorCode::kPayloadTooLarge,
                              fmt::format("Request body exceeds the limit of {} bytes.",
                                          settings_.max_body_bytes)};
            linger = true;
            co_await write_early_error(*conn, 413, error, rid);
          } else if (bec != beast::error::timeout && bec != asio::error::eof &&
                     bec != asio::error::connection_reset) {
            const Error error{ErrorCode::kInvalidRequest, "Malformed HTTP body: " + bec.message()};
            linger = true;
            co_await write_early_error(*conn, 400, error, rid);
          }
          break;
        }
      }
      conn->stream.expires_never();

      const bool keep_alive = head.keep_alive();
      const bool is_head = head.method() == bhttp::verb::head;
      const bool http10 = head.version() < 11;
      req.body = std::move(head.body());

      Response response = co_await dispatch(req);

      const bool keep = keep_alive && !draining_;
      std::size_t body_bytes = response.body.size();
      boost::system::error_code wec;
      bool close_delimited = false;
      if (response.stream && !is_head) {
        close_delimited = http10;
        bhttp::response<bhttp::empty_body> res{static_cast<bhttp::status>(response.status), 11};
        res.set(bhttp::field::server, "imagegate");
        res.set(bhttp::field::content_type, response.content_type);
        res.set("X-Request-Id", rid);
        for (auto& [name, value] : response.headers) res.set(name, value);
        // HTTP/1.0 has no chunked coding: the body ends when the connection closes.
        res.keep_alive(keep && !http10);
        if (!http10) res.chunked(true);
        bhttp::response_serializer<bhttp::empty_body> sr{res};
        conn->stream.expires_after(std::chrono::milliseconds(settings_.write_timeout_ms));
        auto [hec2, hn2] = co_await bhttp::async_write_header(conn->stream, sr,
                                                              asio::as_tuple(asio::use_awaitable));
        ChunkWriter writer(conn->stream, settings_.write_timeout_ms, !http10);
        if (hec2) {
          wec = hec2;
          writer.mark_failed();  // the producer still runs, so its job completes
        }
        co_await response.stream(writer);
        if (!wec && !co_await writer.finish()) wec = asio::error::broken_pipe;
        body_bytes = writer.bytes();
      } else {
        bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(response.status), 11};
        res.set(bhttp::field::server, "imagegate");
        res.set(bhttp::field::content_type, response.content_type);
        res.set("X-Request-Id", rid);
        for (auto& [name, value] : response.headers) res.set(name, value);
        res.keep_alive(keep);
        if (response.status == 304 || response.status == 204) {
          // No body, and a 304's Content-Length would have to be the full representation's
          // (RFC 9110 §8.6): none is sent.
        } else if (is_head) {
          res.content_length(body_bytes);
        } else {
          res.body() = std::move(response.body);
          res.prepare_payload();
        }
        conn->stream.expires_after(std::chrono::milliseconds(settings_.write_timeout_ms));
        auto [ec2, n2] =
            co_await bhttp::async_write(conn->stream, res, asio::as_tuple(asio::use_awaitable));
        wec = ec2;
      }
      if (settings_.access_log) {
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                              started)
                        .count();
        log_->info("method={} path={} status={} latency_ms={:.3f} key={} bytes={} ip={} rid={}",
                   printable(req.method, 16), printable(req.path), response.status, ms,
                   response.key_prefix.empty() ? "-" : response.key_prefix, body_bytes,
                   req.remote_ip, rid);
      }
      if (wec || !keep || close_delimited) break;
      first_request = false;
    }
    boost::system::error_code ignored;
    beast::get_lowest_layer(conn->stream).socket().shutdown(tcp::socket::shutdown_send, ignored);
    if (linger) co_await drain_before_close(*conn);
    beast::get_lowest_layer(conn->stream).close();
    std::lock_guard lock(mu_);
    connections_.erase(id);
  }

  // Closing a socket with unread bytes makes the kernel answer with a reset, which can destroy
  // the error reply before the client reads it: a client still uploading a body we refused (most
  // HTTP clients do not wait for 100-continue) would see "connection reset" instead of the 413,
  // and SDKs retry those. So, like nginx's lingering close, read and discard what the client
  // still sends, for a bounded time, until it closes its side.
  asio::awaitable<void> drain_before_close(Connection& conn) {
    constexpr auto kIdle = std::chrono::seconds(2);
    constexpr auto kTotal = std::chrono::seconds(10);
    const auto deadline = std::chrono::steady_clock::now() + kTotal;
    std::array<char, 16384> scratch;
    for (;;) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) break;
      conn.stream.expires_after(std::min<std::chrono::steady_clock::duration>(left, kIdle));
      auto [ec, n] = co_await conn.stream.async_read_some(asio::buffer(scratch),
                                                          asio::as_tuple(asio::use_awaitable));
      if (ec) break;
    }
  }

  void begin_shutdown(std::function<void(bool)> done) {
    if (draining_.exchange(true)) return;
    auto self = shared_from_this();
    asio::post(acceptor_.get_executor(), [self] {
      boost::system::error_code ignored;
      self->acceptor_.close(ignored);
    });
    std::vector<std::shared_ptr<Connection>> conns;
    {
      std::lock_guard lock(mu_);
      for (auto& [id, weak] : connections_) {
        if (auto c = weak.lock()) conns.push_back(std::move(c));
      }
    }
    for (auto& c : conns) {
      asio::post(c->stream.get_executor(), [c] {
        if (!c->busy) c->stream.cancel();
      });
    }
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(settings_.shutdown_grace_ms);
    asio::co_spawn(ioc_, wait_for_drain(self, deadline, std::move(done)), asio::detached);
  }

  // A plain function coroutine, not a capturing lambda: a lambda's captures would die with the
  // closure object while the coroutine still runs.
  static asio::awaitable<void> wait_for_drain(std::shared_ptr<Impl> self,
                                              std::chrono::steady_clock::time_point deadline,
                                              std::function<void(bool)> done) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (self->connection_count() > 0 && std::chrono::steady_clock::now() < deadline) {
      timer.expires_after(20ms);
      co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    done(self->connection_count() == 0);
  }

  asio::io_context& ioc_;
  std::vector<asio::io_context*> workers_;
  std::size_t next_worker_ = 0;  // only the accept loop touches it
  ServerSettings settings_;
  const Router& router_;
  std::shared_ptr<spdlog::logger> log_;
  tcp::acceptor acceptor_;
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, std::weak_ptr<Connection>> connections_;
  std::atomic<bool> draining_{false};
  std::atomic<std::uint64_t> next_conn_id_{1};
  std::string rid_prefix_;
  std::atomic<std::uint64_t> rid_counter_{1};
};

Server::Server(asio::io_context& ioc, std::vector<asio::io_context*> workers,
               ServerSettings settings, const Router& router,
               std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_shared<Impl>(ioc, std::move(workers), std::move(settings), router,
                                   std::move(log))) {}

Server::~Server() = default;

Result<std::uint16_t> Server::listen() { return impl_->listen(); }

void Server::start() {
  asio::co_spawn(impl_->acceptor_.get_executor(), impl_->accept_loop(), asio::detached);
}

void Server::begin_shutdown(std::function<void(bool)> done) { impl_->begin_shutdown(std::move(done)); }

std::size_t Server::connection_count() const { return impl_->connection_count(); }

}  // namespace ig::http
