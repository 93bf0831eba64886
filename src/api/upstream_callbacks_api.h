#pragma once
// Callbacks from async upstreams (Kie) to imagegate: POST /v1/upstream/{channel}/{job}?exp=&sig=
// The URL is signed (HMAC, expiring), so only the upstream we handed it to can call it, and the
// body is never trusted: a valid call only wakes the job's poller, which asks the upstream for
// the task's state itself. Polling alone still finishes the job when a callback is lost.

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "blobs/signed_url.h"
#include "core/clock.h"
#include "http/router.h"
#include "providers/upstream_wakeups.h"

namespace ig::api {

// The callback URL to hand to `channel` for `job_id`, valid until `expires_at_s`.
std::string upstream_callback_url(const blobs::UrlSigner& signer, std::string_view base_url,
                                  std::string_view channel, std::string_view job_id,
                                  std::int64_t expires_at_s);

class UpstreamCallbacksApi {
 public:
  UpstreamCallbacksApi(const blobs::UrlSigner& signer, providers::UpstreamWakeups& wakeups);
  void register_routes(http::Router& router);

 private:
  boost::asio::awaitable<http::Response> receive(http::Request& req);

  const blobs::UrlSigner& signer_;
  providers::UpstreamWakeups& wakeups_;
};

}  // namespace ig::api
