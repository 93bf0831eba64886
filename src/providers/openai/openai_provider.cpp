#include "providers/openai/openai_provider.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>

#include "core/base64.h"
#include "core/text.h"
#include "media/image_probe.h"
#include "providers/openai/sse_parser.h"

namespace ig::providers {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;

using Outcome = std::expected<ImageResult, ProviderError>;

constexpr std::size_t kMaxMessageBytes = 500;
constexpr std::size_t kErrorHeadBytes = 64 << 10;  // body kept for error messages when streaming

std::unexpected<ProviderError> failure(FailureKind kind, std::string message, int status = 0) {
  return std::unexpected(ProviderError{kind, std::move(message), status});
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && to_lower_ascii(s.substr(0, prefix.size())) == prefix;
}

bool is_dalle(std::string_view upstream_model) { return starts_with_ci(upstream_model, "dall-e"); }

// Upstream text shown to clients and logs: valid UTF-8 stays readable (resellers answer in many
// languages) with control characters blanked and a cut on a character boundary; anything else
// goes through printable().
std::string clean_message(std::string_view text) {
  if (!is_valid_utf8(text)) return printable(text, kMaxMessageBytes);
  std::string out;
  std::size_t end = text.size();
  if (end > kMaxMessageBytes) {
    end = kMaxMessageBytes;
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  }
  out.reserve(end + 3);
  for (std::size_t i = 0; i < end; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    out += (c < 0x20 || c == 0x7f) ? ' ' : static_cast<char>(c);
  }
  if (end < text.size()) out += "...";
  return out;
}

// The human message of an error body: OpenAI's {"error":{"message"}}, or the shapes resellers
// use ({"error":"..."}, {"message":"..."}, {"msg":"..."}). Empty when there is none.
std::string error_message_of(std::string_view body) {
  boost::system::error_code ec;
  json::value doc = json::parse(body, ec);
  if (ec || !doc.is_object()) return {};
  const json::object& root = doc.get_object();
  if (const json::value* error = root.if_contains("error")) {
    if (const json::string* s = error->if_string()) return clean_message(*s);
    if (const json::object* o = error->if_object()) {
      if (const json::value* m = o->if_contains("message"); m && m->is_string()) {
        return clean_message(m->get_string());
      }
    }
  }
  for (std::string_view key : {"message", "msg"}) {
    if (const json::value* m = root.if_contains(key); m && m->is_string()) {
      return clean_message(m->get_string());
    }
  }
  return {};
}

ProviderError status_error(int status, std::string_view body) {
  const FailureKind kind = classify_status(status);
  const std::string upstream = error_message_of(body);
  const std::string code = "HTTP " + std::to_string(status);
  std::string message;
  if (status == 401 || status == 403) {
    message = "upstream rejected our credentials (" + code + ")";
  } else if (kind == FailureKind::kInvalidRequest) {
    // Passed on to the client as-is: it explains what to change (moderation, bad image...).
    message = upstream.empty() ? "the upstream rejected the request (" + code + ")" : upstream;
    return ProviderError{kind, std::move(message), status};
  } else {
    message = "upstream " + code;
  }
  if (!upstream.empty()) {
    message += ": " + upstream;
  } else if (!body.empty()) {
    message += ": " + printable(body, 200);
  }
  return ProviderError{kind, std::move(message), status};
}

ProviderError transport_error(const net::NetError& error) {
  // Another channel may take the job when the request certainly never reached this upstream,
  // or when no answer at all came before the timeout (REQUIREMENTS §6 fails over on timeouts;
  // the timed-out upstream may still render, and bill the operator for, the abandoned
  // request). A connection that broke after a status line, or before any answer, leaves the
  // upstream possibly rendering it: no failover.
  const bool unanswered_timeout = error.code == net::NetErrc::kTimeout && error.status == 0;
  const FailureKind kind =
      error.sent_nothing || unanswered_timeout ? FailureKind::kRetryable : FailureKind::kFailed;
  return ProviderError{kind,
                       "upstream " + std::string(net::to_string(error.code)) +
                           " error: " + printable(error.message, 300),
                       0};
}

// Strict standard base64 (core/base64.h: padding optional, whitespace skipped). A
// `data:...;base64,` prefix (some resellers) is stripped.
std::optional<std::string> decode_base64(std::string_view text) {
  if (starts_with_ci(text, "data:")) {
    const std::size_t comma = text.find(',');
    if (comma == std::string_view::npos) return std::nullopt;
    if (text.substr(0, comma).find(";base64") == std::string_view::npos) return std::nullopt;
    text.remove_prefix(comma + 1);
  }
  auto decoded = base64_decode(text);
  if (!decoded || decoded->empty()) return std::nullopt;
  return std::move(*decoded);
}

// Decoded, sniffed image bytes; the error text says what was wrong.
std::expected<OutputImage, std::string> to_output_image(std::string bytes) {
  auto info = media::probe_image(bytes);
  if (!info) return std::unexpected("not a PNG, JPEG or WebP image (" + info.error().message + ")");
  OutputImage image;
  image.mime = std::string(media::mime_type(info->type));
  image.width = info->width;
  image.height = info->height;
  image.bytes = std::move(bytes);
  return image;
}

// A token count: absent (nullopt), or a non-negative integer. Anything else (a negative, a
// fraction, a string) makes the whole usage unusable (kInvalid).
constexpr std::int64_t kInvalid = -1;
std::optional<std::int64_t> token_count(const json::object& object, std::string_view key) {
  const json::value* v = object.if_contains(key);
  if (v == nullptr || v->is_null()) return std::nullopt;
  if (const std::int64_t* i = v->if_int64()) return *i >= 0 ? *i : kInvalid;
  if (const std::uint64_t* u = v->if_uint64()) {
    return static_cast<std::int64_t>(std::min<std::uint64_t>(*u, INT64_MAX));
  }
  if (const double* d = v->if_double()) {
    if (std::isfinite(*d) && *d >= 0 && *d < 9e18 && *d == std::floor(*d)) {
      return static_cast<std::int64_t>(*d);
    }
  }
  return kInvalid;
}

// OpenAI `usage`: input_tokens, output_tokens, input_tokens_details.{text_tokens,image_tokens}
// (chat-style prompt_tokens / completion_tokens are read the same way). Without details every
// input token counts as text. A usage with no output count, or with a count that is not a
// non-negative integer, is unknown (nullopt): the job then settles at its reservation rather
// than at zero.
std::optional<ImageUsage> parse_usage(const json::object& root) {
  const json::value* v = root.if_contains("usage");
  if (v == nullptr || !v->is_object()) return std::nullopt;
  const json::object& usage = v->get_object();
  std::optional<std::int64_t> output = token_count(usage, "output_tokens");
  if (!output) output = token_count(usage, "completion_tokens");
  std::optional<std::int64_t> input = token_count(usage, "input_tokens");
  if (!input) input = token_count(usage, "prompt_tokens");
  if (!output || *output == kInvalid || (input && *input == kInvalid)) return std::nullopt;
  ImageUsage out;
  out.output_tokens = *output;
  out.input_text_tokens = input.value_or(0);
  const json::value* details = usage.if_contains("input_tokens_details");
  if (details != nullptr && details->is_object()) {
    const auto text = token_count(details->get_object(), "text_tokens");
    const auto image = token_count(details->get_object(), "image_tokens");
    if ((text && *text == kInvalid) || (image && *image == kInvalid)) return std::nullopt;
    if (text || image) {
      out.input_text_tokens = text.value_or(0);
      out.input_image_tokens = image.value_or(0);
    }
  }
  return out;
}

std::string_view string_field(const json::object& object, std::string_view key) {
  const json::value* v = object.if_contains(key);
  if (v == nullptr || !v->is_string()) return {};
  return v->get_string();
}

std::string_view file_extension(std::string_view mime) {
  if (mime == "image/jpeg") return "jpg";
  if (mime == "image/webp") return "webp";
  return "png";
}

// "scheme://host:port" with the default port filled in; "" when unparsable.

// --- streaming -------------------------------------------------------------------------------

using Doorbell = asio::experimental::concurrent_channel<void(boost::system::error_code)>;

// Shared between the body callback (HTTP client's strand), the coroutine running the send and
// the relaying coroutine. Everything but the doorbell (itself thread-safe) is under mutex_.
struct StreamState {
  explicit StreamState(asio::any_io_executor executor) : doorbell(std::move(executor), 1) {}

