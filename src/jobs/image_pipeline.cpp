#include "jobs/image_pipeline.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>

#include "core/json.h"
#include "core/text.h"
#include "jobs/batched_write.h"
#include "jobs/prepared_job_codec.h"
#include "media/image_probe.h"

namespace ig::jobs {
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

bool contains(const std::vector<std::string>& list, std::string_view v) {
  for (const auto& item : list) {
    if (item == v) return true;
  }
  return false;
}

// Counts the partial images that reached the client (`inner` may be null: no streaming).
class CountingPartialSink final : public providers::PartialSink {
 public:
  explicit CountingPartialSink(providers::PartialSink* inner) : inner_(inner) {}
  asio::awaitable<void> partial(int index, const providers::OutputImage& image) override {
    ++delivered_;
    co_await inner_->partial(index, image);
  }
  providers::PartialSink* get() { return inner_ == nullptr ? nullptr : this; }
  int delivered() const { return delivered_; }

 private:
  providers::PartialSink* inner_;
  int delivered_ = 0;
};

constexpr int kRefundRetries = 30;  // every 2 s: a minute

// What a client is told about an upstream failure that is not its own fault.
std::string public_failure(const providers::ProviderError& e) {
  const int status = e.upstream_status;
  if (status == 429) return "the upstream service is rate limited; try again later";
  if (status >= 500 && status <= 599) {
    return "the upstream service failed (HTTP " + std::to_string(status) + ")";
  }
  if (status == 401 || status == 403) return "the upstream service is not available";
  return "the upstream service did not deliver the image";
}

Error store_error(const store::StoreError& e) {
  switch (e.code) {
    case store::StoreErrc::kInsufficientCredits:
      return Error{ErrorCode::kInsufficientCredits, "Insufficient credits for this request."};
    case store::StoreErrc::kUnavailable:
      return Error{ErrorCode::kUnavailable, "The store is unavailable; try again."};
    default:
      return Error{ErrorCode::kInternal, "Internal error: " + e.message};
  }
}

// Model-dependent checks that need no I/O. Nothing is written when they fail.
Result<void> check_capabilities(const ImageRequest& req, const ModelCapabilities& caps) {
  if (req.edit_endpoint && req.images.empty()) {
    return fail(ErrorCode::kInvalidRequest, "an edit needs at least one image", "image");
  }
  // Seeds 002 and 003 let `image_urls` stand in for the prompt; OpenAI's edits, and every other
  // form, require one.
  const bool urls_stand_in =
      !req.images.empty() && std::all_of(req.images.begin(), req.images.end(),
                                         [](const auto& img) { return img.field == "image_urls"; });
  if (req.prompt.empty() && !urls_stand_in) {
    return fail(ErrorCode::kInvalidRequest, "'prompt' is required", "prompt");
  }
  if (utf8_length(req.prompt) > caps.max_prompt_chars) {
    return fail(ErrorCode::kInvalidRequest,
                "'prompt' is longer than " + std::to_string(caps.max_prompt_chars) +
                    " characters for this model",
                "prompt");
  }
  if (req.n > caps.max_n) {
    return fail(ErrorCode::kInvalidRequest,
                "'n' must be at most " + std::to_string(caps.max_n) + " for this model", "n");
  }
  if (static_cast<int>(req.images.size()) > caps.max_reference_images) {
    return fail(ErrorCode::kInvalidRequest,
                "at most " + std::to_string(caps.max_reference_images) +
                    " reference images are allowed for this model",
                req.images.front().field);
  }
  if (req.quality && !caps.qualities.empty() && !contains(caps.qualities, *req.quality)) {
    return fail(ErrorCode::kInvalidRequest,
                "quality '" + *req.quality + "' is not offered for this model", "quality");
  }
  if (!caps.output_formats.empty() && !contains(caps.output_formats, req.output_format)) {
    return fail(ErrorCode::kInvalidRequest,
                "output_format '" + req.output_format + "' is not offered for this model",
                "output_format");
  }
  if (req.mask && req.images.empty()) {
    return fail(ErrorCode::kInvalidRequest, "a mask needs an image to edit", "mask");
  }
  return {};
}

// Opens params_json's object and writes the request's fields; the caller may add "task" and
// closes it.
void begin_params(JsonWriter& out, const ImageRequest& req, const ResolvedSize& size) {
  out.begin_object()
      .str("prompt", req.prompt)
      .num("n", req.n)
      .str("size", size.label)
      .num("width", size.size.width)
      .num("height", size.size.height)
      .str("tier", to_string(size.tier))
      .str("quality", req.quality.value_or(""))
      .str("background", req.background)
      .str("output_format", req.output_format)
      .num("reference_images", static_cast<std::int64_t>(req.images.size()))
      .flag("mask", req.mask.has_value())
      .flag("stream", req.stream);
  if (req.output_compression) out.num("output_compression", *req.output_compression);
  if (!req.user.empty()) out.str("user", req.user);
}

// Persists the job engine's progress on an async job: which channel is being tried (counted
// before the call, so a restart knows the upstream may have the work) and, once an async
// upstream accepted it, the upstream task id (so a restart waits on it instead of resubmitting).
class AttemptRecorder final : public providers::UpstreamObserver {
 public:
  AttemptRecorder(store::Store& store, BlockingPool& pool, std::string job_id)
      : store_(store), pool_(pool), job_id_(std::move(job_id)) {}

