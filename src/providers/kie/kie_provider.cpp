#include "providers/kie/kie_provider.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <exception>
#include <memory>
#include <numeric>
#include <tuple>
#include <utility>
#include <vector>

#include "core/text.h"
#include "media/image_probe.h"

namespace ig::providers {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;

constexpr std::size_t kMaxMessageBytes = 500;
constexpr std::size_t kMaxApiReplyBytes = 4 << 20;  // recordInfo echoes the request (prompt)
constexpr std::size_t kMaxTaskIdBytes = 256;
constexpr int kDownloadAttempts = 3;
constexpr std::int64_t kMaxDownloadRetryWaitMs = 1000;

struct Ratio {
  int w;
  int h;
};
constexpr std::array<Ratio, 10> kRatios = {
    {{1, 1}, {2, 3}, {3, 2}, {3, 4}, {4, 3}, {4, 5}, {5, 4}, {9, 16}, {16, 9}, {21, 9}}};

std::unexpected<ProviderError> failure(FailureKind kind, std::string message, int status = 0) {
  return std::unexpected(ProviderError{kind, std::move(message), status});
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && to_lower_ascii(s.substr(0, prefix.size())) == prefix;
}

// Upstream text for clients and logs: valid UTF-8 stays readable (Kie answers in several
// languages) with control characters blanked and a cut on a character boundary; anything else
// goes through printable().
std::string clean_message(std::string_view text) {
  if (!is_valid_utf8(text)) return printable(text, kMaxMessageBytes);
  std::size_t end = text.size();
  if (end > kMaxMessageBytes) {
    end = kMaxMessageBytes;
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  }
  std::string out;
  out.reserve(end + 3);
  for (std::size_t i = 0; i < end; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    out += (c < 0x20 || c == 0x7f) ? ' ' : static_cast<char>(c);
  }
  if (end < text.size()) out += "...";
  return out;
}

// A number field that Kie sends as a JSON number or a numeric string ("code", "failCode").
std::optional<std::int64_t> int_field(const json::object& object, std::string_view key) {
  const json::value* v = object.if_contains(key);
  if (v == nullptr) return std::nullopt;
  if (const std::int64_t* i = v->if_int64()) return *i;
  if (const std::uint64_t* u = v->if_uint64()) {
    if (*u <= static_cast<std::uint64_t>(INT64_MAX)) return static_cast<std::int64_t>(*u);
    return std::nullopt;
  }
  if (const double* d = v->if_double()) {
    if (std::isfinite(*d) && std::trunc(*d) == *d && std::fabs(*d) < 1e15) {
      return static_cast<std::int64_t>(*d);
    }
    return std::nullopt;
  }
  if (const json::string* s = v->if_string()) {
    if (s->empty() || s->size() > 15) return std::nullopt;
    std::int64_t out = 0;
    for (char c : *s) {
      if (c < '0' || c > '9') return std::nullopt;
      out = out * 10 + (c - '0');
    }
    return out;
  }
  return std::nullopt;
}

std::string_view string_field(const json::object& object, std::string_view key) {
  const json::value* v = object.if_contains(key);
  if (v == nullptr || !v->is_string()) return {};
  return v->get_string();
}

// A field rendered for a message whatever its JSON type ("" when absent or null).
std::string any_field_text(const json::object& object, std::string_view key) {
  const json::value* v = object.if_contains(key);
  if (v == nullptr || v->is_null()) return {};
  if (const json::string* s = v->if_string()) return clean_message(*s);
  return clean_message(json::serialize(*v));
}

std::string url_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0x0f];
    }
  }
  return out;
}

// A positive integer of at most 6 digits, else 0.
int small_positive(std::string_view digits) {
  if (digits.empty() || digits.size() > 6) return 0;
  int out = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return 0;
    out = out * 10 + (c - '0');
  }
  return out;
}