  // Body callback. A body starting with '{' is a plain JSON reply (an error status, or a
  // reseller that ignored "stream"): kept whole. Anything else is parsed as SSE.
  bool on_chunk(std::string_view chunk) {
    if (abandoned.load()) return false;
    {
      std::lock_guard lock(mutex);
      if (!mode_known) {
        const std::size_t first = chunk.find_first_not_of(" \t\r\n");
        if (first != std::string_view::npos) {
          mode_known = true;
          json_body = chunk[first] == '{';
        }
      }
      if (json_body || head.size() < kErrorHeadBytes) {
        const std::size_t room = json_body ? chunk.size() : kErrorHeadBytes - head.size();
        head.append(chunk.substr(0, room));
      }
      if (mode_known && !json_body) parser.feed(chunk, events);
    }
    ring();
    return true;
  }

  void finish(net::NetResult<net::HttpResponse> result) {
    {
      std::lock_guard lock(mutex);
      if (done) return;
      if (mode_known && !json_body) parser.finish(events);
      outcome = std::move(result);
      done = true;
    }
    ring();
  }

  void ring() {
    // A full doorbell already has a wake-up pending: the receiver drains everything anyway.
    doorbell.try_send(boost::system::error_code{});
  }

  std::mutex mutex;
  std::deque<SseEvent> events;
  SseParser parser;
  bool mode_known = false;
  bool json_body = false;
  std::string head;  // JSON mode: the whole body; SSE mode: its first kErrorHeadBytes
  bool done = false;
  std::optional<net::NetResult<net::HttpResponse>> outcome;
  std::atomic<bool> abandoned{false};  // the relaying coroutine is gone: abort the transfer
  asio::cancellation_signal cancel;    // bound to the send (executor thread only)
  Doorbell doorbell;
};

// When the relaying coroutine leaves (normally or by destruction): marks the stream abandoned
// and cancels the upstream transfer at once, whether or not more bytes come (an upstream may
// keep the response open after `data: [DONE]`). Same executor (one thread) as the send.
struct AbandonOnExit {
  std::shared_ptr<StreamState> state;
  ~AbandonOnExit() {
    state->abandoned.store(true);
    state->doorbell.close();
    state->cancel.emit(asio::cancellation_type::terminal);
  }
};

// Runs the HTTP exchange beside the relaying coroutine and reports its end to the state.
asio::awaitable<void> run_streamed_send(net::HttpClient& client, net::HttpRequest request,
                                        std::shared_ptr<StreamState> state) {
  net::NetResult<net::HttpResponse> result = co_await client.send(std::move(request));
  state->finish(std::move(result));
}

}  // namespace