  // False when the job is no longer running (canceled, or failed by the timeout sweep).
  asio::awaitable<bool> begin(std::string channel) {
    JobUpdate update;
    update.channel = std::move(channel);
    update.increment_attempts = true;
    auto step = [this, &update] {
      return store_.transition_job(job_id_, JobStatus::kRunning, JobStatus::kRunning, update);
    };
    auto r = co_await pool_.run(step);
    co_return r.has_value();
  }

  asio::awaitable<void> accepted(std::string upstream_task_id) override {
    JobUpdate update;
    update.upstream_task_id = std::move(upstream_task_id);
    auto step = [this, &update] {
      return store_.transition_job(job_id_, JobStatus::kRunning, JobStatus::kRunning, update);
    };
    auto r = co_await pool_.run(step);
    if (!r)
      spdlog::warn("job {}: recording the upstream task id failed: {}", job_id_, r.error().message);
  }

 private:
  store::Store& store_;
  BlockingPool& pool_;
  std::string job_id_;
};

std::string result_json(const std::vector<StoredImage>& images,
                        const std::optional<providers::ImageUsage>& usage) {
  json::array list;
  for (const auto& img : images) {
    list.push_back(json::object{
        {"blob", img.blob_id}, {"mime", img.mime}, {"width", img.width}, {"height", img.height}});
  }
  json::object o{{"images", std::move(list)}};
  if (usage) {
    o["usage"] = json::object{{"input_text_tokens", usage->input_text_tokens},
                              {"input_image_tokens", usage->input_image_tokens},
                              {"output_tokens", usage->output_tokens}};
  }
  return to_json_text(o);
}

}  // namespace

ImagePipeline::ImagePipeline(store::Store& store, BlockingPool& pool, blobs::BlobStore& blobs,
                             const Catalog& catalog, const providers::ProviderRegistry& providers,
                             ReferenceLoader& references, Random& random, const Clock& clock,
                             PipelineSettings settings)
    : store_(store),
      pool_(pool),
      blobs_(blobs),
      catalog_(catalog),
      providers_(providers),
      references_(references),
      random_(random),
      clock_(clock),
      settings_(std::move(settings)),
      limiter_(settings_.channel_limits) {}

std::string ImagePipeline::new_job_id() {
  // 8 base62 digits of the creation time in ms (fixed width, so ids sort by creation time and
  // new rows land at the right edge of the primary-key index instead of on a random page), then
  // 24 random ones (~143 bits: unguessable, the ids appear in public URLs).
  std::string id = "img_" + time_prefix(clock_.now_ms());
  std::lock_guard lock(random_mu_);
  return id + random_.base62(24);
}