// HTTP status of a createTask reply (not 2xx): did the upstream refuse before accepting work?
FailureKind classify_create_status(int status) {
  if (status == 429 || (status >= 500 && status <= 599) || status == 401 || status == 402 ||
      status == 403) {
    return FailureKind::kRetryable;
  }
  if (status == 400 || status == 422) return FailureKind::kInvalidRequest;
  return FailureKind::kFailed;  // unknown: the upstream may have accepted the work
}

// Kie's in-body `code` of an HTTP 200 createTask reply (not 200).
FailureKind classify_create_code(std::int64_t code) {
  if (code == 429 || code >= 500 || code == 401 || code == 402 || code == 403) {
    return FailureKind::kRetryable;
  }
  if (code >= 400 && code <= 499) return FailureKind::kInvalidRequest;
  return FailureKind::kFailed;
}

// A fail state's message that reads like a moderation refusal: the client's prompt or image.
bool looks_like_policy_refusal(std::string_view fail_msg) {
  const std::string lower = to_lower_ascii(fail_msg);
  for (std::string_view needle :
       {"content policy", "policy violation", "violates", "violation", "nsfw", "sensitive",
        "moderation", "safety system", "prohibited", "inappropriate"}) {
    if (lower.find(needle) != std::string::npos) return true;
  }
  return false;
}

// resultJson -> resultUrls. resultJson is a JSON *string* holding an object; an object is
// accepted too. The error says what was wrong.
std::expected<std::vector<std::string>, std::string> parse_result_urls(const json::object& data) {
  const json::value* raw = data.if_contains("resultJson");
  if (raw == nullptr) return std::unexpected("the success record has no resultJson");
  json::value parsed;
  const json::object* result = raw->if_object();
  if (const json::string* s = raw->if_string()) {
    boost::system::error_code ec;
    parsed = json::parse(*s, ec);
    if (ec || !parsed.is_object()) {
      return std::unexpected("resultJson is not a JSON object: " + printable(*s, 200));
    }
    result = &parsed.get_object();
  }
  if (result == nullptr) return std::unexpected("resultJson is neither a string nor an object");
  const json::value* urls = result->if_contains("resultUrls");
  if (urls == nullptr || !urls->is_array() || urls->get_array().empty()) {
    return std::unexpected("resultJson has no resultUrls");
  }
  std::vector<std::string> out;
  for (const json::value& url : urls->get_array()) {
    if (!url.is_string() || url.get_string().empty()) {
      return std::unexpected("resultUrls holds a non-string entry");
    }
    out.emplace_back(url.get_string());
  }
  return out;
}

}  // namespace

std::string kie_aspect_ratio(int width, int height, std::string_view size_label) {
  int w = width;
  int h = height;
  if (const std::size_t colon = size_label.find(':'); colon != std::string_view::npos) {
    const int lw = small_positive(size_label.substr(0, colon));
    const int lh = small_positive(size_label.substr(colon + 1));
    if (lw > 0 && lh > 0) {
      w = lw;
      h = lh;
    }
  }
  if (w <= 0 || h <= 0) return "1:1";
  const int g = std::gcd(w, h);
  w /= g;
  h /= g;
  const double target = std::log(static_cast<double>(w) / h);
  const Ratio* best = &kRatios[0];
  double best_distance = INFINITY;
  for (const Ratio& r : kRatios) {
    if (r.w == w && r.h == h) {
      best = &r;
      break;
    }
    const double distance = std::fabs(std::log(static_cast<double>(r.w) / r.h) - target);
    if (distance < best_distance) {
      best_distance = distance;
      best = &r;
    }
  }
  return std::to_string(best->w) + ":" + std::to_string(best->h);
}

std::string kie_resolution(int width, int height) {
  const int long_edge = std::max(width, height);
  if (long_edge <= 1536) return "1K";
  if (long_edge <= 2048) return "2K";
  return "4K";
}

KieProvider::KieProvider(net::HttpClient& client, UpstreamWakeups& wakeups,
                         KieChannelSettings settings, const Clock& clock)
    : client_(client), wakeups_(wakeups), settings_(std::move(settings)), clock_(clock) {
  while (!settings_.base_url.empty() && settings_.base_url.back() == '/') {
    settings_.base_url.pop_back();
  }
  settings_.poll_interval_ms = std::max(settings_.poll_interval_ms, 1);
}