std::string map_quality(std::string_view requested, std::string_view upstream_model) {
  const std::string q = to_lower_ascii(requested);
  if (is_dalle(upstream_model)) {
    if (q == "standard" || q == "hd") return q;
    if (q == "uhd" || q == "high") return "hd";
    return "";
  }
  if (q == "low" || q == "medium" || q == "high" || q == "auto") return q;
  // standard/hd/uhd name a size tier (already in width x height), not a rendering quality: the
  // job is priced at the model's default quality, so the upstream gets its default too.
  return "";
}

// 429, 5xx "try again" and 529 (overloaded) mean the upstream refused before accepting the
// work, and 401/403 mean this channel's credentials are wrong: in every case no image was
// rendered or billed, so another channel may serve it (the pipeline holds one reservation for
// the job, so the client is charged once whichever channel succeeds). 400/422 are the client's
// fault (moderation, unreadable image): another channel would refuse them too. Any other
// status is ambiguous: no failover.
FailureKind classify_status(int status) {
  switch (status) {
    case 429:
    case 500:
    case 502:
    case 503:
    case 504:
    case 529:
    case 401:
    case 403:
      return FailureKind::kRetryable;
    case 400:
    case 422:
      return FailureKind::kInvalidRequest;
    default:
      return FailureKind::kFailed;
  }
}