asio::awaitable<Result<ImageJobOutcome>> ImagePipeline::run(const Caller& caller,
                                                            const ImageRequest& request,
                                                            providers::PartialSink* partials) {
  auto prepared = co_await prepare(caller, request);
  if (!prepared) co_return std::unexpected(prepared.error());
  co_return co_await execute(*prepared, partials);
}

asio::awaitable<Result<PreparedImageJob>> ImagePipeline::prepare(const Caller& caller,
                                                                 const ImageRequest& request) {
  // Seed 000's own examples omit `model`: the first configured model is the default.
  const ModelEntry* model =
      request.model.empty() ? &catalog_.models().front() : catalog_.find(request.model);
  if (model == nullptr) {
    co_return std::unexpected(Error{
        ErrorCode::kModelNotFound,
        "The model '" + printable(request.model, 100) + "' does not exist or is not available.",
        "model"});
  }
  if (auto ok = check_capabilities(request, model->capabilities); !ok) {
    co_return std::unexpected(ok.error());
  }

  // Reference images and mask: fetched, sniffed and size-checked before anything is charged.
  auto loaded = co_await references_.load_all(request.images);
  if (!loaded) co_return std::unexpected(loaded.error());
  std::vector<providers::InputImage> inputs = std::move(*loaded);
  std::optional<providers::InputImage> mask;
  if (request.mask) {
    auto m = co_await references_.load(*request.mask);
    if (!m) co_return std::unexpected(m.error());
    // OpenAI's contract: the transparent areas of a PNG mark what to edit.
    if (m->mime != "image/png" || !media::png_has_alpha(m->bytes)) {
      co_return std::unexpected(
          Error::invalid("mask must be a PNG image with an alpha channel", "mask"));
    }
    if (m->width != inputs.front().width || m->height != inputs.front().height) {
      co_return std::unexpected(
          Error::invalid("mask size " + std::to_string(m->width) + "x" + std::to_string(m->height) +
                             " differs from image size " + std::to_string(inputs.front().width) +
                             "x" + std::to_string(inputs.front().height),
                         "mask"));
    }
    mask = std::move(*m);
  }

  SizeRequest size_request{request.size, request.quality, request.resolution, request.aspect_ratio,
                           std::nullopt};
  if (!inputs.empty()) size_request.reference_image = ImageSize{inputs[0].width, inputs[0].height};
  auto size = resolve_size(size_request, model->capabilities);
  if (!size) co_return std::unexpected(size.error());

  billing::PriceInput price_input;
  price_input.tier = size->tier;
  price_input.quality = !size->quality.empty() ? size->quality : request.quality.value_or("");
  price_input.n = request.n;
  price_input.reference_images = static_cast<std::int64_t>(inputs.size());
  price_input.prompt_chars = static_cast<std::int64_t>(utf8_length(request.prompt));
  auto price = billing::quote(model->price, price_input);
  if (!price) co_return std::unexpected(price.error());

  NewJob new_job;
  new_job.id = new_job_id();
  new_job.user_id = caller.user_id;
  new_job.key_id = caller.key_id;
  new_job.kind = request.is_edit() ? "image.edit" : "image.generation";
  new_job.model = model->id;
  new_job.dialect = caller.dialect;
  new_job.reserve = *price;
  new_job.start_running = !caller.async;
  new_job.callback_url = request.callback_url.value_or("");

  PreparedImageJob prepared;
  prepared.model = model;
  prepared.size = *size;
  prepared.price_input = price_input;
  prepared.price = *price;
  prepared.job_id = new_job.id;
  prepared.user_id = caller.user_id;
  prepared.async = caller.async;
  providers::ImageTask& task = prepared.task;
  task.job_id = new_job.id;
  task.edit = request.is_edit();
  task.model = model->id;
  task.prompt = request.prompt;
  task.n = request.n;
  task.width = size->size.width;
  task.height = size->size.height;
  task.size_label = size->label;
  task.quality = request.quality.value_or(size->quality.empty() ? "auto" : size->quality);
  task.background = request.background;
  task.output_format = request.output_format;
  task.output_compression = request.output_compression;
  task.moderation = request.moderation;
  task.user = request.user;
  task.images = std::move(inputs);
  task.mask = std::move(mask);
  task.partial_images = request.stream ? request.partial_images : 0;

  JsonWriter params(1024);  // an async job's params with its task are ~600 bytes plus the prompt
  begin_params(params, request, *size);
  if (!caller.async) {
    new_job.params_json = params.end_object().take();
    // Committed is enough: the caller hears of this job only after its durable finish. A
    // stream's headers leave before the image exists, so they carry the balance after this
    // reservation, read in the same transaction.
    const bool want_balance = request.stream;
    auto create = [this, &new_job, want_balance]() -> store::StoreResult<std::optional<Micros>> {
      auto job = store_.create_job(new_job);
      if (!job) return std::unexpected(job.error());
      std::optional<Micros> balance;
      if (want_balance) {
        if (auto user = store_.find_user(new_job.user_id)) balance = user->balance;
      }
      return balance;
    };
    auto created = co_await batched_write(store_, create, store::Store::Durability::kCommitted);
    if (!created) co_return std::unexpected(store_error(created.error()));
    prepared.balance_after_reserve = *created;
    co_return prepared;
  }

  // An async job outlives this request and maybe this process: its inputs go to the blob store
  // (a pool round trip, only when there are any) and its task into params_json.
  task.deadline_ms = clock_.now_ms() + settings_.async_deadline_ms;
  std::vector<StoredInput> stored_inputs;
  std::optional<StoredInput> stored_mask;
  if (!prepared.task.images.empty() || prepared.task.mask) {
    std::string put_error;
    auto put_inputs = [this, &prepared, &stored_inputs, &stored_mask, &put_error]() -> int {
      for (const auto& img : prepared.task.images) {
        auto info = blobs_.put(img.bytes, img.mime);
        if (!info) {
          put_error = info.error().message;
          return 0;
        }
        prepared.input_blobs.push_back(info->id);
        stored_inputs.push_back(StoredInput{info->id, img.mime, img.width, img.height});
      }
      if (prepared.task.mask) {
        const auto& m = *prepared.task.mask;
        auto info = blobs_.put(m.bytes, m.mime);
        if (!info) {
          put_error = info.error().message;
          return 0;
        }
        prepared.input_blobs.push_back(info->id);
        stored_mask = StoredInput{info->id, m.mime, m.width, m.height};
      }
      return 0;
    };
    (void)co_await pool_.run(put_inputs);
    if (!put_error.empty()) {
      co_await delete_blobs_async(prepared.input_blobs);
      co_return std::unexpected(
          Error{ErrorCode::kInternal, "storing the reference images failed: " + put_error});
    }
  }
  params.key("task");
  encode_prepared(params, prepared, stored_inputs, stored_mask);
  new_job.params_json = params.end_object().take();
  // The balance is read in the same transaction, for the reply's X-Credits-Remaining.
  struct Created {
    Job job;
    std::optional<Micros> balance;
  };
  auto create = [this, &new_job]() -> store::StoreResult<Created> {
    auto job = store_.create_job(new_job);
    if (!job) return std::unexpected(job.error());
    Created out{std::move(*job), std::nullopt};
    if (auto user = store_.find_user(new_job.user_id)) out.balance = user->balance;
    return out;
  };
  auto created = co_await batched_write(store_, create);
  if (!created) {
    co_await delete_blobs_async(prepared.input_blobs);
    co_return std::unexpected(store_error(created.error()));
  }
  prepared.balance_after_reserve = created->balance;
  publish_inputs(prepared);
  co_return prepared;
}