std::string KieProvider::upstream_model(const std::string& model, bool image_to_image) const {
  const auto& map =
      image_to_image ? settings_.image_to_image_models : settings_.text_to_image_models;
  if (auto it = map.find(model); it != map.end()) return it->second;
  if (model == "gpt-image-2") {
    return image_to_image ? "gpt-image-2-image-to-image" : "gpt-image-2-text-to-image";
  }
  return model;
}

std::expected<net::HttpRequest, ProviderError> KieProvider::build_create_request(
    const ImageTask& task) const {
  const bool image_to_image = task.edit || !task.images.empty() || !task.image_urls.empty();
  if (image_to_image && task.image_urls.empty()) {
    return failure(FailureKind::kFailed, "reference images have no public URL for this upstream");
  }

  json::object input;
  input["prompt"] = task.prompt;
  input["aspect_ratio"] = kie_aspect_ratio(task.width, task.height, task.size_label);
  input["resolution"] = kie_resolution(task.width, task.height);
  if (image_to_image) {
    json::array urls;
    for (const std::string& url : task.image_urls) urls.emplace_back(url);
    input["input_urls"] = std::move(urls);
  }
  input["n"] = task.n;
  if (!task.output_format.empty()) input["output_format"] = task.output_format;

  json::object body;
  body["model"] = upstream_model(task.model, image_to_image);
  if (settings_.callback_url_for) {
    if (std::string callback = settings_.callback_url_for(task.job_id); !callback.empty()) {
      body["callBackUrl"] = std::move(callback);
    }
  }
  body["input"] = std::move(input);

  net::HttpRequest request;
  request.method = "POST";
  request.url = settings_.base_url + "/api/v1/jobs/createTask";
  request.headers.emplace_back("Authorization", "Bearer " + settings_.api_key);
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = json::serialize(body);
  request.connect_timeout_ms = settings_.connect_timeout_ms;
  request.total_timeout_ms = settings_.request_timeout_ms;
  request.proxy = settings_.proxy;
  request.max_response_bytes = kMaxApiReplyBytes;
  request.address_policy = settings_.address_policy;
  return request;
}

asio::awaitable<std::expected<std::string, ProviderError>> KieProvider::create_task(
    const ImageTask& task) {
  std::expected<net::HttpRequest, ProviderError> built = build_create_request(task);
  if (!built) co_return std::unexpected(built.error());
  net::HttpRequest request = std::move(*built);
  net::NetResult<net::HttpResponse> response = co_await client_.send(std::move(request));

  if (!response) {
    const net::NetError& error = response.error();
    // Only a request that certainly never reached the upstream may go to another channel.
    const bool nothing_sent = error.sent_nothing || error.code == net::NetErrc::kConnect;
    std::string message = "createTask: upstream " + std::string(net::to_string(error.code)) +
                          " error: " + printable(error.message, 300);
    if (!nothing_sent) message += " (the upstream may have accepted the task)";
    co_return failure(nothing_sent ? FailureKind::kRetryable : FailureKind::kFailed,
                      std::move(message));
  }

  const int status = response->status;
  boost::system::error_code ec;
  json::value doc = json::parse(response->body, ec);
  const json::object* root = (!ec && doc.is_object()) ? &doc.get_object() : nullptr;
  const std::string upstream_msg = root ? clean_message(string_field(*root, "msg")) : "";

  if (status < 200 || status > 299) {
    const FailureKind kind = classify_create_status(status);
    if (status == 401 || status == 402 || status == 403) {
      spdlog::warn("channel {}: createTask refused with HTTP {}: {}", settings_.name, status,
                   upstream_msg);
    }
    if (kind == FailureKind::kInvalidRequest && !upstream_msg.empty()) {
      co_return failure(kind, upstream_msg, status);
    }
    std::string message = "createTask: upstream HTTP " + std::to_string(status);
    if (!upstream_msg.empty()) {
      message += ": " + upstream_msg;
    } else if (!response->body.empty()) {
      message += ": " + printable(response->body, 200);
    }
    co_return failure(kind, std::move(message), status);
  }

  // HTTP 2xx: the body decides. Anything we cannot read may hide an accepted task.
  if (root == nullptr) {
    co_return failure(
        FailureKind::kFailed,
        "createTask: upstream returned a non-JSON reply: " + printable(response->body, 200),
        status);
  }
  const std::optional<std::int64_t> code = int_field(*root, "code");
  if (!code) {
    co_return failure(FailureKind::kFailed,
                      "createTask: upstream reply has no code: " + printable(response->body, 200),
                      status);
  }
  if (*code != 200) {
    const FailureKind kind = classify_create_code(*code);
    if (*code == 401 || *code == 402 || *code == 403) {
      spdlog::warn("channel {}: createTask refused with code {}: {}", settings_.name, *code,
                   upstream_msg);
    }
    if (kind == FailureKind::kInvalidRequest) {
      co_return failure(kind,
                        upstream_msg.empty() ? "the upstream rejected the request (code " +
                                                   std::to_string(*code) + ")"
                                             : upstream_msg,
                        status);
    }
    co_return failure(kind,
                      "createTask: upstream code " + std::to_string(*code) +
                          (upstream_msg.empty() ? "" : ": " + upstream_msg),
                      status);
  }
  const json::value* data = root->if_contains("data");
  std::string_view task_id =
      data != nullptr && data->is_object() ? string_field(data->get_object(), "taskId") : "";
  if (task_id.empty() || task_id.size() > kMaxTaskIdBytes) {
    co_return failure(
        FailureKind::kFailed,
        "createTask: upstream accepted without a usable taskId: " + printable(response->body, 200),
        status);
  }
  co_return std::string(task_id);
}