OpenAiProvider::OpenAiProvider(net::HttpClient& client, OpenAiChannelSettings settings)
    : client_(client), settings_(std::move(settings)) {
  while (!settings_.base_url.empty() && settings_.base_url.back() == '/') {
    settings_.base_url.pop_back();
  }
}

std::string OpenAiProvider::upstream_model(const std::string& model) const {
  auto it = settings_.model_map.find(model);
  return it == settings_.model_map.end() ? model : it->second;
}

net::HttpRequest OpenAiProvider::build_request(const ImageTask& task, bool stream) const {
  const std::string model = upstream_model(task.model);
  const bool dalle = is_dalle(model);

  // Every field as (name, JSON value); edits send the same set as form fields.
  std::vector<std::pair<std::string, json::value>> fields;
  fields.emplace_back("model", json::value(model));
  fields.emplace_back("prompt", json::value(task.prompt));
  fields.emplace_back("n", json::value(task.n));
  if (task.width > 0 && task.height > 0) {
    fields.emplace_back(
        "size", json::value(std::to_string(task.width) + "x" + std::to_string(task.height)));
  }
  if (std::string quality = map_quality(task.quality, model); !quality.empty()) {
    fields.emplace_back("quality", json::value(quality));
  }
  if (!dalle) {  // dall-e models reject the gpt-image parameters
    if (!task.background.empty() && task.background != "auto") {
      fields.emplace_back("background", json::value(task.background));
    }
    if (!task.output_format.empty()) {
      fields.emplace_back("output_format", json::value(task.output_format));
    }
    if (task.output_compression && (task.output_format == "jpeg" || task.output_format == "webp")) {
      fields.emplace_back("output_compression", json::value(*task.output_compression));
    }
    if (!task.moderation.empty() && !task.edit) {  // images.edit has no moderation field
      fields.emplace_back("moderation", json::value(task.moderation));
    }
  } else {
    // dall-e defaults to url replies; gpt-image models always answer b64_json and reject the
    // field.
    fields.emplace_back("response_format", json::value("b64_json"));
  }
  if (!task.user.empty()) fields.emplace_back("user", json::value(task.user));
  if (stream) {
    fields.emplace_back("stream", json::value(true));
    fields.emplace_back("partial_images", json::value(task.partial_images));
  }

  net::HttpRequest request;
  request.method = "POST";
  request.url = settings_.base_url + (task.edit ? "/images/edits" : "/images/generations");
  request.headers.emplace_back("Authorization", "Bearer " + settings_.api_key);
  if (task.edit) {
    for (auto& [name, value] : fields) {
      net::MimeField field;
      field.name = name;
      if (const json::string* s = value.if_string()) {
        field.value = std::string(*s);
      } else {
        field.value = json::serialize(value);  // numbers, true
      }
      request.mime.push_back(std::move(field));
    }
    const char* image_field = dalle ? "image" : "image[]";
    for (std::size_t i = 0; i < task.images.size(); ++i) {
      const InputImage& image = task.images[i];
      net::MimeField part;
      part.name = image_field;
      part.value = image.bytes;
      part.content_type = image.mime.empty() ? "image/png" : image.mime;
      part.filename =
          "image_" + std::to_string(i + 1) + "." + std::string(file_extension(part.content_type));
      request.mime.push_back(std::move(part));
    }
    if (task.mask) {
      net::MimeField part;
      part.name = "mask";
      part.value = task.mask->bytes;
      part.content_type = task.mask->mime.empty() ? "image/png" : task.mask->mime;
      part.filename = "mask." + std::string(file_extension(part.content_type));
      request.mime.push_back(std::move(part));
    }
  } else {
    json::object body;
    for (auto& [name, value] : fields) body[name] = std::move(value);
    request.headers.emplace_back("Content-Type", "application/json");
    request.body = json::serialize(body);
  }
  for (const auto& header : settings_.extra_headers) request.headers.push_back(header);
  request.connect_timeout_ms = settings_.connect_timeout_ms;
  request.total_timeout_ms = settings_.timeout_ms;
  request.proxy = settings_.proxy;
  request.max_response_bytes = settings_.max_response_bytes;
  request.address_policy = settings_.address_policy;
  return request;
}

