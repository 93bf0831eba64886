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
#include <optional>
#include <string>
#include <vector>

#include "blobs/blob_store.h"
#include "core/clock.h"
#include "core/random.h"
#include "http/blocking_pool.h"
#include "jobs/catalog.h"
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
                ReferenceLoader& references, Random& random, const Clock& clock);

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

  // Startup recovery for synchronous jobs: a job left queued or running by a previous process
  // had a caller that is gone, so it is failed and refunded (the reason is recorded). Blocking.
  Result<int> fail_interrupted_jobs();

 private:
  std::string new_job_id();

  store::Store& store_;
  BlockingPool& pool_;
  blobs::BlobStore& blobs_;
  const Catalog& catalog_;
  const providers::ProviderRegistry& providers_;
  ReferenceLoader& references_;
  Random& random_;
  std::mutex random_mu_;
  const Clock& clock_;
};

}  // namespace ig::jobs
