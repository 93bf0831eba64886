#include "jobs/reference_loader.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>
#include <exception>
#include <map>
#include <optional>
#include <utility>

#include "core/base64.h"

namespace ig::jobs {

namespace asio = boost::asio;
using providers::InputImage;

namespace {

std::unexpected<Error> invalid(std::string message, const std::string& field) {
  return std::unexpected(Error::invalid(
      std::move(message), field.empty() ? std::nullopt : std::optional<std::string>(field)));
}

bool starts_with_icase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

// "scheme://..." (RFC 3986 scheme characters): the client meant a URL. Base64 text never
// contains ':', so this cannot misread real base64.
bool looks_like_url(std::string_view v) {
  const std::size_t colon = v.substr(0, 40).find("://");
  if (colon == std::string_view::npos || colon == 0 || colon > 32) return false;
  for (std::size_t i = 0; i < colon; ++i) {
    const char c = v[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool other = (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
    if (!alpha && !(i > 0 && other)) return false;
  }
  return true;
}

// Why a fetch failed, in words safe to show the client: fixed phrases, never the transport's
// own message (which can name internal addresses).
std::string fetch_failure(const net::NetError& error, const ReferenceLoaderSettings& settings) {
  switch (error.code) {
    case net::NetErrc::kConnect:
      return "could not connect to the host";
    case net::NetErrc::kTimeout:
      return fmt::format("timed out (connect limit {} ms, total limit {} ms)",
                         settings.connect_timeout_ms, settings.total_timeout_ms);
    case net::NetErrc::kReset:
      return "the connection was closed before the image arrived";
    case net::NetErrc::kTls:
      return "TLS handshake failed";
    case net::NetErrc::kBadUrl:
      return "the URL is not a valid http or https URL";
    case net::NetErrc::kTooManyRedirects:
      return fmt::format("more than {} redirects", settings.max_redirects);
    case net::NetErrc::kAborted:
      return "the download was cancelled";
    case net::NetErrc::kBlockedAddress:  // handled by the caller; kept for completeness
      return "address not allowed";
    case net::NetErrc::kTooLarge:  // handled by the caller
      return "the response is too large";
    case net::NetErrc::kOther:
      break;
  }
  return "the request failed";
}

// Message labels: the field, indexed when the field occurs more than once ("image_urls[2]";
// a multipart "image[]" becomes "image[2]").
std::vector<std::string> make_labels(const std::vector<ImageSource>& sources) {
  std::map<std::string_view, std::size_t> totals;
  for (const ImageSource& s : sources) ++totals[s.field];
  std::map<std::string_view, std::size_t> seen;
  std::vector<std::string> labels;
  labels.reserve(sources.size());
  for (const ImageSource& s : sources) {
    std::string_view base = s.field;
    if (base.ends_with("[]")) base.remove_suffix(2);
    std::string label(base.empty() ? std::string_view("image") : base);
    const std::size_t index = seen[s.field]++;
    if (totals[s.field] > 1) label += fmt::format("[{}]", index);
    labels.push_back(std::move(label));
  }
  return labels;
}

}  // namespace

// Shared by load_all and its workers; lives until the last worker is done.
struct ReferenceLoader::Batch {
  const std::vector<ImageSource>* sources = nullptr;  // owned by load_all's caller
  std::vector<std::string> labels;
  std::vector<std::optional<InputImage>> images;  // slot i written only by the worker that took i
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> started{0};  // workers whose body runs (see CancelOnFailure)
  std::atomic<bool> failed{false};
  std::optional<Error> error;  // written once, by the worker that set `failed` first
};

namespace {

// The group's cancellation condition: once a load failed, cancel the workers still running, but
// only when every worker's body has started. Boost 1.81's co_spawn lets operation_aborted escape
// past the completion handler (into io_context::run) when a coroutine is cancelled before its
// body switched off throw_if_cancelled and it then finishes without suspending. A worker that
// starts after the failure simply sees `failed` and returns.
struct CancelOnFailure {
  const std::atomic<bool>* failed;
  const std::atomic<std::size_t>* started;
  std::size_t workers;

  asio::cancellation_type_t operator()(const std::exception_ptr&) const {
    return failed->load() && started->load() == workers ? asio::cancellation_type::terminal
                                                        : asio::cancellation_type::none;
  }
};

}  // namespace

ReferenceLoader::ReferenceLoader(net::HttpClient& client, ReferenceLoaderSettings settings)
    : client_(client), settings_(std::move(settings)) {}

asio::awaitable<Result<InputImage>> ReferenceLoader::load(const ImageSource& source) {
  std::string label = source.field.empty() ? std::string("image") : source.field;
  co_return co_await load_labeled(source, std::move(label));
}

asio::awaitable<Result<std::vector<InputImage>>> ReferenceLoader::load_all(
    const std::vector<ImageSource>& sources) {
  std::vector<InputImage> images;
  if (sources.empty()) co_return images;
  std::vector<std::string> labels = make_labels(sources);
  if (sources.size() == 1) {
    Result<InputImage> one = co_await load_labeled(sources.front(), std::move(labels.front()));
    if (!one) co_return std::unexpected(std::move(one.error()));
    images.push_back(std::move(*one));
    co_return images;
  }

  auto batch = std::make_shared<Batch>();
  batch->sources = &sources;
  batch->labels = std::move(labels);
  batch->images.resize(sources.size());
  const std::size_t workers =
      std::min(sources.size(), static_cast<std::size_t>(std::max(settings_.max_parallel, 1)));

  // Everything that touches the group runs on one strand: its launch, the workers and the
  // cancellation they receive. Boost 1.81's ranged parallel_group reads the group after
  // launching it, so no worker may finish (and let this frame go) while the launch is still
  // running; and cancellation slots are not thread-safe. Fetches still overlap on the strand.
  // The caller's cancellation is deliberately not forwarded (empty slot; see CancelOnFailure).
  // Each fetch still ends within total_timeout_ms, and the caller's next co_await observes it.
  auto strand = asio::make_strand(co_await asio::this_coro::executor);
  asio::awaitable<void> group = run_group(this, batch, workers);
  auto token = asio::bind_cancellation_slot(asio::cancellation_slot(), asio::use_awaitable);
  co_await asio::co_spawn(strand, std::move(group), token);

  if (batch->failed.load()) co_return std::unexpected(std::move(*batch->error));
  images.reserve(sources.size());
  for (std::optional<InputImage>& image : batch->images) images.push_back(std::move(*image));
  co_return images;
}

asio::awaitable<void> ReferenceLoader::run_group(ReferenceLoader* self,
                                                 std::shared_ptr<Batch> batch,
                                                 std::size_t workers) {
  auto strand = co_await asio::this_coro::executor;
  using Op = decltype(asio::co_spawn(strand, run_batch(self, batch), asio::deferred));
  std::vector<Op> ops;
  ops.reserve(workers);
  for (std::size_t w = 0; w < workers; ++w) {
    ops.push_back(asio::co_spawn(strand, run_batch(self, batch), asio::deferred));
  }
  auto group = asio::experimental::make_parallel_group(std::move(ops));
  CancelOnFailure condition{&batch->failed, &batch->started, workers};
  auto results = co_await group.async_wait(condition, asio::use_awaitable);
  if (batch->failed.load()) co_return;
  for (const std::exception_ptr& e : std::get<1>(results)) {
    if (e) std::rethrow_exception(e);  // a bug, not a client error: let it propagate
  }
}

asio::awaitable<void> ReferenceLoader::run_batch(ReferenceLoader* self,
                                                 std::shared_ptr<Batch> batch) {
  // A cancelled fetch reports kAborted as a value; do not also turn it into an exception (this
  // also covers co_spawn's own final co_await; see CancelOnFailure).
  co_await asio::this_coro::throw_if_cancelled(false);
  batch->started.fetch_add(1);
  const std::size_t count = batch->sources->size();
  while (!batch->failed.load()) {
    const std::size_t i = batch->next.fetch_add(1);
    if (i >= count) break;
    const ImageSource& source = (*batch->sources)[i];
    std::string label = batch->labels[i];
    Result<InputImage> image = co_await self->load_labeled(source, std::move(label));
    if (!image) {
      if (!batch->failed.exchange(true)) batch->error = std::move(image.error());
      break;
    }
    batch->images[i] = std::move(*image);
  }
}

asio::awaitable<Result<InputImage>> ReferenceLoader::load_labeled(const ImageSource& source,
                                                                  std::string label) {
  const std::string& field = source.field;
  ImageSource::Kind kind = source.kind;
  if (kind == ImageSource::Kind::kBase64) {
    // The parser files whatever it does not recognise as base64; a scheme shows what was meant
    // ("HTTP://..." is fetched, "ftp://..." gets a clear refusal instead of "invalid base64").
    if (starts_with_icase(source.value, "data:")) {
      kind = ImageSource::Kind::kDataUrl;
    } else if (looks_like_url(source.value)) {
      kind = ImageSource::Kind::kUrl;
    }
  }
  Result<std::string> bytes;
  switch (kind) {
    case ImageSource::Kind::kUrl:
      bytes = co_await fetch(source.value, field, label);
      break;
    case ImageSource::Kind::kDataUrl:
      bytes = decode_data_url(source.value, field, label);
      break;
    case ImageSource::Kind::kBase64:
      bytes = decode_base64(source.value, field, label, !field.ends_with("base64"));
      break;
    case ImageSource::Kind::kUpload:
      bytes = source.value;  // the HTTP layer bounded the body; verify() applies the image cap
      break;
  }
  if (!bytes) co_return std::unexpected(std::move(bytes.error()));
  co_return verify(std::move(*bytes), field, label);
}

asio::awaitable<Result<std::string>> ReferenceLoader::fetch(const std::string& url,
                                                            const std::string& field,
                                                            const std::string& label) {
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed) co_return invalid(label + " is not a valid URL", field);
  const auto scheme = parsed->scheme_id();
  if (scheme != boost::urls::scheme::http && scheme != boost::urls::scheme::https) {
    co_return invalid(label + " must be an http or https URL", field);
  }
  if (!parsed->has_authority() || parsed->encoded_host().empty()) {
    co_return invalid(label + " is not a valid URL (no host)", field);
  }

  net::HttpRequest request;
  request.url = url;
  // Ask for what we accept, so content-negotiating servers do not answer with AVIF or the like.
  request.headers.emplace_back("Accept", "image/png, image/jpeg, image/webp");
  request.connect_timeout_ms = settings_.connect_timeout_ms;
  request.total_timeout_ms = settings_.total_timeout_ms;
  request.max_response_bytes = settings_.max_image_bytes;
  request.max_redirects = settings_.max_redirects;
  request.address_policy = settings_.address_policy;
  net::NetResult<net::HttpResponse> response = co_await client_.send(std::move(request));

  if (!response) {
    switch (response.error().code) {
      case net::NetErrc::kBlockedAddress:
        co_return invalid("refused to fetch " + label + ": address not allowed", field);
      case net::NetErrc::kTooLarge:
        co_return invalid(
            fmt::format("{} is larger than {} bytes", label, settings_.max_image_bytes), field);
      default:
        co_return invalid(fmt::format("could not fetch {}: {}", label,
                                      fetch_failure(response.error(), settings_)),
                          field);
    }
  }
  if (response->status < 200 || response->status > 299) {
    co_return invalid(
        fmt::format("could not fetch {}: the server returned HTTP {}", label, response->status),
        field);
  }
  co_return std::move(response->body);
}

Result<std::string> ReferenceLoader::decode_data_url(std::string_view url, const std::string& field,
                                                     const std::string& label) const {
  // data:[<mediatype>][;base64],<data>. The declared media type is ignored (the bytes decide);
  // only base64 payloads carry binary images reliably, so percent-encoded ones are refused.
  const std::size_t comma = url.find(',');
  if (!starts_with_icase(url, "data:") || comma == std::string_view::npos) {
    return invalid(label + " is not a valid data: URL (expected data:<type>;base64,<data>)", field);
  }
  const std::string_view meta = url.substr(5, comma - 5);
  if (meta.size() < 7 || !starts_with_icase(meta.substr(meta.size() - 7), ";base64")) {
    return invalid(label + " must be a base64 data: URL (data:<type>;base64,<data>)", field);
  }
  return decode_base64(url.substr(comma + 1), field, label);
}

Result<std::string> ReferenceLoader::decode_base64(std::string_view text, const std::string& field,
                                                   const std::string& label, bool bare) const {
  const std::size_t max = settings_.max_image_bytes;
  // Cheap check on the encoded length first: more than twice the encoded size of the largest
  // allowed image cannot be an allowed image, whatever line wrapping it uses.
  if (text.size() / 2 > base64_encoded_size(max) + 64) {
    return invalid(fmt::format("{} is larger than {} bytes", label, max), field);
  }
  Result<std::string> bytes = base64_decode(text, max);  // stops as soon as it passes `max`
  if (!bytes) {
    if (bytes.error().code == ErrorCode::kPayloadTooLarge) {
      return invalid(fmt::format("{} is larger than {} bytes", label, max), field);
    }
    if (bare)
      return invalid(label + " is not an http(s) URL, a data: URL or base64 image bytes", field);
    return invalid(label + ": " + bytes.error().message, field);
  }
  return bytes;
}

Result<InputImage> ReferenceLoader::verify(std::string bytes, const std::string& field,
                                           const std::string& label) const {
  if (bytes.size() > settings_.max_image_bytes) {  // uploads; the other kinds checked already
    return invalid(fmt::format("{} is larger than {} bytes", label, settings_.max_image_bytes),
                   field);
  }
  if (media::sniff_image_type(bytes) == media::ImageType::kUnsupported) {
    return invalid(label + " is not a PNG, JPEG or WebP image", field);
  }
  Result<media::ImageInfo> info = media::probe_image(bytes);
  if (!info) return invalid(label + ": " + info.error().message, field);
  Result<void> fits = media::check_dimensions(*info, settings_.probe_limits);
  if (!fits) return invalid(label + ": " + fits.error().message, field);
  InputImage image;
  image.bytes = std::move(bytes);
  image.mime = std::string(media::mime_type(info->type));
  image.width = info->width;
  image.height = info->height;
  return image;
}

}  // namespace ig::jobs
