#pragma once
// OpenAiProvider: the ImageProvider for the OpenAI Images API and every OpenAI-compatible
// reseller (`POST {base}/images/generations` as JSON, `POST {base}/images/edits` as multipart).
//
// Promises (beyond ImageProvider's):
//  - Every result image was decoded from the reply (`b64_json`, or fetched from `url` with the
//    same client, bounded by max_response_bytes) and sniffed: mime, width and height come from
//    the bytes, never from the upstream's claims.
//  - Failures are classified so the pipeline can fail over safely (see classify_status):
//    nothing reached the upstream, or it refused before accepting work (429/5xx/529, 401/403)
//    -> kRetryable; the client's fault (400/422) -> kInvalidRequest with the upstream's message;
//    anything after the upstream may have done the work (timeout, reset, garbage) -> kFailed.
//  - With task.partial_images > 0 and a sink, the request is streamed and partial images are
//    handed to the sink live, in arrival order, on the caller's coroutine (never on the HTTP
//    client's strand), before the final result is returned.
//
// Quality mapping (task.quality -> upstream `quality`):
//  - "low" / "medium" / "high" / "auto": passed through.
//  - "standard": omitted (the upstream default, auto). In our API standard/hd/uhd name a size
//    tier (1K/2K/4K) that is already resolved into task.width x task.height.
//  - "hd", "uhd": "high" (the client asked for the premium tier, so it gets the best render).
//  - anything else or "": omitted.
//  dall-e-* upstream models keep their own vocabulary: "standard"/"hd" pass through, "uhd" and
//  "high" become "hd", and the other values are omitted.

#include <boost/asio/awaitable.hpp>
#include <cstddef>
#include <expected>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net/http_client.h"
#include "providers/provider.h"

namespace ig::providers {

// One configured OpenAI-compatible upstream channel. Plain data.
struct OpenAiChannelSettings {
  std::string name;      // channel name
  std::string base_url;  // e.g. "https://api.openai.com/v1" (a trailing slash is ignored)
  std::string api_key;
  int timeout_ms = 300'000;  // high quality takes ~2 minutes
  int connect_timeout_ms = 10'000;
  std::string proxy;  // http(s) proxy URL or ""
  // Sent after Authorization and Content-Type, in order (the upstream sees both if a name
  // repeats one of ours).
  std::vector<std::pair<std::string, std::string>> extra_headers;
  std::map<std::string, std::string> model_map;  // canonical model -> upstream model name
  std::size_t max_response_bytes = 256 << 20;    // a 4K PNG b64 is ~30 MB
  // Policy for requests to base_url; nullopt = the client's default. Images an upstream returns
  // as a `url` on another origin are always fetched under the strict (default) policy.
  std::optional<net::AddressPolicy> address_policy;
};

// The `quality` value sent upstream for a requested quality ("" = omit the field). Exposed for
// tests and documentation; see the table at the top of this file.
std::string map_quality(std::string_view requested, std::string_view upstream_model);

// How an upstream HTTP status (not 2xx) is classified; see the top of this file.
FailureKind classify_status(int status);

class OpenAiProvider final : public ImageProvider {
 public:
  // `client` must outlive the provider and every generate() call.
  OpenAiProvider(net::HttpClient& client, OpenAiChannelSettings settings);

  const std::string& channel() const override { return settings_.name; }

  boost::asio::awaitable<std::expected<ImageResult, ProviderError>> generate(
      const ImageTask& task, PartialSink* partials) override;

 private:
  std::string upstream_model(const std::string& model) const;
  net::HttpRequest build_request(const ImageTask& task, bool stream) const;
  // Parses a complete (non-streamed) 2xx reply and downloads `url` images. Consumes `body`:
  // it is released as soon as it is parsed, and each base64 string once decoded, so a 4K reply
  // never has its raw body, its parsed copy and the decoded image alive at the same time.
  boost::asio::awaitable<std::expected<ImageResult, ProviderError>> parse_reply(
      std::string& body, int status);
  boost::asio::awaitable<std::expected<std::string, ProviderError>> download(
      const std::string& url);
  boost::asio::awaitable<std::expected<ImageResult, ProviderError>> generate_streamed(
      const ImageTask& task, PartialSink& partials);

  net::HttpClient& client_;
  OpenAiChannelSettings settings_;
};

}  // namespace ig::providers
