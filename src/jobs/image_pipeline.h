#pragma once
// ImagePipeline: the one path every image request takes, whatever dialect received it.
// validate against the model's capabilities -> load reference images -> price -> create the
// job and reserve its price (one store transaction) -> try the model's channels in order ->
// store the results -> settle (or refund on any failure) in the same step that finishes the job.
//
// Promises: the client is charged at most once; every failure after the reservation refunds in
// full; a request that fails validation writes nothing; the job completes (and is charged)
// even if the caller stops listening.

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "blobs/blob_store.h"
#include "core/clock.h"
#include "core/random.h"
#include "http/blocking_pool.h"
#include "jobs/catalog.h"
#include "jobs/channel_limiter.h"
#include "jobs/image_request.h"
#include "jobs/job.h"
#include "jobs/reference_loader.h"
#include "providers/provider.h"
#include "providers/provider_registry.h"
#include "store/store.h"

namespace ig::jobs {

struct StoredImage {
  std::string blob_id;
  std::string mime;
  int width = 0;
  int height = 0;
  std::string bytes;  // kept for b64_json replies
  std::optional<std::string> revised_prompt;
};

struct ImageJobOutcome {
  Job job;
  std::vector<StoredImage> images;
  std::optional<providers::ImageUsage> usage;
  ResolvedSize size;
  std::string quality;  // echoed back
  Micros charged = 0;
  Micros balance_after = 0;
};

// A job that passed validation and holds its reservation, ready to run.
struct PreparedImageJob {
  const ModelEntry* model = nullptr;
  ResolvedSize size;
  billing::PriceInput price_input;
  Micros price = 0;
  std::string job_id;
  std::int64_t user_id = 0;
  providers::ImageTask task;
  // An async job: its inputs are persisted (params_json "task" + blobs) so that a restart can
  // run it again, and every upstream attempt is recorded before it is made.
  bool async = false;
  std::vector<std::string> input_blobs;  // blobs holding task.images and task.mask (async only)
  // Resuming after a restart: the channel that already accepted task.resume_upstream_task_id.
  std::string resume_channel;
  // The balance right after the reservation (async jobs: read in the same pool round trip as
  // the job's creation, for X-Credits-Remaining).
  std::optional<Micros> balance_after_reserve;
};

struct PipelineSettings {
  // An async job is abandoned (failed, refunded) this long after it was created.
  std::int64_t async_deadline_ms = 30 * 60 * 1000;
  // Absolute URL at which an upstream can fetch a blob until `expires_at_s` (unix seconds); used
  // for reference images of async jobs (Kie takes input_urls). Empty: no URLs are published.
  std::function<std::string(const std::string& blob_id, std::int64_t expires_at_s)> public_blob_url;
  // Generations in flight per provider channel (channel -> limit; absent or 0 = unlimited).
  std::map<std::string, int> channel_limits;
};

struct Caller {
  std::int64_t user_id = 0;
  std::int64_t key_id = 0;
  std::string dialect = "openai";
  // An async task: the job is created queued (a JobRunner claims it) instead of running with
  // its caller waiting.
  bool async = false;
};

class ImagePipeline {
 public:
  ImagePipeline(store::Store& store, BlockingPool& pool, blobs::BlobStore& blobs,
                const Catalog& catalog, const providers::ProviderRegistry& providers,
                ReferenceLoader& references, Random& random, const Clock& clock,
                PipelineSettings settings = {});

  // Validates, loads reference images, prices, and creates the job with its reservation.
  // Nothing is written when this fails. Errors carry the OpenAI error to send.
  boost::asio::awaitable<Result<PreparedImageJob>> prepare(const Caller& caller,
                                                           const ImageRequest& request);
  // Runs a prepared job to its end: providers with failover, result storage, and exactly one
  // settle or refund. `partials` may be null.
  boost::asio::awaitable<Result<ImageJobOutcome>> execute(PreparedImageJob& job,
                                                          providers::PartialSink* partials);
  // prepare + execute.
  boost::asio::awaitable<Result<ImageJobOutcome>> run(const Caller& caller,
                                                      const ImageRequest& request,
                                                      providers::PartialSink* partials);

  // Fails and refunds an unfinished job with `reason` (kept as the error message and in the
  // ledger note), and deletes its stored inputs. False when the job had already finished.
  // Blocking.
  bool abandon(const Job& job, std::string_view error_code, const std::string& reason);
  // Blocking: rebuilds a stored async job (see prepared_job_codec.h), with fresh input URLs.
  Result<PreparedImageJob> restore(const Job& job);
  // Which channel serves `channel` (null when no longer configured).
  providers::ImageProvider* provider(std::string_view channel) const {
    return providers_.find(channel);
  }
  const PipelineSettings& settings() const { return settings_; }

 private:
  std::string new_job_id();
  void publish_inputs(PreparedImageJob& job) const;
  void delete_blobs(const std::vector<std::string>& ids);
  boost::asio::awaitable<void> delete_blobs_async(const std::vector<std::string>& ids);
  // Fails and refunds a job whose finishing write did not commit; if the refund does not
  // commit either, keeps trying in the background for a while (the next start refunds it too).
  boost::asio::awaitable<void> refund_unfinished(std::string job_id, std::string channel);
  // True once the job is refunded (or was settled by someone else).
  boost::asio::awaitable<bool> try_refund(const std::string& job_id, const JobFinish& refund);
  boost::asio::awaitable<void> retry_refund(std::string job_id, JobFinish refund);

  store::Store& store_;
  BlockingPool& pool_;
  blobs::BlobStore& blobs_;
  const Catalog& catalog_;
  const providers::ProviderRegistry& providers_;
  ReferenceLoader& references_;
  Random& random_;
  std::mutex random_mu_;
  const Clock& clock_;
  PipelineSettings settings_;
  ChannelLimiter limiter_;
};

}  // namespace ig::jobs