asio::awaitable<std::expected<std::string, ProviderError>> OpenAiProvider::download(
    const std::string& url) {
  if (starts_with_ci(url, "data:")) {
    std::optional<std::string> bytes = decode_base64(url);
    if (!bytes) co_return failure(FailureKind::kFailed, "upstream returned a malformed data URL");
    co_return std::move(*bytes);
  }
  if (!starts_with_ci(url, "https://") && !starts_with_ci(url, "http://")) {
    co_return failure(FailureKind::kFailed,
                      "upstream returned an unusable image url: " + printable(url, 200));
  }
  net::HttpRequest request = net::upstream_file_request(url, settings_.base_url,
                                                        settings_.address_policy);
  request.connect_timeout_ms = settings_.connect_timeout_ms;
  request.total_timeout_ms = settings_.timeout_ms;
  request.proxy = settings_.proxy;
  request.max_response_bytes = settings_.max_response_bytes;
  net::NetResult<net::HttpResponse> response = co_await client_.send(std::move(request));
  // The image was already rendered (and billed) upstream: every failure here is kFailed.
  if (!response) {
    co_return failure(FailureKind::kFailed, "downloading the upstream image failed: " +
                                                std::string(net::to_string(response.error().code)) +
                                                ": " + printable(response.error().message, 200));
  }
  if (response->status < 200 || response->status > 299) {
    co_return failure(FailureKind::kFailed, "downloading the upstream image failed: HTTP " +
                                                std::to_string(response->status));
  }
  co_return std::move(response->body);
}

asio::awaitable<Outcome> OpenAiProvider::parse_reply(std::string& body, int status) {
  boost::system::error_code ec;
  json::value doc = json::parse(body, ec);
  if (ec || !doc.is_object()) {
    co_return failure(FailureKind::kFailed,
                      "upstream returned a non-JSON reply: " + printable(body, 200), status);
  }
  json::object& root = doc.get_object();
  json::value* data = root.if_contains("data");
  if (data == nullptr || !data->is_array() || data->get_array().empty()) {
    std::string why = error_message_of(body);
    co_return failure(FailureKind::kFailed,
                      why.empty() ? "upstream reply has no images" : "upstream reply: " + why,
                      status);
  }
  std::string().swap(body);  // parsed: the raw reply is no longer needed
  ImageResult result;
  result.usage = parse_usage(root);
  for (json::value& item : data->get_array()) {
    if (!item.is_object()) {
      co_return failure(FailureKind::kFailed, "upstream reply has a malformed image", status);
    }
    json::object& entry = item.get_object();
    std::string bytes;
    if (std::string_view b64 = string_field(entry, "b64_json"); !b64.empty()) {
      std::optional<std::string> decoded = decode_base64(b64);
      if (!decoded) {
        co_return failure(FailureKind::kFailed, "upstream image is not valid base64", status);
      }
      entry.erase("b64_json");  // decoded: drop the base64 text before the next image
      bytes = std::move(*decoded);
    } else if (std::string_view url = string_field(entry, "url"); !url.empty()) {
      const std::string link(url);
      std::expected<std::string, ProviderError> fetched = co_await download(link);
      if (!fetched) co_return std::unexpected(fetched.error());
      bytes = std::move(*fetched);
    } else {
      co_return failure(FailureKind::kFailed, "upstream image has neither b64_json nor url",
                        status);
    }
    std::expected<OutputImage, std::string> image = to_output_image(std::move(bytes));
    if (!image) {
      co_return failure(FailureKind::kFailed, "upstream image: " + image.error(), status);
    }
    if (std::string_view revised = string_field(entry, "revised_prompt"); !revised.empty()) {
      image->revised_prompt = std::string(revised);
    }
    result.images.push_back(std::move(*image));
  }
  co_return result;
}