asio::awaitable<void> ImagePipeline::delete_blobs_async(const std::vector<std::string>& ids) {
  if (ids.empty()) co_return;
  auto cleanup = [this, &ids] {
    delete_blobs(ids);
    return 0;
  };
  (void)co_await pool_.run(cleanup);
}

asio::awaitable<void> ImagePipeline::refund_unfinished(std::string job_id, std::string channel) {
  JobFinish refund;
  refund.status = JobStatus::kFailed;
  refund.error_code = "internal_error";
  refund.error_message = "the result could not be stored; nothing was charged";
  refund.channel = std::move(channel);
  if (co_await try_refund(job_id, refund)) co_return;
  spdlog::error("job {}: the refund did not commit either; retrying in the background", job_id);
  asio::co_spawn(co_await asio::this_coro::executor,
                 retry_refund(std::move(job_id), std::move(refund)), asio::detached);
}

asio::awaitable<bool> ImagePipeline::try_refund(const std::string& job_id,
                                                const JobFinish& refund) {
  auto write = [this, &job_id, &refund] { return store_.finish_job(job_id, refund); };
  auto refunded = co_await batched_write(store_, write);
  co_return refunded || refunded.error().code == store::StoreErrc::kAlreadyResolved;
}

asio::awaitable<void> ImagePipeline::retry_refund(std::string job_id, JobFinish refund) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int attempt = 0; attempt < kRefundRetries; ++attempt) {
    timer.expires_after(std::chrono::seconds(2));
    co_await timer.async_wait(asio::use_awaitable);
    if (co_await try_refund(job_id, refund)) {
      spdlog::info("job {}: refunded", job_id);
      co_return;
    }
  }
  spdlog::error("job {}: still not refunded; the next start will refund it", job_id);
}

