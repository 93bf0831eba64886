#pragma once
// Catalog: the models an operator sells, from configuration. For each model: its aliases, what
// it can do (sizes, counts, formats), how it is priced, and the provider channels that serve it
// in priority order. Immutable after startup, so readers need no locking.

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "billing/pricing.h"
#include "jobs/sizes.h"

namespace ig::jobs {

struct ModelEntry {
  std::string id;
  std::vector<std::string> aliases;
  std::string owned_by = "imagegate";
  std::int64_t created = 0;
  ModelCapabilities capabilities;
  billing::PriceRule price;
  std::vector<std::string> channels;  // provider channel names, tried in order
};

class Catalog {
 public:
  explicit Catalog(std::vector<ModelEntry> models);
  // By id or alias; null when unknown.
  const ModelEntry* find(std::string_view id_or_alias) const;
  const std::vector<ModelEntry>& models() const { return models_; }

 private:
  std::vector<ModelEntry> models_;
  std::unordered_map<std::string, std::size_t> index_;
};

// The shipped default: gpt-image-2 on the local renderer at seed 000's prices
// (1/2/3 credits for 1K/2K/4K; 4K only for 16:9, 9:16, 2:1, 1:2, 21:9, 9:21).
ModelEntry default_model_entry();

}  // namespace ig::jobs