asio::awaitable<Outcome> OpenAiProvider::generate(const ImageTask& task, PartialSink* partials) {
  Outcome outcome = failure(FailureKind::kFailed, "internal error in the OpenAI adapter");
  try {
    if (task.partial_images > 0 && partials != nullptr) {
      outcome = co_await generate_streamed(task, *partials);
    } else {
      net::HttpRequest request = build_request(task, false);
      net::NetResult<net::HttpResponse> response = co_await client_.send(std::move(request));
      if (!response) {
        outcome = std::unexpected(transport_error(response.error()));
      } else if (response->status < 200 || response->status > 299) {
        outcome = std::unexpected(status_error(response->status, response->body));
      } else {
        outcome = co_await parse_reply(response->body, response->status);
      }
    }
  } catch (const std::exception& e) {
    // Errors are values: nothing escapes. The request may have reached the upstream.
    outcome = failure(FailureKind::kFailed,
                      "internal error in the OpenAI adapter: " + printable(e.what(), 200));
  }
  if (!outcome &&
      (outcome.error().upstream_status == 401 || outcome.error().upstream_status == 403)) {
    spdlog::warn("channel {}: {}", settings_.name, outcome.error().message);
  }
  co_return outcome;
}

// Live relay: the send runs as its own coroutine (co_spawn on our executor). Its body callback,
// on the HTTP client's strand, only splits SSE events into StreamState's mutex-protected queue
// and rings a concurrent_channel doorbell. This coroutine waits on the doorbell, drains the
// queue, parses each event's JSON and awaits the sink for each partial image, so the sink runs
// on the caller's executor while the upstream keeps streaming. When the send completes we
// drain the rest and judge the status: a non-2xx status maps like a plain request (its body is
// the error JSON), a 2xx with a plain JSON body (a reseller that ignored "stream") is parsed as a
// normal reply, and an SSE body must have carried a `*.completed` event.
asio::awaitable<Outcome> OpenAiProvider::generate_streamed(const ImageTask& task,
                                                           PartialSink& partials) {
  asio::any_io_executor executor = co_await asio::this_coro::executor;
  auto state = std::make_shared<StreamState>(executor);
  AbandonOnExit guard{state};

  net::HttpRequest request = build_request(task, true);
  // Weak: the state lives as long as the send runs (run_streamed_send owns it), and a client
  // (or a fake) that keeps the request afterwards must not keep the state and its executor.
  std::weak_ptr<StreamState> weak = state;
  request.on_body_chunk = [weak](std::string_view chunk) {
    std::shared_ptr<StreamState> alive = weak.lock();
    return alive != nullptr && alive->on_chunk(chunk);
  };
  auto on_end = [state](std::exception_ptr error) {
    if (error) {
      state->finish(std::unexpected(net::NetError{net::NetErrc::kOther, "send failed", false}));
    }
  };
  asio::co_spawn(executor, run_streamed_send(client_, std::move(request), state),
                 asio::bind_cancellation_slot(state->cancel.slot(), on_end));

  static constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);
  ImageResult result;
  int next_index = 0;
  std::optional<ProviderError> stream_error;
  bool saw_done = false;
  while (true) {
    std::deque<SseEvent> events;
    bool done = false;
    {
      std::lock_guard lock(state->mutex);
      events.swap(state->events);
      done = state->done;
    }
    for (SseEvent& event : events) {
      if (event.data == "[DONE]") saw_done = true;
      if (stream_error || saw_done) continue;
      boost::system::error_code ec;
      json::value doc = json::parse(event.data, ec);
      if (ec || !doc.is_object()) continue;  // unknown noise between events
      const json::object& payload = doc.get_object();
      std::string type(string_field(payload, "type"));
      if (type.empty()) type = event.name;
      const auto ends_with = [&type](std::string_view suffix) {
        return type.size() >= suffix.size() &&
               type.compare(type.size() - suffix.size(), suffix.size(), suffix) == 0;
      };
      if (type == "error" || ends_with(".failed")) {
        std::string message = error_message_of(event.data);
        const json::value* err = payload.if_contains("error");
        const bool client_fault =
            err != nullptr && err->is_object() &&
            string_field(err->get_object(), "type") == "invalid_request_error";
        stream_error =
            ProviderError{client_fault ? FailureKind::kInvalidRequest : FailureKind::kFailed,
                          message.empty() ? std::string("upstream stream failed") : message, 0};
        continue;
      }
      const bool partial = ends_with(".partial_image");
      const bool completed = ends_with(".completed");
      if (!partial && !completed) continue;
      std::optional<std::string> bytes = decode_base64(string_field(payload, "b64_json"));
      std::expected<OutputImage, std::string> image =
          bytes ? to_output_image(std::move(*bytes))
                : std::expected<OutputImage, std::string>(std::unexpect, "not valid base64");
      if (partial) {
        if (!image) continue;  // a broken preview is not worth failing the job
        int index = next_index;
        if (const json::value* v = payload.if_contains("partial_image_index")) {
          if (const std::int64_t* i = v->if_int64(); i && *i >= 0 && *i < 1000) {
            index = static_cast<int>(*i);
          }
        }
        next_index = index + 1;
        const OutputImage& preview = *image;
        co_await partials.partial(index, preview);
        continue;
      }
      if (!image) {
        stream_error = ProviderError{FailureKind::kFailed, "upstream image: " + image.error(), 0};
        continue;
      }
      if (std::string_view revised = string_field(payload, "revised_prompt"); !revised.empty()) {
        image->revised_prompt = std::string(revised);
      }
      result.images.push_back(std::move(*image));
      // With several completed events (n > 1) the last usage wins: OpenAI reports it per reply.
      if (std::optional<ImageUsage> usage = parse_usage(payload)) result.usage = usage;
    }
    // `data: [DONE]` ends the stream whether or not the upstream then closes the response:
    // returning ends the transfer (AbandonOnExit).
    if (saw_done && !stream_error && !result.images.empty()) co_return result;
    if (done) break;
    std::tuple<boost::system::error_code> rung = co_await state->doorbell.async_receive(kNoThrow);
    if (std::get<0>(rung)) {
      co_return failure(FailureKind::kFailed, "streamed generation was cancelled");
    }
  }

  net::NetResult<net::HttpResponse> response =
      std::unexpected(net::NetError{net::NetErrc::kOther, "no outcome", false});
  std::string body;
  bool json_body = false;
  {
    std::lock_guard lock(state->mutex);
    response = std::move(*state->outcome);
    body = std::move(state->head);
    json_body = state->json_body;
  }
  if (!response) {
    // Every completed image arrived before the connection broke: the upstream did the work
    // and delivered it, so the job has it. Fewer than n is a broken stream.
    const auto wanted = static_cast<std::size_t>(std::max(task.n, 1));
    if (!json_body && !stream_error && result.images.size() >= wanted) co_return result;
    co_return std::unexpected(transport_error(response.error()));
  }
  if (response->status < 200 || response->status > 299) {
    co_return std::unexpected(status_error(response->status, body));
  }
  if (json_body) {
    Outcome plain = co_await parse_reply(body, response->status);
    co_return plain;
  }
  if (stream_error) {
    stream_error->upstream_status = response->status;
    co_return std::unexpected(*stream_error);
  }
  if (result.images.empty()) {
    co_return failure(FailureKind::kFailed,
                      "upstream stream ended without a completed image: " + printable(body, 200),
                      response->status);
  }
  co_return result;
}

}  // namespace ig::providers
