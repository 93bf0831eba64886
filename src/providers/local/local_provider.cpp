#include "providers/local/local_provider.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "media/local_renderer.h"

namespace ig::providers {
namespace asio = boost::asio;

namespace {

media::OutputFormat format_of(const std::string& name) {
  if (name == "jpeg") return media::OutputFormat::kJpeg;
  if (name == "webp") return media::OutputFormat::kWebp;
  return media::OutputFormat::kPng;
}

struct RenderOutcome {
  std::vector<media::EncodedImage> images;
  std::vector<media::EncodedImage> partials;
  ImageUsage usage;
  std::optional<Error> error;
};

}  // namespace

LocalProvider::LocalProvider(BlockingPool& pool, Random& random, LocalProviderSettings settings)
    : pool_(pool), random_(random), settings_(std::move(settings)) {}

asio::awaitable<std::expected<ImageResult, ProviderError>> LocalProvider::generate(
    const ImageTask& task, PartialSink* partials) {
  if (settings_.latency_ms > 0) {
    asio::steady_timer timer(co_await asio::this_coro::executor,
                             std::chrono::milliseconds(settings_.latency_ms));
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  if (settings_.failure_percent > 0) {
    std::uint32_t roll;
    {
      std::lock_guard lock(random_mu_);
      roll = random_.uniform(100);
    }
    if (roll < static_cast<std::uint32_t>(settings_.failure_percent)) {
      co_return std::unexpected(ProviderError{
          settings_.failures_retryable ? FailureKind::kRetryable : FailureKind::kFailed,
          "local provider: injected failure", 503});
    }
  }

  const int partial_count = partials != nullptr ? task.partial_images : 0;
  auto render = [&task, partial_count] {
    RenderOutcome out;
    media::RenderSpec spec;
    spec.width = task.width;
    spec.height = task.height;
    spec.prompt = task.prompt;
    spec.model = task.model;
    spec.quality = task.quality;
    spec.format = format_of(task.output_format);
    spec.compression = task.output_compression;
    spec.transparent = task.background == "transparent";
    for (const auto& img : task.images) spec.reference_images.push_back(img.bytes);
    if (task.mask) spec.mask = task.mask->bytes;
    for (int i = 0; i < task.n; ++i) {
      // Each of n images carries its own index, so they differ visibly.
      spec.job_id = task.n > 1 ? task.job_id + " #" + std::to_string(i + 1) : task.job_id;
      auto image = media::render_image(spec);
      if (!image) {
        out.error = image.error();
        return out;
      }
      out.images.push_back(std::move(*image));
    }
    if (partial_count > 0) {
      auto p = media::render_partials(spec, out.images.front(), partial_count);
      if (!p) {
        out.error = p.error();
        return out;
      }
      out.partials = std::move(*p);
    }
    auto usage = media::local_usage(spec);
    out.usage.input_text_tokens = usage.input_text_tokens;
    out.usage.input_image_tokens = usage.input_image_tokens;
    out.usage.output_tokens = usage.output_image_tokens * task.n;
    return out;
  };
  RenderOutcome outcome = co_await pool_.run(render);
  if (outcome.error) {
    const bool client_fault = outcome.error->code == ErrorCode::kInvalidRequest;
    co_return std::unexpected(ProviderError{
        client_fault ? FailureKind::kInvalidRequest : FailureKind::kFailed, outcome.error->message,
        client_fault ? 400 : 500, client_fault ? outcome.error->param : std::nullopt});
  }
  for (std::size_t i = 0; i < outcome.partials.size(); ++i) {
    OutputImage partial{std::move(outcome.partials[i].bytes), outcome.partials[i].mime,
                        outcome.partials[i].width, outcome.partials[i].height, std::nullopt};
    co_await partials->partial(static_cast<int>(i), partial);
  }
  ImageResult result;
  for (auto& img : outcome.images) {
    result.images.push_back(OutputImage{std::move(img.bytes), img.mime, img.width, img.height,
                                        std::nullopt});
  }
  result.usage = outcome.usage;
  co_return result;
}

}  // namespace ig::providers
