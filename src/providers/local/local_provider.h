#pragma once
// LocalProvider: the built-in renderer (libvips). Needs no network and no model: it draws the
// prompt and parameters into real images of the requested size and format, composites
// reference images and honours masks, synthesizes partial images, and reports deterministic
// token usage. Latency and a failure rate are configurable for demos and tests.

#include <boost/asio/any_io_executor.hpp>

#include "core/random.h"
#include "http/blocking_pool.h"
#include "providers/provider.h"

namespace ig::providers {

struct LocalProviderSettings {
  std::string name = "local";
  int latency_ms = 0;         // added before rendering
  int failure_percent = 0;    // 0-100: share of calls that fail
  bool failures_retryable = true;  // kRetryable (fail over) or kFailed
};

class LocalProvider final : public ImageProvider {
 public:
  LocalProvider(BlockingPool& pool, Random& random, LocalProviderSettings settings);
  const std::string& channel() const override { return settings_.name; }
  // Rendering again bills nobody.
  bool resubmit_safe() const override { return true; }
  boost::asio::awaitable<std::expected<ImageResult, ProviderError>> generate(
      const ImageTask& task, PartialSink* partials) override;

 private:
  BlockingPool& pool_;
  Random& random_;
  std::mutex random_mu_;
  LocalProviderSettings settings_;
};

}  // namespace ig::providers