asio::awaitable<std::expected<OutputImage, ProviderError>> KieProvider::download(
    const std::string& url, std::int64_t give_up_at_ms) {
  static constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);
  if (!starts_with_ci(url, "https://") && !starts_with_ci(url, "http://")) {
    co_return failure(FailureKind::kFailed,
                      "upstream returned an unusable result url: " + printable(url, 200));
  }
  std::string problem;
  for (int attempt = 1; attempt <= kDownloadAttempts; ++attempt) {
    if (attempt > 1) {
      const std::int64_t left = give_up_at_ms - clock_.now_ms();
      if (left <= 0) break;
      const std::int64_t pause = std::min<std::int64_t>(
          {static_cast<std::int64_t>(settings_.poll_interval_ms), kMaxDownloadRetryWaitMs, left});
      asio::any_io_executor executor = co_await asio::this_coro::executor;
      asio::steady_timer timer(executor);
      timer.expires_after(std::chrono::milliseconds(pause));
      co_await timer.async_wait(kNoThrow);
    }
    net::HttpRequest request = net::upstream_file_request(url, settings_.base_url,
                                                          settings_.address_policy);
    request.connect_timeout_ms = settings_.connect_timeout_ms;
    request.total_timeout_ms = settings_.request_timeout_ms;
    request.proxy = settings_.proxy;
    request.max_response_bytes = settings_.max_result_bytes;
    net::NetResult<net::HttpResponse> response = co_await client_.send(std::move(request));
    if (!response) {
      problem = std::string(net::to_string(response.error().code)) + ": " +
                printable(response.error().message, 200);
      if (response.error().code == net::NetErrc::kTooLarge ||
          response.error().code == net::NetErrc::kBlockedAddress ||
          response.error().code == net::NetErrc::kBadUrl) {
        break;  // will not change on a retry
      }
      continue;
    }
    const int status = response->status;
    if (status == 429 || status >= 500) {
      problem = "HTTP " + std::to_string(status);
      continue;
    }
    if (status < 200 || status > 299) {
      co_return failure(FailureKind::kFailed,
                        "downloading the upstream result failed: HTTP " + std::to_string(status),
                        status);
    }
    Result<media::ImageInfo> info = media::probe_image(response->body);
    if (!info) {
      co_return failure(FailureKind::kFailed, "upstream result is not a PNG, JPEG or WebP image (" +
                                                  info.error().message + ")");
    }
    if (Result<void> size = media::check_dimensions(*info); !size) {
      co_return failure(FailureKind::kFailed, "upstream result: " + size.error().message);
    }
    OutputImage image;
    image.mime = std::string(media::mime_type(info->type));
    image.width = info->width;
    image.height = info->height;
    image.bytes = std::move(response->body);
    co_return image;
  }
  co_return failure(FailureKind::kFailed, "downloading the upstream result failed: " + problem);
}

