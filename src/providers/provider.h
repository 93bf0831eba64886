#pragma once
// ImageProvider: one adapter per upstream protocol (the built-in local renderer, the OpenAI
// Images API and every OpenAI-compatible reseller, later async task APIs). The job pipeline
// talks only to this interface; which adapter serves a model is configuration.
//
// Promises every adapter keeps:
//  - generate() never blocks a thread while waiting on the network or on a render.
//  - A failure says whether it is safe to try another channel (kRetryable: the upstream cannot
//    have accepted the work, so nobody will bill the operator twice; or it sent no answer at all
//    before its timeout, where REQUIREMENTS §6 asks for failover), the client's fault
//    (kInvalidRequest: e.g. moderation or an unreadable image, surfaced as a 400), or a plain
//    failure after the upstream may have started (kFailed: no failover).
//  - The task is borrowed for the duration of the call; callers pass a named object.

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ig::providers {

struct InputImage {
  std::string bytes;
  std::string mime;  // image/png, image/jpeg, image/webp
  int width = 0;
  int height = 0;
};

// Told when an async-task upstream (Kie) accepted the work, before the adapter waits for the
// result: the job engine persists the upstream task id so that a restart resumes waiting on it
// instead of resubmitting (which could bill the operator twice).
class UpstreamObserver {
 public:
  virtual ~UpstreamObserver() = default;
  virtual boost::asio::awaitable<void> accepted(std::string upstream_task_id) = 0;
};

struct ImageTask {
  std::string job_id;
  bool edit = false;
  std::string model;  // canonical model id (adapters apply their own model-name mapping)
  std::string prompt;
  int n = 1;
  int width = 1024;
  int height = 1024;
  std::string size_label;      // what the client asked for, e.g. "1536x1024" or "16:9"
  std::string quality;         // as requested ("auto", "high", "hd", ...)
  std::string background;      // "auto" | "transparent" | "opaque"
  std::string output_format;   // "png" | "jpeg" | "webp"
  std::optional<int> output_compression;
  std::string moderation;      // "" | "auto" | "low"
  std::string user;
  std::vector<InputImage> images;  // reference images (edits)
  // Public URLs of `images`, same order, when the engine published them (async jobs keep their
  // inputs as blobs). Upstreams that take URLs instead of bytes (Kie) need them.
  std::vector<std::string> image_urls;
  std::optional<InputImage> mask;
  int partial_images = 0;  // > 0: deliver that many partial images through the sink
  // Async-task upstreams only. Non-empty: the upstream already accepted this task under that id
  // (before a restart); wait for it and never submit again.
  std::string resume_upstream_task_id;
  UpstreamObserver* observer = nullptr;  // may be null
  // Unix ms after which the job is abandoned (0 = only the adapter's own timeout applies).
  std::int64_t deadline_ms = 0;
};

struct OutputImage {
  std::string bytes;
  std::string mime;
  int width = 0;
  int height = 0;
  std::optional<std::string> revised_prompt;
};

// Token counts as OpenAI reports them in `usage`.
struct ImageUsage {
  std::int64_t input_text_tokens = 0;
  std::int64_t input_image_tokens = 0;
  std::int64_t output_tokens = 0;
};

struct ImageResult {
  std::vector<OutputImage> images;
  std::optional<ImageUsage> usage;
};

enum class FailureKind { kInvalidRequest, kRetryable, kFailed };

struct ProviderError {
  FailureKind kind = FailureKind::kFailed;
  std::string message;
  int upstream_status = 0;  // 0: no HTTP status (transport error, local failure)
  std::optional<std::string> param;  // kInvalidRequest: the request field at fault, if known
};

// Receives partial images while a streamed generation runs.
class PartialSink {
 public:
  virtual ~PartialSink() = default;
  virtual boost::asio::awaitable<void> partial(int index, const OutputImage& image) = 0;
};

class ImageProvider {
 public:
  virtual ~ImageProvider() = default;
  virtual const std::string& channel() const = 0;
  // True when running a task again after a crash cannot bill anyone twice (the local renderer),
  // so a job interrupted mid-call may be requeued instead of failed.
  virtual bool resubmit_safe() const { return false; }
  // `partials` may be null (no streaming).
  virtual boost::asio::awaitable<std::expected<ImageResult, ProviderError>> generate(
      const ImageTask& task, PartialSink* partials) = 0;
};

}  // namespace ig::providers
