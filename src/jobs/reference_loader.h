#pragma once
// ReferenceLoader: turns the reference images and masks a client named (ImageSource: an http(s)
// URL, a data: URL, bare base64 or an uploaded file) into verified bytes for the providers.
//
// Promises:
//  - Every returned InputImage is at most max_image_bytes long, is a PNG, JPEG or WebP by its
//    magic bytes (the client's filename and content type are ignored), and declares a size
//    within probe_limits. Nothing is decoded: only headers are read.
//  - URLs are fetched with http/https only, through the HttpClient with this loader's address
//    policy (loopback, private and link-local are refused unless allowed), connect and total
//    timeouts, a redirect limit and the size cap enforced while receiving.
//  - Every failure, a failed fetch included, is Error::invalid (400) with param = source.field
//    and a message naming the source ("could not fetch image_urls[1]: connection failed").
//  - Nothing blocks a thread while waiting. Sources are borrowed for the duration of a call.
//
// SSRF: this class only chooses the policy; the check itself runs inside the HttpClient on
// every address it connects to (redirects and DNS rebinding included). A stricter policy or
// client drops in through the settings and the constructor without changing this class.

#include <boost/asio/awaitable.hpp>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "jobs/image_source.h"
#include "media/image_probe.h"
#include "net/address_policy.h"
#include "net/http_client.h"
#include "providers/provider.h"

namespace ig::jobs {

// Limits for loading reference images. The default address policy refuses every non-public
// destination; tests and trusted deployments opt in per class.
struct ReferenceLoaderSettings {
  std::size_t max_image_bytes = 20 << 20;  // per image (upload, data URL, base64 or download)
  int connect_timeout_ms = 5'000;
  int total_timeout_ms = 30'000;
  int max_redirects = 3;
  net::AddressPolicy address_policy;  // default: refuse loopback / private / link-local
  media::ProbeLimits probe_limits;
  int max_parallel = 4;  // load_all: sources loaded at once (values < 1 count as 1)
};

// Loads and verifies reference images (see the file comment for what it promises). Holds a
// reference to the client, which must outlive it. Safe to use from many coroutines at once.
class ReferenceLoader {
 public:
  ReferenceLoader(net::HttpClient& client, ReferenceLoaderSettings settings);

  const ReferenceLoaderSettings& settings() const { return settings_; }

  // One source into verified bytes; the error names source.field.
  boost::asio::awaitable<Result<providers::InputImage>> load(const ImageSource& source);

  // All sources, at most max_parallel at a time, results in the order given. On the first
  // failure no further source is started, the loads in flight are cancelled, and that failure
  // is returned. When a field occurs more than once, messages index it: "image_urls[2]".
  boost::asio::awaitable<Result<std::vector<providers::InputImage>>> load_all(
      const std::vector<ImageSource>& sources);

 private:
  struct Batch;

  boost::asio::awaitable<Result<providers::InputImage>> load_labeled(const ImageSource& source,
                                                                     std::string label);
  boost::asio::awaitable<Result<std::string>> fetch(const std::string& url,
                                                    const std::string& field,
                                                    const std::string& label);
  Result<std::string> decode_data_url(std::string_view url, const std::string& field,
                                      const std::string& label) const;
  // `bare`: the text came from a URL field that held neither a URL nor a data: URL, so a
  // decoding error says what the field expects rather than what base64 found.
  Result<std::string> decode_base64(std::string_view text, const std::string& field,
                                    const std::string& label, bool bare = false) const;
  Result<providers::InputImage> verify(std::string bytes, const std::string& field,
                                       const std::string& label) const;
  // load_all's body on its strand: runs `workers` run_batch coroutines as one group.
  static boost::asio::awaitable<void> run_group(ReferenceLoader* self, std::shared_ptr<Batch> batch,
                                                std::size_t workers);
  // One load_all worker: takes the next unstarted source until none is left or one failed; the
  // first failure is recorded in the batch (the group then cancels the workers still running).
  static boost::asio::awaitable<void> run_batch(ReferenceLoader* self,
                                                std::shared_ptr<Batch> batch);

  net::HttpClient& client_;
  ReferenceLoaderSettings settings_;
};

}  // namespace ig::jobs