asio::awaitable<KieProvider::Outcome> KieProvider::wait_for_result(
    const ImageTask& task, const std::string& upstream_task_id, UpstreamWakeups::Waiter& waiter,
    std::int64_t give_up_at_ms, bool poll_first) {
  const std::string poll_url =
      settings_.base_url + "/api/v1/jobs/recordInfo?taskId=" + url_encode(upstream_task_id);
  std::string last_state = "unknown";
  std::string last_problem;
  bool wait_first = !poll_first;
  while (true) {
    if (wait_first) {
      const std::int64_t left = give_up_at_ms - clock_.now_ms();
      if (left <= 0) break;
      const std::int64_t pause = std::min<std::int64_t>(settings_.poll_interval_ms, left);
      const bool woken = co_await waiter.wait_for(std::chrono::milliseconds(pause));
      if (woken) {
        spdlog::debug("channel {}: job {} woken by the upstream callback", settings_.name,
                      task.job_id);
      }
    }
    wait_first = true;

    net::HttpRequest request;
    request.method = "GET";
    request.url = poll_url;
    request.headers.emplace_back("Authorization", "Bearer " + settings_.api_key);
    request.connect_timeout_ms = settings_.connect_timeout_ms;
    request.total_timeout_ms = settings_.request_timeout_ms;
    request.proxy = settings_.proxy;
    request.max_response_bytes = kMaxApiReplyBytes;
    request.address_policy = settings_.address_policy;
    net::NetResult<net::HttpResponse> response = co_await client_.send(std::move(request));

    // Anything short of a final state is transient: keep polling until the deadline.
    if (!response) {
      last_problem = std::string(net::to_string(response.error().code)) + ": " +
                     printable(response.error().message, 200);
      spdlog::debug("channel {}: polling task {} failed: {}", settings_.name, upstream_task_id,
                    last_problem);
      continue;
    }
    if (response->status < 200 || response->status > 299) {
      last_problem = "HTTP " + std::to_string(response->status);
      spdlog::debug("channel {}: polling task {}: {}", settings_.name, upstream_task_id,
                    last_problem);
      continue;
    }
    boost::system::error_code ec;
    json::value doc = json::parse(response->body, ec);
    if (ec || !doc.is_object()) {
      last_problem = "non-JSON reply: " + printable(response->body, 100);
      spdlog::debug("channel {}: polling task {}: {}", settings_.name, upstream_task_id,
                    last_problem);
      continue;
    }
    const json::object& root = doc.get_object();
    const std::optional<std::int64_t> code = int_field(root, "code");
    const json::value* data_value = root.if_contains("data");
    if (!code || *code != 200 || data_value == nullptr || !data_value->is_object()) {
      last_problem = "code " + (code ? std::to_string(*code) : std::string("?")) + ": " +
                     clean_message(string_field(root, "msg"));
      spdlog::debug("channel {}: polling task {}: {}", settings_.name, upstream_task_id,
                    last_problem);
      continue;
    }
    const json::object& data = data_value->get_object();
    const std::string state = to_lower_ascii(string_field(data, "state"));
    last_problem.clear();

    if (state == "success") {
      std::expected<std::vector<std::string>, std::string> urls = parse_result_urls(data);
      if (!urls) {
        co_return failure(FailureKind::kFailed, "upstream task " + printable(upstream_task_id, 64) +
                                                    " succeeded but " + urls.error());
      }
      // The job was priced for task.n images: more are not downloaded.
      if (task.n > 0 && urls->size() > static_cast<std::size_t>(task.n)) {
        urls->resize(static_cast<std::size_t>(task.n));
      }
      ImageResult result;
      for (const std::string& url : *urls) {
        std::expected<OutputImage, ProviderError> image = co_await download(url, give_up_at_ms);
        if (!image) co_return std::unexpected(image.error());
        result.images.push_back(std::move(*image));
      }
      co_return result;
    }
    if (state == "fail") {
      const std::string fail_code = any_field_text(data, "failCode");
      const std::string fail_msg = any_field_text(data, "failMsg");
      if (looks_like_policy_refusal(fail_msg)) {
        co_return failure(FailureKind::kInvalidRequest, fail_msg);
      }
      std::string message = "upstream task failed";
      if (!fail_code.empty()) message += " (failCode " + fail_code + ")";
      if (!fail_msg.empty()) message += ": " + fail_msg;
      co_return failure(FailureKind::kFailed, std::move(message));
    }
    // waiting / queuing / generating (or a state we do not know): not final yet.
    last_state = state.empty() ? "?" : printable(state, 32);
  }

  const bool job_deadline = task.deadline_ms > 0 && give_up_at_ms == task.deadline_ms;
  const std::int64_t limit = settings_.timeout_ms;
  const std::string limit_text =
      limit % 1000 == 0 ? std::to_string(limit / 1000) + " s" : std::to_string(limit) + " ms";
  std::string message = "upstream task " + printable(upstream_task_id, 64) +
                        (job_deadline ? " did not finish before the job's deadline"
                                      : " did not finish within " + limit_text);
  message += " (last state: " + last_state;
  if (!last_problem.empty()) message += "; last poll: " + last_problem;
  message += ")";
  co_return failure(FailureKind::kFailed, std::move(message));
}