void ImagePipeline::publish_inputs(PreparedImageJob& job) const {
  job.task.image_urls.clear();
  if (!settings_.public_blob_url || job.task.images.empty()) return;
  const std::int64_t expires_s = job.task.deadline_ms / 1000 + 3600;
  for (std::size_t i = 0; i < job.task.images.size() && i < job.input_blobs.size(); ++i) {
    job.task.image_urls.push_back(settings_.public_blob_url(job.input_blobs[i], expires_s));
  }
}

void ImagePipeline::delete_blobs(const std::vector<std::string>& ids) {
  for (const auto& id : ids) (void)blobs_.remove(id);
}

Result<PreparedImageJob> ImagePipeline::restore(const Job& job) {
  auto prepared = decode_prepared(job, catalog_, blobs_);
  if (!prepared) return prepared;
  publish_inputs(*prepared);
  return prepared;
}

bool ImagePipeline::abandon(const Job& job, std::string_view error_code,
                            const std::string& reason) {
  JobFinish finish;
  finish.status = JobStatus::kFailed;
  finish.error_code = std::string(error_code);
  finish.error_message = reason;
  finish.note = "refund: job " + job.id + ": " + reason;
  const bool finished = store_.finish_job(job.id, finish).has_value();
  delete_blobs(prepared_input_blobs(job));
  return finished;
}

