#pragma once
// Server: the HTTP/1.1 front door. One Asio coroutine per connection on a strand of the shared
// io_context (no thread per connection), keep-alive, header/body size limits (431/413 with an
// OpenAI error body), read/idle/write deadlines so a slow client cannot hold a connection,
// X-Request-Id on every reply, one access-log line per request, and graceful shutdown.

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "http/router.h"

namespace spdlog {
class logger;
}

namespace ig::http {

struct ServerSettings {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 50 * 1024 * 1024;
  int header_timeout_ms = 10'000;   // whole header block, from its first byte
  int body_timeout_ms = 120'000;    // whole body
  int idle_timeout_ms = 60'000;     // keep-alive wait for the next request
  int write_timeout_ms = 120'000;
  int shutdown_grace_ms = 10'000;
  std::size_t max_connections = 10'000;
  bool access_log = true;
};

class Server {
 public:
  // `ioc` runs the acceptor and shutdown. Connections go round-robin to `workers`, each run by
  // exactly one thread, so a connection needs no strand and threads never contend for one
  // scheduler. With no workers, connections run on strands of `ioc`.
  Server(boost::asio::io_context& ioc, std::vector<boost::asio::io_context*> workers,
         ServerSettings settings, const Router& router, std::shared_ptr<spdlog::logger> log);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens; returns the bound port (useful with port 0).
  Result<std::uint16_t> listen();
  // Starts accepting on the io_context.
  void start();
  // Stops accepting, closes idle keep-alive connections and lets in-flight requests finish.
  // `done(drained)` runs once every connection is gone, or when the grace period ends.
  void begin_shutdown(std::function<void(bool drained)> done);
  std::size_t connection_count() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// "Sane" client request ids are echoed; anything else is replaced by a generated one.
bool is_sane_request_id(std::string_view id);

}  // namespace ig::http
