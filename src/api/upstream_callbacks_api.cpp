#include "api/upstream_callbacks_api.h"

#include <spdlog/spdlog.h>

namespace ig::api {

namespace {

std::string resource(std::string_view channel, std::string_view job_id) {
  return "/v1/upstream/" + std::string(channel) + "/" + std::string(job_id);
}

}  // namespace

std::string upstream_callback_url(const blobs::UrlSigner& signer, std::string_view base_url,
                                  std::string_view channel, std::string_view job_id,
                                  std::int64_t expires_at_s) {
  const std::string path = resource(channel, job_id);
  return std::string(base_url) + path + "?" + signer.sign(path, expires_at_s);
}

UpstreamCallbacksApi::UpstreamCallbacksApi(const blobs::UrlSigner& signer,
                                           providers::UpstreamWakeups& wakeups)
    : signer_(signer), wakeups_(wakeups) {}

void UpstreamCallbacksApi::register_routes(http::Router& router) {
  router.add("POST", "/v1/upstream/{channel}/{job}",
             [this](http::Request& r) { return receive(r); });
}

boost::asio::awaitable<http::Response> UpstreamCallbacksApi::receive(http::Request& req) {
  const std::string channel(req.param("channel").value_or(""));
  const std::string job_id(req.param("job").value_or(""));
  const Error denied{ErrorCode::kPermissionDenied, "This callback URL is invalid or has expired."};
  auto exp_text = req.query_param("exp");
  auto sig = req.query_param("sig");
  if (!exp_text || !sig || exp_text->empty() || exp_text->size() > 12 ||
      exp_text->find_first_not_of("0123456789") != std::string::npos || job_id.size() > 64 ||
      channel.size() > 64) {
    co_return http::Response::error(denied);
  }
  const std::int64_t exp = std::stoll(*exp_text);
  if (!signer_.verify(resource(channel, job_id), exp, *sig)) {
    co_return http::Response::error(denied);
  }
  const bool woke = wakeups_.notify(job_id);
  spdlog::debug("upstream callback for job {} from channel {} ({})", job_id, channel,
                woke ? "poller woken" : "no poller waiting");
  co_return http::Response::json(200, R"({"code":200,"msg":"success"})");
}

}  // namespace ig::api