asio::awaitable<KieProvider::Outcome> KieProvider::run(const ImageTask& task) {
  const std::int64_t now = clock_.now_ms();
  std::int64_t give_up_at = now + std::max<std::int64_t>(settings_.timeout_ms, 0);
  if (task.deadline_ms > 0) give_up_at = std::min(give_up_at, task.deadline_ms);
  const bool resume = !task.resume_upstream_task_id.empty();
  if (now >= give_up_at && !resume) {
    co_return failure(FailureKind::kFailed, "the job's deadline passed before it was submitted");
  }

  // Registered before createTask so that even a callback racing the createTask reply is kept.
  asio::any_io_executor executor = co_await asio::this_coro::executor;
  std::unique_ptr<UpstreamWakeups::Waiter> waiter = wakeups_.register_waiter(task.job_id, executor);

  std::string upstream_task_id;
  if (resume) {
    upstream_task_id = task.resume_upstream_task_id;  // accepted before a restart: never resubmit
  } else {
    std::expected<std::string, ProviderError> created = co_await create_task(task);
    if (!created) co_return std::unexpected(created.error());
    upstream_task_id = std::move(*created);
    spdlog::debug("channel {}: job {} accepted as upstream task {}", settings_.name, task.job_id,
                  printable(upstream_task_id, 64));
    if (task.observer != nullptr) {
      std::string accepted_id = upstream_task_id;
      co_await task.observer->accepted(std::move(accepted_id));
    }
  }
  Outcome outcome =
      co_await wait_for_result(task, upstream_task_id, *waiter, give_up_at, /*poll_first=*/resume);
  co_return outcome;
}

asio::awaitable<KieProvider::Outcome> KieProvider::generate(const ImageTask& task,
                                                            PartialSink* partials) {
  Outcome outcome = failure(FailureKind::kFailed, "internal error in the Kie adapter");
  try {
    outcome = co_await run(task);
  } catch (const std::exception& e) {
    // Errors are values: nothing escapes. The upstream may have accepted the task.
    outcome = failure(FailureKind::kFailed,
                      "internal error in the Kie adapter: " + printable(e.what(), 200));
  }
  co_return outcome;
}

}  // namespace ig::providers