asio::awaitable<Result<ImageJobOutcome>> ImagePipeline::execute(PreparedImageJob& job,
                                                                providers::PartialSink* partials) {
  const ModelEntry* model = job.model;
  const std::string& job_id = job.job_id;
  const providers::ImageTask& task = job.task;
  const billing::PriceInput& price_input = job.price_input;
  const Micros price = job.price;

  std::expected<providers::ImageResult, providers::ProviderError> result =
      std::unexpected(providers::ProviderError{providers::FailureKind::kFailed,
                                               "no provider channel is configured for this model"});
  std::string channel_used;
  std::optional<AttemptRecorder> recorder;
  CountingPartialSink sink(partials);
  if (job.async) {
    recorder.emplace(store_, pool_, job_id);
    job.task.observer = &*recorder;
  }
  bool abandoned = false;
  for (std::size_t i = 0; i < model->channels.size(); ++i) {
    // A resumed job waits on the channel that already accepted it, and on no other.
    if (!job.resume_channel.empty() && model->channels[i] != job.resume_channel) continue;
    providers::ImageProvider* provider = providers_.find(model->channels[i]);
    if (provider == nullptr) continue;
    channel_used = model->channels[i];
    const std::string slot_channel = channel_used;
    ChannelLimiter::Slot slot = co_await limiter_.acquire(slot_channel);
    if (recorder && job.task.resume_upstream_task_id.empty()) {
      const std::string channel_name = channel_used;
      if (!co_await recorder->begin(channel_name)) {
        abandoned = true;
        break;
      }
    }
    result = co_await provider->generate(task, sink.get());
    if (result) break;
    if (!job.task.resume_upstream_task_id.empty()) break;
    // Another channel gets the job only when this one cannot have accepted it (the adapter
    // says kRetryable: never sent, refused with 429/5xx/401/403, or no answer before the
    // timeout) and the client has seen none of it: a reply cut short after a 2xx, garbage, or a
    // stream that already sent partial images ends the job here. The client is charged once
    // whatever happens.
    if (result.error().kind != providers::FailureKind::kRetryable || sink.delivered() > 0) break;
    if (i + 1 < model->channels.size()) {
      spdlog::info("job {}: channel {} failed, trying the next: {}", job_id, channel_used,
                   result.error().message);
    }
  }

  const auto asked = static_cast<std::size_t>(std::max(task.n, 1));
  if (result && result->images.size() > asked) {
    // An upstream that sends more than was asked for: the client gets, and pays for, n.
    result->images.resize(asked);
  }
  if (result && result->images.empty()) {
    result = std::unexpected(
        providers::ProviderError{providers::FailureKind::kFailed, "upstream returned no images"});
  }
  if (abandoned) {
    // Canceled or failed by the timeout sweep while queued for this attempt: it is settled.
    co_return std::unexpected(
        Error{ErrorCode::kConflict, "job " + job_id + " was finished by someone else"});
  }
  if (!result) {
    const auto& perr = result.error();
    const bool client_fault = perr.kind == providers::FailureKind::kInvalidRequest;
    JobFinish finish;
    finish.status = JobStatus::kFailed;
    finish.error_code = client_fault ? "invalid_request" : "upstream_error";
    // An upstream's own words (a 400's moderation message) tell the client what to change; any
    // other failure's detail (addresses, the operator's account with the upstream) goes to the
    // log, and the client and the job row get a summary.
    finish.error_message = client_fault ? perr.message : public_failure(perr);
    if (!client_fault) {
      spdlog::warn("job {} failed on channel {}: {}", job_id, channel_used, perr.message);
    }
    if (!client_fault && task.deadline_ms > 0 && clock_.now_ms() >= task.deadline_ms) {
      // The same outcome as the timeout sweep, whichever of the two got there first.
      finish.error_code = "timeout";
      finish.error_message = "the task did not finish before its deadline";
    }
    finish.channel = channel_used;
    auto fail_job = [this, &job_id, &finish] { return store_.finish_job(job_id, finish); };
    (void)co_await batched_write(store_, fail_job);
    co_await delete_blobs_async(job.input_blobs);
    if (client_fault) co_return std::unexpected(Error::invalid(perr.message, perr.param));
    Error failed{ErrorCode::kUpstream,
                 "The upstream image service failed: " + finish.error_message};
    // What failover would not retry, a client should not either: the upstream may have
    // accepted the job (a reply cut short, garbage, partial images already sent).
    failed.retry_safe = perr.kind == providers::FailureKind::kRetryable && sink.delivered() == 0;
    co_return std::unexpected(std::move(failed));
  }

  ImageJobOutcome outcome;
  outcome.size = job.size;
  outcome.quality = task.quality;
  outcome.usage = result->usage;
  // Results are stored before the job succeeds: the URLs we hand out must work. Results that
  // are rows of the store's database go into the very transaction that finishes and settles the
  // job (the write lane: no pool thread, and the job and its images commit together); others
  // (files) are stored first, on the pool. The balance for X-Credits-Remaining is read in the
  // finishing transaction.
  const bool puts_in_lane = std::all_of(
      result->images.begin(), result->images.end(),
      [this](const auto& img) { return blobs_.put_joins_store_batch(img.bytes.size()); });
  struct Stored {
    std::vector<StoredImage> images;  // without bytes: those move in once it is all done
    std::string put_error;
  };
  Stored stored;
  auto put_results = [this, &result, &stored] {
    stored = Stored{};
    for (const auto& img : result->images) {
      auto info = blobs_.put(img.bytes, img.mime);
      if (!info) {
        stored.put_error = info.error().message;
        return;
      }
      stored.images.push_back(
          StoredImage{info->id, img.mime, img.width, img.height, {}, img.revised_prompt});
    }
  };
  if (!puts_in_lane) {
    auto put_on_pool = [&put_results] {
      put_results();
      return 0;
    };
    (void)co_await pool_.run(put_on_pool);
  }
  std::optional<billing::TokenUsage> usage;
  if (result->usage) {
    usage = billing::TokenUsage{result->usage->input_text_tokens, result->usage->input_image_tokens,
                                result->usage->output_tokens, 0};
  }
  struct Finished {
    Job job;
    std::optional<Micros> balance;
  };
  auto finish_write = [&]() -> store::StoreResult<Finished> {
    if (puts_in_lane) put_results();
    JobFinish finish;
    finish.channel = channel_used;
    if (!stored.put_error.empty()) {
      finish.status = JobStatus::kFailed;
      finish.error_code = "internal_error";
      finish.error_message = "storing the result failed: " + stored.put_error;
    } else {
      billing::PriceInput delivered = price_input;
      delivered.n = static_cast<std::int64_t>(stored.images.size());
      auto charge = billing::settle_amount(model->price, delivered, usage);
      finish.status = JobStatus::kSucceeded;
      finish.charge = charge ? std::min(*charge, price) : price;
      finish.result_json = result_json(stored.images, result->usage);
    }
    auto finished = store_.finish_job(job_id, finish);
    if (!finished) return std::unexpected(finished.error());
    Finished out{std::move(*finished), std::nullopt};
    if (auto user = store_.find_user(out.job.user_id)) out.balance = user->balance;
    return out;
  };
  auto finished = co_await batched_write(store_, finish_write);
  std::vector<std::string> unused;
  if (!finished || !stored.put_error.empty()) {
    // Failed to store, or someone else finished it first (a cancel, or the timeout sweep that
    // refunded it): that settlement stands, and these results were never handed out.
    for (const auto& img : stored.images) unused.push_back(img.blob_id);
    if (!finished && finished.error().code == store::StoreErrc::kAlreadyResolved) {
      spdlog::info("job {} finished upstream after it was already settled; result discarded",
                   job_id);
    }
  }
  if (!finished && finished.error().code != store::StoreErrc::kAlreadyResolved) {
    // The finishing transaction did not commit (a full disk, a database another process
    // holds): the job is still running with its hold open. Refund it now rather than at the
    // next start; a refund is a smaller write and may well get through.
    spdlog::error("job {}: finishing failed: {}; refunding", job_id, finished.error().message);
    co_await refund_unfinished(job_id, channel_used);
  }
  if (job.async) unused.insert(unused.end(), job.input_blobs.begin(), job.input_blobs.end());
  co_await delete_blobs_async(unused);
  if (!stored.put_error.empty()) {
    // The job was failed and refunded in the same transaction. A disk problem, not the
    // client's: the path and errno stay in the log.
    spdlog::error("job {}: storing the result failed: {}", job_id, stored.put_error);
    co_return std::unexpected(Error{ErrorCode::kUnavailable,
                                    "The result could not be stored; nothing was charged. Try "
                                    "again later."});
  }
  if (!finished) co_return std::unexpected(store_error(finished.error()));

  for (std::size_t i = 0; i < stored.images.size(); ++i) {
    stored.images[i].bytes = std::move(result->images[i].bytes);  // for b64_json replies
  }
  outcome.job = std::move(finished->job);
  outcome.images = std::move(stored.images);
  outcome.charged = outcome.job.charged;
  outcome.balance_after = finished->balance.value_or(0);
  co_return outcome;
}

}  // namespace ig::jobs
