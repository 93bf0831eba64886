#pragma once
// ProviderRegistry: channel name -> adapter. Owns the adapters; filled once by the composition
// root, read-only afterwards.

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "providers/provider.h"

namespace ig::providers {

class ProviderRegistry {
 public:
  void add(std::unique_ptr<ImageProvider> provider) {
    const std::string name = provider->channel();
    providers_[name] = std::move(provider);
  }
  ImageProvider* find(std::string_view channel) const {
    auto it = providers_.find(std::string(channel));
    return it == providers_.end() ? nullptr : it->second.get();
  }
  bool contains(std::string_view channel) const { return find(channel) != nullptr; }

 private:
  std::map<std::string, std::unique_ptr<ImageProvider>> providers_;
};

}  // namespace ig::providers
