#pragma once
// CurlHttpClient: the production HttpClient. libcurl's multi interface driven by Asio
// (multi_socket: curl tells us which sockets to watch and when to wake it; Asio waits). No
// thread ever blocks on a transfer: an in-flight request costs a curl easy handle and buffers,
// never a thread. Connection reuse, TLS, HTTP/2 multiplexing (over TLS, negotiated by ALPN) and
// proxies come from libcurl. Every curl call happens on one internal strand; `send` may be
// called from any thread and resumes the caller on its own executor.
//
// Safety: the address policy is checked on every address curl is about to connect to (see
// address_policy.h); only http and https are spoken, also across redirects.
//
// Lifetime: destroy the client before its io_context. Destroying it (or shutdown()) aborts every
// in-flight send, which completes with kAborted once the io_context runs its handlers.

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <memory>
#include <string>

#include "core/error.h"
#include "net/address_policy.h"
#include "net/http_client.h"

namespace ig::net {

// How one CurlHttpClient connects; fixed for the client's lifetime.
struct CurlClientSettings {
  AddressPolicy address_policy;               // default for requests without their own
  std::size_t max_connections_per_host = 64;  // more transfers wait (in curl) for a connection
  std::size_t max_total_connections = 512;
  std::string user_agent = "imagegate/0.1";
};

class CurlHttpClient final : public HttpClient {
 public:
  CurlHttpClient(boost::asio::io_context& ioc, CurlClientSettings settings);
  ~CurlHttpClient() override;
  CurlHttpClient(const CurlHttpClient&) = delete;
  CurlHttpClient& operator=(const CurlHttpClient&) = delete;

  // See HttpClient::send: pass a named request moved in. Cancellation through the awaitable's
  // cancellation slot (e.g. `||` with a timer) aborts the transfer with kAborted.
  //
  // A request whose address_policy differs from the client's default gets a fresh connection
  // that is closed afterwards, so a connection opened under a permissive policy is never reused
  // by a stricter one (and vice versa). Give trusted and untrusted traffic separate clients (or
  // make the common case the default) to keep keep-alive for both.
  boost::asio::awaitable<NetResult<HttpResponse>> send(HttpRequest request) override;

  // Aborts every in-flight send (kAborted); later sends fail with kAborted. Any thread.
  void shutdown();

  // Transfers currently owned by the client (queued, connecting or transferring).
  std::size_t in_flight() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Process-wide libcurl setup, done once by the composition root before any client exists
// (curl_global_init). Fails if libcurl is older than 7.85 (needed for CURLOPT_PROTOCOLS_STR).
Result<void> init_curl();
void cleanup_curl();

}  // namespace ig::net
