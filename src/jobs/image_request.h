#pragma once
// The normalized image request: what every dialect's parser produces and the job pipeline
// consumes. Values are type-checked and model-independent checks are done; model-dependent
// ones (sizes, counts, prompt length, formats) belong to the pipeline.

#include <optional>
#include <string>
#include <vector>

#include "jobs/image_source.h"

namespace ig::jobs {

struct ImageRequest {
  bool edit_endpoint = false;
  bool input_object = false;  // seed 003 task form
  std::string model;
  std::string prompt;
  int n = 1;
  std::optional<std::string> size;
  std::optional<std::string> quality;
  std::optional<std::string> resolution;
  std::optional<std::string> aspect_ratio;
  std::string background = "auto";
  std::string moderation;
  std::string output_format = "png";
  bool output_format_set = false;
  std::optional<int> output_compression;
  std::optional<std::string> response_format;  // "b64_json" | "url"; absent = deployment default
  bool stream = false;
  int partial_images = 0;
  std::string user;
  std::optional<std::string> callback_url;
  std::optional<bool> nsfw_checker;
  std::vector<ImageSource> images;
  std::optional<ImageSource> mask;

  // A reference image turns any request into an edit.
  bool is_edit() const { return edit_endpoint || !images.empty(); }
};

}  // namespace ig::jobs
