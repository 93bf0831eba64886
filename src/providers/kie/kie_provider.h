#pragma once
// KieProvider: the ImageProvider for Kie.ai-style async task APIs. A generation is
// `POST {base}/api/v1/jobs/createTask` (answers a taskId), then polling
// `GET {base}/api/v1/jobs/recordInfo?taskId=ID` until the task succeeds or fails, then
// downloading the result URLs. The upstream's callback (POSTed to callBackUrl) only wakes the
// poll early through UpstreamWakeups; its body is never trusted.
//
// Promises (beyond ImageProvider's):
//  - A task is submitted at most once per generate() call, and never when the task carries
//    resume_upstream_task_id (restart resumption waits on that id instead).
//  - task.observer->accepted(taskId) completes before the first poll, so the engine can persist
//    the upstream id before anything else happens.
//  - createTask failures are classified for safe failover: nothing reached the upstream, or it
//    refused before accepting work (connect error, HTTP 429/5xx/401/402/403, in-body code
//    429/401/402/403/>=500) -> kRetryable; the request's fault (HTTP 400/422, other in-body 4xx)
//    -> kInvalidRequest with the upstream's msg; anything after the upstream may have accepted
//    work (timeout or reset after sending, unparsable 200, other statuses) -> kFailed.
//  - After acceptance every failure is kFailed (a content-policy failMsg: kInvalidRequest).
//    Transient poll errors (network, 5xx, garbage, in-body code != 200) are retried until
//    timeout_ms (counted from the start of generate) or task.deadline_ms passes.
//  - Every result image was downloaded (bounded by max_result_bytes) and sniffed: mime, width
//    and height come from the bytes (PNG, JPEG or WebP only), never from the upstream's claims.
//  - Never blocks a thread: polls wait on an Asio timer (or a wakeup), HTTP goes through the
//    non-blocking HttpClient. Errors are values; no exception escapes generate().
//
// Request mapping:
//  - model: text_to_image_models / image_to_image_models[canonical]; unmapped "gpt-image-2" ->
//    "gpt-image-2-text-to-image" / "gpt-image-2-image-to-image"; anything else passes through.
//    Image-to-image when task.edit or task.images / task.image_urls is non-empty; it sends
//    input_urls = task.image_urls (bytes cannot be sent; without URLs the task fails). A mask
//    is not supported by the protocol and is ignored.
//  - aspect_ratio: see kie_aspect_ratio; resolution: see kie_resolution.
//  - n, prompt, output_format (omitted when empty); callBackUrl from callback_url_for(job_id)
//    (omitted when the function is empty or returns "").

#include <boost/asio/awaitable.hpp>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "net/http_client.h"
#include "providers/provider.h"
#include "providers/upstream_wakeups.h"

namespace ig::providers {

// One configured Kie-style upstream channel. Plain data.
struct KieChannelSettings {
  std::string name;      // channel name
  std::string base_url;  // e.g. "https://api.kie.ai" (a trailing slash is ignored)
  std::string api_key;
  // Canonical model id -> upstream model id, per mode (defaults: see the top of this file).
  std::map<std::string, std::string> text_to_image_models;
  std::map<std::string, std::string> image_to_image_models;
  int poll_interval_ms = 2000;      // between recordInfo polls (a callback cuts it short)
  int request_timeout_ms = 30'000;  // each HTTP exchange (createTask, poll, download)
  int connect_timeout_ms = 10'000;
  std::int64_t timeout_ms = 30 * 60'000;    // overall wait for the task, from generate()
  std::string proxy;                        // http(s) proxy URL or ""
  std::size_t max_result_bytes = 64 << 20;  // per downloaded result image
  // Policy for base_url and for result files on the same origin (operator-configured upstream);
  // nullopt = the client's default. Result files on any other origin get the strict policy.
  std::optional<net::AddressPolicy> address_policy;
  // The callBackUrl for a job (e.g. imagegate's public callback route); empty function or ""
  // result = no callback (polling only).
  std::function<std::string(std::string_view job_id)> callback_url_for;
};

// Kie's `aspect_ratio` for a task. If size_label is itself a ratio "W:H" it is the source,
// else width:height. The ratio is reduced by its gcd; when it is not one Kie knows (1:1, 2:3,
// 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9) the nearest one (by log of the ratio) is used.
// Non-positive sizes give "1:1".
std::string kie_aspect_ratio(int width, int height, std::string_view size_label);

// Kie's `resolution` from the long edge: <= 1536 -> "1K", <= 2048 -> "2K", else "4K".
std::string kie_resolution(int width, int height);

class KieProvider final : public ImageProvider {
 public:
  // `client`, `wakeups` and `clock` must outlive the provider and every generate() call.
  // `clock` measures timeout_ms and task.deadline_ms (Unix ms).
  KieProvider(net::HttpClient& client, UpstreamWakeups& wakeups, KieChannelSettings settings,
              const Clock& clock);

  const std::string& channel() const override { return settings_.name; }
  // Running a task again could make the upstream render (and bill) it twice.
  bool resubmit_safe() const override { return false; }

  boost::asio::awaitable<std::expected<ImageResult, ProviderError>> generate(
      const ImageTask& task, PartialSink* partials) override;

 private:
  using Outcome = std::expected<ImageResult, ProviderError>;

  std::string upstream_model(const std::string& model, bool image_to_image) const;
  std::expected<net::HttpRequest, ProviderError> build_create_request(const ImageTask& task) const;
  boost::asio::awaitable<std::expected<std::string, ProviderError>> create_task(
      const ImageTask& task);
  boost::asio::awaitable<Outcome> wait_for_result(const ImageTask& task,
                                                  const std::string& upstream_task_id,
                                                  UpstreamWakeups::Waiter& waiter,
                                                  std::int64_t give_up_at_ms, bool poll_first);
  boost::asio::awaitable<std::expected<OutputImage, ProviderError>> download(
      const std::string& url, std::int64_t give_up_at_ms);
  boost::asio::awaitable<Outcome> run(const ImageTask& task);

  net::HttpClient& client_;
  UpstreamWakeups& wakeups_;
  KieChannelSettings settings_;
  const Clock& clock_;
};

}  // namespace ig::providers
