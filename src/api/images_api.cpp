#include "api/images_api.h"

#include <algorithm>
#include <boost/asio/this_coro.hpp>
#include <boost/json.hpp>

#include "api/callback_url.h"
#include "api/image_request.h"
#include "api/public_url.h"
#include "api/request_auth.h"
#include "api/task_views.h"
#include "blobs/http_range.h"
#include "core/base64.h"
#include "core/json.h"
#include "core/text.h"

namespace ig::api {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;

struct ImagesApi::StreamState {
  jobs::PreparedImageJob prepared;
  std::string event_prefix;  // "image_generation" | "image_edit"
  std::string background;
  std::string output_format;
  std::string key_prefix;
};

namespace {

json::object usage_json(const providers::ImageUsage& u) {
  return json::object{
      {"total_tokens", u.input_text_tokens + u.input_image_tokens + u.output_tokens},
      {"input_tokens", u.input_text_tokens + u.input_image_tokens},
      {"output_tokens", u.output_tokens},
      {"input_tokens_details",
       json::object{{"text_tokens", u.input_text_tokens}, {"image_tokens", u.input_image_tokens}}}};
}

std::string sse_event(std::string_view name, const json::object& data) {
  std::string out = "event: ";
  out += name;
  out += "\ndata: ";
  out += to_json_text(data);
  out += "\n\n";
  return out;
}

http::Response credits_headers(http::Response r, Micros charged, Micros remaining) {
  r.headers.emplace_back("X-Credits-Charged", format_credits(charged));
  r.headers.emplace_back("X-Credits-Remaining", format_credits(remaining));
  return r;
}

// Streams partial images as OpenAI's partial_image events.
class SsePartialSink final : public providers::PartialSink {
 public:
  SsePartialSink(http::BodyWriter& writer, const ImagesApi::StreamState& state)
      : writer_(writer), state_(state) {}
  awaitable<void> partial(int index, const providers::OutputImage& image) override {
    const std::string type = state_.event_prefix + ".partial_image";
    json::object data{{"type", type},
                      {"b64_json", base64_encode(image.bytes)},
                      {"created_at", std::time(nullptr)},
                      {"size", state_.prepared.size.label},
                      {"quality", state_.prepared.task.quality},
                      {"background", state_.background},
                      {"output_format", state_.output_format},
                      {"partial_image_index", index}};
    const std::string event = sse_event(type, data);
    co_await writer_.write(event);
  }

