#include "jobs/image_pipeline.h"

#include <boost/json.hpp>

#include "core/json.h"
#include "core/text.h"

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
  if (req.prompt.empty() && req.images.empty()) {
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

std::string params_json(const ImageRequest& req, const ResolvedSize& size) {
  json::object o{{"prompt", req.prompt},
                 {"n", req.n},
                 {"size", size.label},
                 {"width", size.size.width},
                 {"height", size.size.height},
                 {"tier", std::string(to_string(size.tier))},
                 {"quality", req.quality.value_or("")},
                 {"background", req.background},
                 {"output_format", req.output_format},
                 {"reference_images", req.images.size()},
                 {"mask", req.mask.has_value()},
                 {"stream", req.stream}};
  if (req.output_compression) o["output_compression"] = *req.output_compression;
  if (!req.user.empty()) o["user"] = req.user;
  return to_json_text(o);
}

std::string result_json(const std::vector<StoredImage>& images,
                        const std::optional<providers::ImageUsage>& usage) {
  json::array list;
  for (const auto& img : images) {
    list.push_back(json::object{{"blob", img.blob_id},
                                {"mime", img.mime},
                                {"width", img.width},
                                {"height", img.height}});
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
                             const Catalog& catalog,
                             const providers::ProviderRegistry& providers,
                             ReferenceLoader& references, Random& random, const Clock& clock)
    : store_(store),
      pool_(pool),
      blobs_(blobs),
      catalog_(catalog),
      providers_(providers),
      references_(references),
      random_(random),
      clock_(clock) {}

std::string ImagePipeline::new_job_id() {
  std::lock_guard lock(random_mu_);
  return "img_" + random_.base62(24);  // ~143 random bits: unguessable, used in public URLs
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
  const ModelEntry* model = request.model.empty() ? &catalog_.models().front()
                                                  : catalog_.find(request.model);
  if (model == nullptr) {
    co_return std::unexpected(Error{ErrorCode::kModelNotFound,
                                    "The model '" + printable(request.model, 100) +
                                        "' does not exist or is not available.",
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
    if (m->width != inputs.front().width || m->height != inputs.front().height) {
      co_return std::unexpected(Error::invalid(
          "mask size " + std::to_string(m->width) + "x" + std::to_string(m->height) +
              " differs from image size " + std::to_string(inputs.front().width) + "x" +
              std::to_string(inputs.front().height),
          "mask"));
    }
    mask = std::move(*m);
  }

  SizeRequest size_request{request.size, request.quality, request.resolution,
                           request.aspect_ratio, std::nullopt};
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
  new_job.params_json = params_json(request, *size);
  new_job.reserve = *price;
  new_job.start_running = !caller.async;
  new_job.callback_url = request.callback_url.value_or("");
  auto create = [this, &new_job] { return store_.create_job(new_job); };
  auto created = co_await pool_.run(create);
  if (!created) co_return std::unexpected(store_error(created.error()));
  const std::string job_id = created->id;

  PreparedImageJob prepared;
  prepared.model = model;
  prepared.size = *size;
  prepared.price_input = price_input;
  prepared.price = *price;
  prepared.job_id = job_id;
  prepared.user_id = caller.user_id;
  providers::ImageTask& task = prepared.task;
  task.job_id = job_id;
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
  co_return prepared;
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
  for (std::size_t i = 0; i < model->channels.size(); ++i) {
    providers::ImageProvider* provider = providers_.find(model->channels[i]);
    if (provider == nullptr) continue;
    channel_used = model->channels[i];
    result = co_await provider->generate(task, partials);
    if (result) break;
    // Fail over on every upstream failure (errors and timeouts, REQUIREMENTS §6) except a
    // rejection of the request itself, which another channel would reject too. The client is
    // charged once whatever happens; a channel that timed out may still bill the operator.
    if (result.error().kind == providers::FailureKind::kInvalidRequest) break;
  }

  if (result && result->images.empty()) {
    result = std::unexpected(providers::ProviderError{providers::FailureKind::kFailed,
                                                      "upstream returned no images"});
  }
  if (!result) {
    const auto& perr = result.error();
    const bool client_fault = perr.kind == providers::FailureKind::kInvalidRequest;
    JobFinish finish;
    finish.status = JobStatus::kFailed;
    finish.error_code = client_fault ? "invalid_request" : "upstream_error";
    finish.error_message = perr.message;
    finish.channel = channel_used;
    auto fail_job = [this, &job_id, &finish] { return store_.finish_job(job_id, finish); };
    (void)co_await pool_.run(fail_job);
    if (client_fault) co_return std::unexpected(Error::invalid(perr.message, std::nullopt));
    co_return std::unexpected(Error{ErrorCode::kUpstream,
                                    "The upstream image service failed: " + perr.message});
  }

  ImageJobOutcome outcome;
  outcome.size = job.size;
  outcome.quality = task.quality;
  outcome.usage = result->usage;
  // One pool round trip: store the results (before the job succeeds: the URLs we hand out must
  // work), finish and settle, and read the balance for X-Credits-Remaining.
  struct Stored {
    std::vector<StoredImage> images;
    std::string put_error;
    store::StoreResult<Job> finished = std::unexpected(store::StoreError{});
    std::optional<Micros> balance;
  };
  Stored done;
  auto store_results = [this, &result, &done, &job_id, &channel_used, &model, &price_input,
                        price]() -> int {
    for (auto& img : result->images) {
      auto info = blobs_.put(img.bytes, img.mime);
      if (!info) {
        done.put_error = info.error().message;
        break;
      }
      done.images.push_back(StoredImage{info->id, img.mime, img.width, img.height,
                                        std::move(img.bytes), img.revised_prompt});
    }
    JobFinish finish;
    finish.channel = channel_used;
    if (!done.put_error.empty()) {
      finish.status = JobStatus::kFailed;
      finish.error_code = "internal_error";
      finish.error_message = "storing the result failed: " + done.put_error;
    } else {
      std::optional<billing::TokenUsage> usage;
      if (result->usage) {
        usage = billing::TokenUsage{result->usage->input_text_tokens,
                                    result->usage->input_image_tokens,
                                    result->usage->output_tokens, 0};
      }
      billing::PriceInput delivered = price_input;
      delivered.n = static_cast<std::int64_t>(done.images.size());
      auto charge = billing::settle_amount(model->price, delivered, usage);
      finish.status = JobStatus::kSucceeded;
      finish.charge = charge ? std::min(*charge, price) : price;
      finish.result_json = result_json(done.images, result->usage);
    }
    done.finished = store_.finish_job(job_id, finish);
    if (done.finished) {
      if (auto user = store_.find_user(done.finished->user_id)) done.balance = user->balance;
    }
    return 0;
  };
  (void)co_await pool_.run(store_results);
  if (!done.put_error.empty()) {
    co_return std::unexpected(
        Error{ErrorCode::kInternal, "storing the result failed: " + done.put_error});
  }
  if (!done.finished) co_return std::unexpected(store_error(done.finished.error()));

  outcome.job = std::move(*done.finished);
  outcome.images = std::move(done.images);
  outcome.charged = outcome.job.charged;
  outcome.balance_after = done.balance.value_or(0);
  co_return outcome;
}

Result<int> ImagePipeline::fail_interrupted_jobs() {
  auto jobs = store_.list_unfinished_jobs();
  if (!jobs) return fail(ErrorCode::kUnavailable, jobs.error().message);
  int failed = 0;
  for (const auto& job : *jobs) {
    JobFinish finish;
    finish.status = JobStatus::kFailed;
    finish.error_code = "internal_error";
    finish.error_message = "imagegate restarted while the job was running; refunded";
    finish.note = "refund: job " + job.id + " interrupted by a restart";
    if (store_.finish_job(job.id, finish)) ++failed;
  }
  return failed;
}

}  // namespace ig::jobs
