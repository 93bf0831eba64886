#include "jobs/catalog.h"

namespace ig::jobs {

Catalog::Catalog(std::vector<ModelEntry> models) : models_(std::move(models)) {
  for (std::size_t i = 0; i < models_.size(); ++i) {
    index_.emplace(models_[i].id, i);
    for (const auto& alias : models_[i].aliases) index_.emplace(alias, i);
  }
}

const ModelEntry* Catalog::find(std::string_view id_or_alias) const {
  auto it = index_.find(std::string(id_or_alias));
  return it == index_.end() ? nullptr : &models_[it->second];
}

ModelEntry default_model_entry() {
  ModelEntry m;
  m.id = "gpt-image-2";
  m.aliases = {"gpt-image-2-all", "gpt-image-2-text-to-image", "gpt-image-2-image-to-image"};
  m.created = 1'745'000'000;
  m.capabilities.ratios_at_4k = {"16:9", "9:16", "2:1", "1:2", "21:9", "9:21"};
  billing::PerImageByTier tiers;
  tiers.per_image = {credits(1), credits(2), credits(3)};
  m.price.rule = tiers;
  m.channels = {"local"};
  return m;
}

}  // namespace ig::jobs