 private:
  http::BodyWriter& writer_;
  const ImagesApi::StreamState& state_;
};

// What was delivered: an upstream may answer with another size or format than was asked for,
// and a client names and decodes the file from these fields.
std::string delivered_size(const jobs::ImageJobOutcome& outcome) {
  if (!outcome.images.empty() && outcome.images[0].width > 0 && outcome.images[0].height > 0) {
    return std::to_string(outcome.images[0].width) + "x" + std::to_string(outcome.images[0].height);
  }
  return outcome.size.label;
}

std::string delivered_format(const jobs::ImageJobOutcome& outcome, const std::string& requested) {
  if (outcome.images.empty()) return requested;
  const std::string& mime = outcome.images[0].mime;
  if (mime == "image/png") return "png";
  if (mime == "image/jpeg") return "jpeg";
  if (mime == "image/webp") return "webp";
  return requested;
}

}  // namespace

ImagesApi::ImagesApi(store::Store& store, BlockingPool& pool, accounts::Authenticator& auth,
                     jobs::ImagePipeline& pipeline, jobs::JobRunner& runner,
                     blobs::BlobStore& blobs,
                     blobs::UrlSigner& signer, const Clock& clock,
                     const std::string& public_base_url, ImagesApiSettings settings)
    : store_(store),
      pool_(pool),
      auth_(auth),
      pipeline_(pipeline),
      runner_(runner),
      blobs_(blobs),
      signer_(signer),
      clock_(clock),
      public_base_url_(public_base_url),
      settings_(std::move(settings)) {}

void ImagesApi::register_routes(http::Router& router) {
  router.add("POST", "/v1/images/generations",
             [this](http::Request& r) { return create(r, false); });
  router.add("POST", "/v1/images/edits", [this](http::Request& r) { return create(r, true); });
  router.add("GET", "/api/jobs/{id}/image", [this](http::Request& r) { return job_image(r); });
  router.add("GET", "/api/jobs/{id}", [this](http::Request& r) { return job_status(r); });
  router.add("GET", "/v1/files/{blob}", [this](http::Request& r) { return signed_file(r); });
}

std::string ImagesApi::base_url(const http::Request& req) const {
  const bool trusted = std::find(settings_.trusted_proxies.begin(), settings_.trusted_proxies.end(),
                                 req.remote_ip) != settings_.trusted_proxies.end();
  if (!trusted) return public_base_url_;
  return forwarded_base_url(public_base_url_, !settings_.public_base_url_configured,
                            ForwardedHeaders{req.header("x-forwarded-proto"),
                                             req.header("x-forwarded-host"), req.header("host")});
}

std::string ImagesApi::render_reply(const jobs::ImageJobOutcome& outcome,
                                    const std::string& format, const std::string& output_format,
                                    const std::string& background, const std::string& base) const {
  const bool want_b64 = format == "b64_json" || format == "both";
  const bool want_url = format == "url" || format == "both";
  json::array data;
  const std::int64_t expires = clock_.now_s() + settings_.signed_url_ttl_s;
  for (std::size_t i = 0; i < outcome.images.size(); ++i) {
    const auto& img = outcome.images[i];
    json::object item;
    if (want_b64) item["b64_json"] = base64_encode(img.bytes);
    if (want_url) {
      std::string url;
      if (settings_.url_style == "signed") {
        url = base + "/v1/files/" + img.blob_id + "?" +
              signer_.sign("/v1/files/" + img.blob_id, expires);
      } else {
        url = base + "/api/jobs/" + outcome.job.id + "/image";
        if (outcome.images.size() > 1) url += "?index=" + std::to_string(i);
      }
      item["url"] = url;
    }
    if (img.revised_prompt) item["revised_prompt"] = *img.revised_prompt;
    data.push_back(std::move(item));
  }
  json::object reply{{"created", clock_.now_s()},
                     {"data", std::move(data)},
                     {"background", background == "auto" ? "opaque" : background},
                     {"output_format", delivered_format(outcome, output_format)},
                     {"quality", outcome.quality},
                     {"size", delivered_size(outcome)}};
  if (outcome.usage) reply["usage"] = usage_json(*outcome.usage);
  return to_json_text(reply);
}

namespace {

// A WxH size (as opposed to a ratio or auto).
bool is_pixel_size(const std::optional<std::string>& size) {
  return size && size->find('x') != std::string::npos;
}

bool prefers_async(const http::Request& req) {
  for (const auto& [name, value] : req.headers) {
    if (name != "prefer") continue;
    std::string v = to_lower_ascii(value);
    if (v.find("respond-async") != std::string::npos) return true;
  }
  return false;
}

}  // namespace

ImagesApi::TaskMode ImagesApi::task_mode(const http::Request& req,
                                         const jobs::ImageRequest& request,
                                         bool edit_endpoint,
                                         const std::string& key_profile) const {
  const bool api_prefix = req.path.starts_with("/api/v1/");
  const std::string& profile = key_profile.empty() ? settings_.task_profile : key_profile;
  if (api_prefix && !edit_endpoint && profile == kDialectSeed002) {
    return {true, std::string(kDialectSeed002)};
  }
  const bool ratio_and_tier =
      request.aspect_ratio && request.resolution && !is_pixel_size(request.size);
  const bool async = request.input_object || request.callback_url.has_value() || ratio_and_tier ||
                     prefers_async(req);
  if (!async) return {false, "openai"};
  if (request.input_object || !api_prefix) return {true, std::string(kDialectTasks)};
  return {true, std::string(kDialectSeed001)};
}

awaitable<http::Response> ImagesApi::create(http::Request& req, bool edit_endpoint) {
  auto principal = co_await authenticate_request(auth_, req);
  if (!principal) co_return http::Response::error(principal.error());
  http::Response response = co_await create_for(req, edit_endpoint, *principal);
  response.key_prefix = principal->key_prefix;
  const bool has_credit_headers =
      std::any_of(response.headers.begin(), response.headers.end(),
                  [](const auto& h) { return h.first == "X-Credits-Charged"; });
  if (!has_credit_headers && !response.stream) {
    // Failures charge nothing; the balance tells the client where it stands.
    const std::int64_t user_id = principal->user_id;
    auto load = [this, user_id] { return store_.find_user(user_id); };
    auto user = co_await pool_.run(load);
    if (user) response = credits_headers(std::move(response), 0, user->balance);
  }
  co_return response;
}

awaitable<http::Response> ImagesApi::create_for(http::Request& req, bool edit_endpoint,
                                                const accounts::Principal& principal_ref) {
  const accounts::Principal* principal = &principal_ref;

  Result<jobs::ImageRequest> parsed = fail(ErrorCode::kInvalidRequest, "unreachable");
  const std::string content_type = to_lower_ascii(req.header("content-type").value_or(""));
  if (content_type.starts_with("multipart/form-data")) {
    auto parts = http::parse_multipart(req.header("content-type").value_or(""), req.body);
    if (!parts) {
      auto r = http::Response::error(parts.error());
      r.key_prefix = principal->key_prefix;
      co_return r;
    }
    parsed = parse_image_multipart(*parts, edit_endpoint);
  } else {
    parsed = parse_image_json(req.body, edit_endpoint);
  }
  if (!parsed) {
    auto r = http::Response::error(parsed.error());
    r.key_prefix = principal->key_prefix;
    co_return r;
  }
  jobs::ImageRequest& request = *parsed;
  jobs::Caller caller{principal->user_id, principal->key_id, "openai"};
  const TaskMode mode = task_mode(req, request, edit_endpoint, principal->profile);
  if (mode.async) {
    caller.async = true;
    caller.dialect = mode.dialect;
    Result<void> checked;
    if (request.stream) {
      checked = fail(ErrorCode::kInvalidRequest,
                     "'stream' cannot be combined with an async task (callback_url, input, "
                     "aspect_ratio + resolution, Prefer: respond-async or the task profile)",
                     "stream");
    } else if (request.callback_url) {
      checked = check_callback_url(*request.callback_url, settings_.callback_policy);
    }
    if (!checked) {
      auto r = http::Response::error(checked.error());
      r.key_prefix = principal->key_prefix;
      co_return r;
    }
  }

  auto prepared = co_await pipeline_.prepare(caller, request);
  if (!prepared) {
    auto r = http::Response::error(prepared.error());
    r.key_prefix = principal->key_prefix;
    co_return r;
  }

  if (mode.async) {
    // The reply shows the task as created (pending), whatever the runner does meanwhile.
    jobs::Job job;
    job.id = prepared->job_id;
    job.model = prepared->model->id;
    job.reserved = prepared->price;
    job.status = jobs::JobStatus::kQueued;
    job.created_at_ms = clock_.now_ms();
    const std::optional<Micros> balance = prepared->balance_after_reserve;
    auto executor = co_await asio::this_coro::executor;
    runner_.submit(executor, std::move(*prepared));
    auto r = http::Response::json(200, to_json_text(render_task_created(job, mode.dialect)));
    r.key_prefix = principal->key_prefix;
    // Nothing is charged yet (the price is reserved); the balance is what is left to spend.
    if (balance) r = credits_headers(std::move(r), 0, *balance);
    co_return r;
  }

  if (request.stream) {
    auto state = std::make_shared<StreamState>();
    state->prepared = std::move(*prepared);
    // Named after the endpoint, as the SDK's stream type for that call expects, even when a
    // reference image made a /generations call an edit.
    state->event_prefix = edit_endpoint ? "image_edit" : "image_generation";
    state->background = request.background == "auto" ? "opaque" : request.background;
    state->output_format = request.output_format;
    state->key_prefix = principal->key_prefix;
    http::Response r;
    r.status = 200;
    r.content_type = "text/event-stream";
    r.headers.emplace_back("Cache-Control", "no-cache");
    // A client whose stream breaks can still find its job (GET /api/jobs/{id}).
    r.headers.emplace_back("X-Job-Id", state->prepared.job_id);
    r.key_prefix = principal->key_prefix;
    // The headers leave before the image exists: they carry the reservation (what the stream
    // costs if it completes; a token-priced model may settle lower) and the balance after it.
    // A stream that fails ends with an `error` event and is refunded.
    if (state->prepared.balance_after_reserve) {
      r = credits_headers(std::move(r), state->prepared.price,
                          *state->prepared.balance_after_reserve);
    }
    r.stream = [this, state](http::BodyWriter& writer) { return stream_images(state, writer); };
    co_return r;
  }

  const std::string job_id = prepared->job_id;
  auto outcome = co_await pipeline_.execute(*prepared, nullptr);
  if (!outcome) {
    auto r = http::Response::error(outcome.error());
    r.headers.emplace_back("X-Job-Id", job_id);
    r.key_prefix = principal->key_prefix;
    co_return r;
  }
  const std::string format = request.response_format.value_or(settings_.default_response_format);
  const std::string base = base_url(req);
  auto r = http::Response::json(
      200, render_reply(*outcome, format, request.output_format, request.background, base));
  r.headers.emplace_back("X-Job-Id", job_id);
  r.key_prefix = principal->key_prefix;
  co_return credits_headers(std::move(r), outcome->charged, outcome->balance_after);
}

awaitable<void> ImagesApi::stream_images(std::shared_ptr<StreamState> state,
                                         http::BodyWriter& writer) {
  SsePartialSink sink(writer, *state);
  auto outcome = co_await pipeline_.execute(state->prepared, &sink);
  if (!outcome) {
    json::object err{{"message", outcome.error().message},
                     {"type", std::string(error_type(outcome.error().code))},
                     {"param", nullptr},
                     {"code", std::string(error_code_name(outcome.error().code))}};
    json::object data{{"type", "error"}, {"error", std::move(err)}};
    const std::string event = sse_event("error", data);
    co_await writer.write(event);
    co_return;
  }
  const std::string type = state->event_prefix + ".completed";
  for (const auto& img : outcome->images) {
    json::object data{{"type", type},
                      {"b64_json", base64_encode(img.bytes)},
                      {"created_at", clock_.now_s()},
                      {"size", delivered_size(*outcome)},
                      {"quality", outcome->quality},
                      {"background", state->background},
                      {"output_format", delivered_format(*outcome, state->output_format)}};
    if (outcome->usage) data["usage"] = usage_json(*outcome->usage);
    const std::string event = sse_event(type, data);
    co_await writer.write(event);
  }
}

awaitable<http::Response> ImagesApi::job_image(http::Request& req) {
  const std::string job_id(req.param("id").value_or(""));
  const Error not_found{ErrorCode::kNotFound, "No image for this job."};
  if (job_id.size() > 64) co_return http::Response::error(not_found);
  auto load = [this, &job_id] { return store_.find_job(job_id); };
  auto job = co_await pool_.run(load);
  if (!job || job->status != jobs::JobStatus::kSucceeded) co_return http::Response::error(not_found);
  if (job->results_expired_at_ms) {
    const Error expired{ErrorCode::kResultExpired,
                        "This job's images were deleted after the deployment's retention period."};
    co_return http::Response::error(expired);
  }
  int index = 0;
  if (auto q = req.query_param("index")) {
    if (q->empty() || q->size() > 2 || q->find_first_not_of("0123456789") != std::string::npos) {
      co_return http::Response::error(Error::invalid("'index' must be a small integer", "index"));
    }
    index = std::stoi(*q);
  }
  const std::vector<std::string> blob_ids = jobs::result_blob_ids(job->result_json);
  if (index >= static_cast<int>(blob_ids.size()) || blob_ids[index].empty()) {
    co_return http::Response::error(not_found);
  }
  std::string blob_id = blob_ids[index];
  std::string cache = "private, max-age=31536000, immutable";
  co_return co_await serve_blob(req, blob_id, cache);
}

awaitable<http::Response> ImagesApi::signed_file(http::Request& req) {
  const std::string blob_id(req.param("blob").value_or(""));
  const Error denied{ErrorCode::kPermissionDenied, "This URL is invalid or has expired."};
  auto exp_text = req.query_param("exp");
  auto sig = req.query_param("sig");
  if (!exp_text || !sig || exp_text->empty() || exp_text->size() > 12 ||
      exp_text->find_first_not_of("0123456789") != std::string::npos) {
    co_return http::Response::error(denied);
  }
  const std::int64_t exp = std::stoll(*exp_text);
  if (!signer_.verify("/v1/files/" + blob_id, exp, *sig)) co_return http::Response::error(denied);
  std::string cache = "private, max-age=" + std::to_string(std::max<std::int64_t>(0, exp - clock_.now_s()));
  co_return co_await serve_blob(req, blob_id, cache);
}

awaitable<http::Response> ImagesApi::serve_blob(http::Request& req,
                                                const std::string& blob_id,
                                                const std::string& cache_control) {
  const Error not_found{ErrorCode::kNotFound, "No such file."};
  auto stat = [this, &blob_id] { return blobs_.stat(blob_id); };
  auto info = co_await pool_.run(stat);
  if (!info) co_return http::Response::error(not_found);
  blobs::ConditionalHeaders conditional{req.header("range").value_or(""),
                                        req.header("if-none-match").value_or(""),
                                        req.header("if-range").value_or("")};
  blobs::ResponsePlan plan = blobs::plan_response(conditional, info->size, info->etag);
  http::Response r;
  r.status = plan.status;
  r.content_type = info->content_type;
  r.headers.emplace_back("ETag", info->etag);
  r.headers.emplace_back("Cache-Control", cache_control);
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Accept-Ranges", "bytes");
  if (!plan.content_range.empty()) r.headers.emplace_back("Content-Range", plan.content_range);
  if (plan.status == 304) co_return r;
  if (plan.status == 416) {
    r.content_type = "application/json";
    r.body = render_error_body(Error::invalid("Range not satisfiable: the file has " +
                                                  std::to_string(info->size) +
                                                  " bytes (Content-Range gives the size)",
                                              "range"));
    co_return r;
  }
  const std::uint64_t offset = plan.offset;
  const std::uint64_t length = plan.length;
  auto read = [this, &blob_id, offset, length] { return blobs_.read(blob_id, offset, length); };
  auto bytes = co_await pool_.run(read);
  if (!bytes) co_return http::Response::error(not_found);
  r.body = std::move(*bytes);
  co_return r;
}

awaitable<http::Response> ImagesApi::job_status(http::Request& req) {
  auto principal = co_await authenticate_request(auth_, req);
  if (!principal) co_return http::Response::error(principal.error());
  const std::string job_id(req.param("id").value_or(""));
  const Error not_found{ErrorCode::kTaskNotFound, "No job with this id."};
  if (job_id.size() > 64) co_return http::Response::error(not_found);
  auto load = [this, &job_id] { return store_.find_job(job_id); };
  auto job = co_await pool_.run(load);
  if (!job || job->user_id != principal->user_id) co_return http::Response::error(not_found);
  json::object o{{"id", job->id},
                 {"object", "image.job"},
                 {"kind", job->kind},
                 {"model", job->model},
                 {"status", std::string(jobs::to_string(job->status))},
                 {"created_at", job->created_at_ms / 1000},
                 {"credits_reserved", credits_json(job->reserved)},
                 {"credits_charged", credits_json(job->charged)}};
  if (job->started_at_ms) o["started_at"] = *job->started_at_ms / 1000;
  if (job->finished_at_ms) o["completed_at"] = *job->finished_at_ms / 1000;
  if (job->results_expired_at_ms) o["results_expired_at"] = *job->results_expired_at_ms / 1000;
  // The normalized parameters the job ran with (an async job's stored task, with its input
  // blob ids, stays internal).
  boost::system::error_code params_ec;
  json::value params = json::parse(job->params_json.empty() ? "{}" : job->params_json, params_ec);
  if (!params_ec && params.is_object()) {
    params.get_object().erase("task");
    o["params"] = std::move(params);
  }
  if (!job->error_code.empty()) {
    o["error"] = json::object{{"code", job->error_code}, {"message", job->error_message}};
  }
  boost::system::error_code ec;
  json::value result = json::parse(job->result_json.empty() ? "{}" : job->result_json, ec);
  json::array data;
  if (!ec && result.is_object()) {
    const json::value* v = result.get_object().if_contains("images");
    if (v && v->is_array() && !job->results_expired_at_ms) {
      const std::string base = base_url(req);
      for (std::size_t i = 0; i < v->get_array().size(); ++i) {
        std::string url = base + "/api/jobs/" + job->id + "/image";
        if (v->get_array().size() > 1) url += "?index=" + std::to_string(i);
        data.push_back(json::object{{"url", url}});
      }
    }
    if (const json::value* u = result.get_object().if_contains("usage")) o["usage"] = *u;
  }
  o["data"] = std::move(data);
  auto r = http::Response::json(200, to_json_text(o));
  r.key_prefix = principal->key_prefix;
  co_return r;
}

}  // namespace ig::api
