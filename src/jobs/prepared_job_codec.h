#pragma once
// What an async job needs to run again after a restart, kept in its params_json under "task":
// the resolved size, the price inputs, every ImageTask field, and the reference images and mask
// as blob ids (their bytes live in the BlobStore). encode/decode round-trip exactly.

#include <optional>
#include <string>
#include <vector>

#include "blobs/blob_store.h"
#include "core/error.h"
#include "core/json.h"
#include "jobs/catalog.h"
#include "jobs/image_pipeline.h"
#include "jobs/job.h"

namespace ig::jobs {

// A stored input image: the blob holding its bytes and what the loader sniffed.
struct StoredInput {
  std::string blob_id;
  std::string mime;
  int width = 0;
  int height = 0;
};

// Writes the "task" object of params_json (one JSON object) to `out`. `inputs` and `mask` name
// the blobs of job.task.images and job.task.mask (same order).
void encode_prepared(JsonWriter& out, const PreparedImageJob& job,
                     const std::vector<StoredInput>& inputs,
                     const std::optional<StoredInput>& mask);

// Rebuilds the prepared job of a stored async job: model from the catalog, inputs read back
// from the blobs (blocking). kNotFound when the job carries no task (a sync job, or one created
// before tasks were persisted) or names a model that is no longer configured; kInternal when a
// blob is gone or the JSON is damaged.
Result<PreparedImageJob> decode_prepared(const Job& job, const Catalog& catalog,
                                         blobs::BlobStore& blobs);

// The blob ids a job's task holds (to delete them once the job is final). Empty if none.
std::vector<std::string> prepared_input_blobs(const Job& job);

}  // namespace ig::jobs
