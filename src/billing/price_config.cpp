#include "billing/price_config.h"

#include <charconv>
#include <cmath>
#include <initializer_list>
#include <sstream>

#include "billing/money.h"

namespace ig::billing {
namespace {

std::unexpected<Error> bad(const std::string& path, const std::string& why) {
  return std::unexpected(Error::invalid(path + ": " + why, path));
}

std::string join_path(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
}

std::string type_name(const toml::node& node) {
  std::ostringstream out;
  out << node.type();
  return out.str();
}

Result<void> only_keys(const toml::table& t, const std::string& prefix,
                       std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, node] : t) {
    bool known = false;
    for (std::string_view a : allowed) known = known || key.str() == a;
    if (!known) return bad(join_path(prefix, key.str()), "unknown key");
  }
  return {};
}

// A non-negative amount in micro-credits.
Result<Micros> read_amount(const toml::node& node, const std::string& path) {
  std::string text;
  if (const auto* i = node.as_integer()) {
    text = std::to_string(i->get());
  } else if (const auto* s = node.as_string()) {
    text = s->get();
  } else if (const auto* f = node.as_floating_point()) {
    if (!std::isfinite(f->get())) return bad(path, "amount must be finite");
    char buf[400];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f->get(), std::chars_format::fixed);
    if (ec != std::errc()) return bad(path, "amount out of range");
    text.assign(buf, end);
  } else {
    return bad(path, "expected an amount (10, \"4.7\" or 4.7), got " + type_name(node));
  }
  auto micros = parse_credits(text);
  if (!micros) return bad(path, micros.error().message);
  if (*micros < 0) return bad(path, "amount must not be negative");
  return *micros;
}

Result<std::optional<Micros>> optional_amount(const toml::table& t, const std::string& prefix,
                                              std::string_view key) {
  const toml::node* node = t.get(key);
  if (node == nullptr) return std::optional<Micros>{};
  auto amount = read_amount(*node, join_path(prefix, key));
  if (!amount) return std::unexpected(amount.error());
  return std::optional<Micros>{*amount};
}

Result<Micros> required_amount(const toml::table& t, const std::string& prefix,
                               std::string_view key) {
  auto amount = optional_amount(t, prefix, key);
  if (!amount) return std::unexpected(amount.error());
  if (!*amount) return bad(join_path(prefix, key), "required");
  return **amount;
}

Result<const toml::table*> required_table(const toml::table& t, const std::string& prefix,
                                          std::string_view key) {
  const std::string path = join_path(prefix, key);
  const toml::node* node = t.get(key);
  if (node == nullptr) return bad(path, "required");
  const auto* sub = node->as_table();
  if (sub == nullptr) return bad(path, "expected a table, got " + type_name(*node));
  return sub;
}

Result<std::string> optional_string(const toml::table& t, const std::string& prefix,
                                    std::string_view key, std::string fallback) {
  const toml::node* node = t.get(key);
  if (node == nullptr) return fallback;
  const auto* s = node->as_string();
  if (s == nullptr) {
    return bad(join_path(prefix, key), "expected a string, got " + type_name(*node));
  }
  return s->get();
}

Result<jobs::Tier> tier_key(std::string_view key, const std::string& path) {
  auto tier = jobs::parse_tier(key);
  if (!tier) return bad(path, "unknown tier (use 1K, 2K or 4K)");
  return *tier;
}

bool is_rendering_quality(std::string_view q) { return q == "low" || q == "medium" || q == "high"; }

// auto_as / default_quality at the rule's top level.
Result<void> read_quality_mapping(const toml::table& t, TierQualityTable& out) {
  auto auto_as = optional_string(t, "", "auto_as", "medium");
  if (!auto_as) return std::unexpected(auto_as.error());
  if (!is_rendering_quality(*auto_as)) return bad("auto_as", "must be low, medium or high");
  auto def = optional_string(t, "", "default_quality", "medium");
  if (!def) return std::unexpected(def.error());
  if (!is_rendering_quality(*def) && *def != "auto") {
    return bad("default_quality", "must be low, medium, high or auto");
  }
  out.auto_as = *auto_as;
  out.default_quality = *def;
  return {};
}

// { 1K = { low = .., medium = .., high = .. }, 2K = .., 4K = .. }
Result<void> read_tier_quality_cells(const toml::table& t, const std::string& prefix,
                                     TierQualityTable& out) {
  if (t.empty()) return bad(prefix, "must price at least one tier");
  std::array<bool, 3> seen{};
  for (const auto& [key, node] : t) {
    const std::string path = join_path(prefix, key.str());
    auto tier = tier_key(key.str(), path);
    if (!tier) return std::unexpected(tier.error());
    const int index = static_cast<int>(*tier);
    if (seen[index]) return bad(path, "tier given twice");
    seen[index] = true;
    const auto* row = node.as_table();
    if (row == nullptr) return bad(path, "expected a table of qualities, got " + type_name(node));
    if (row->empty()) return bad(path, "must price at least one quality");
    for (const auto& [quality, cell] : *row) {
      const std::string cell_path = join_path(path, quality.str());
      if (!is_rendering_quality(quality.str())) {
        return bad(cell_path, "unknown quality (use low, medium or high; auto bills as auto_as)");
      }
      auto amount = read_amount(cell, cell_path);
      if (!amount) return std::unexpected(amount.error());
      out.cells[index][std::string(quality.str())] = *amount;
    }
  }
  return {};
}

Result<PriceRule> read_flat(const toml::table& t) {
  if (auto ok = only_keys(t, "", {"kind", "per_image"}); !ok) return std::unexpected(ok.error());
  auto price = required_amount(t, "", "per_image");
  if (!price) return std::unexpected(price.error());
  return PriceRule{FlatPerImage{*price}};
}

Result<PriceRule> read_per_tier(const toml::table& t) {
  if (auto ok = only_keys(t, "", {"kind", "prices"}); !ok) return std::unexpected(ok.error());
  auto prices = required_table(t, "", "prices");
  if (!prices) return std::unexpected(prices.error());
  if ((*prices)->empty()) return bad("prices", "must price at least one tier");
  PerImageByTier rule;
  for (const auto& [key, node] : **prices) {
    const std::string path = join_path("prices", key.str());
    auto tier = tier_key(key.str(), path);
    if (!tier) return std::unexpected(tier.error());
    auto& slot = rule.per_image[static_cast<int>(*tier)];
    if (slot) return bad(path, "tier given twice");
    auto amount = read_amount(node, path);
    if (!amount) return std::unexpected(amount.error());
    slot = *amount;
  }
  return PriceRule{rule};
}

Result<PriceRule> read_per_tier_quality(const toml::table& t) {
  if (auto ok = only_keys(t, "", {"kind", "prices", "auto_as", "default_quality"}); !ok) {
    return std::unexpected(ok.error());
  }
  PerImageByTierQuality rule;
  if (auto ok = read_quality_mapping(t, rule.prices); !ok) return std::unexpected(ok.error());
  auto prices = required_table(t, "", "prices");
  if (!prices) return std::unexpected(prices.error());
  if (auto ok = read_tier_quality_cells(**prices, "prices", rule.prices); !ok) {
    return std::unexpected(ok.error());
  }
  return PriceRule{rule};
}

// rate x unit, exact in micro-credits per million tokens.
Result<Micros> scaled_rate(Micros rate, Micros unit, const std::string& path) {
  const __int128 product = static_cast<__int128>(rate) * unit;
  if (product % kMicrosPerCredit != 0) {
    return bad(path, "rate x unit is not a whole number of micro-credits per million tokens");
  }
  const __int128 micros = product / kMicrosPerCredit;
  if (micros > kMaxMicros) return bad(path, "rate x unit is too large");
  return static_cast<Micros>(micros);
}

Result<PriceRule> read_tokens(const toml::table& t) {
  if (auto ok = only_keys(
          t, "",
          {"kind", "unit", "text_in_per_million", "image_in_per_million", "image_out_per_million",
           "text_out_per_million", "auto_as", "default_quality", "reserve"});
      !ok) {
    return std::unexpected(ok.error());
  }
  ByTokens rule;
  auto unit = optional_amount(t, "", "unit");
  if (!unit) return std::unexpected(unit.error());
  const Micros unit_micros = unit->value_or(kMicrosPerCredit);
  if (unit_micros == 0) return bad("unit", "must be positive");

  struct RateKey {
    std::string_view key;
    Micros* out;
    bool required;
  };
  for (const RateKey& r :
       {RateKey{"text_in_per_million", &rule.rates.per_million_text_in, true},
        RateKey{"image_in_per_million", &rule.rates.per_million_image_in, true},
        RateKey{"image_out_per_million", &rule.rates.per_million_image_out, true},
        RateKey{"text_out_per_million", &rule.rates.per_million_text_out, false}}) {
    auto amount = optional_amount(t, "", r.key);
    if (!amount) return std::unexpected(amount.error());
    if (!*amount) {
      if (r.required) return bad(std::string(r.key), "required");
      continue;
    }
    auto scaled = scaled_rate(**amount, unit_micros, std::string(r.key));
    if (!scaled) return std::unexpected(scaled.error());
    *r.out = *scaled;
  }

  TierQualityTable mapping;
  if (auto ok = read_quality_mapping(t, mapping); !ok) return std::unexpected(ok.error());

  auto reserve = required_table(t, "", "reserve");
  if (!reserve) return std::unexpected(reserve.error());
  const toml::table& res = **reserve;
  if (auto ok = only_keys(res, "reserve",
                          {"per_image", "per_reference_image", "per_prompt_char", "table"});
      !ok) {
    return std::unexpected(ok.error());
  }
  auto per_image = required_amount(res, "reserve", "per_image");
  if (!per_image) return std::unexpected(per_image.error());
  if (*per_image == 0) return bad("reserve.per_image", "must be positive");
  rule.reserve.per_image = *per_image;
  auto per_ref = optional_amount(res, "reserve", "per_reference_image");
  if (!per_ref) return std::unexpected(per_ref.error());
  rule.reserve.per_reference_image = per_ref->value_or(0);
  auto per_char = optional_amount(res, "reserve", "per_prompt_char");
  if (!per_char) return std::unexpected(per_char.error());
  rule.reserve.per_prompt_char = per_char->value_or(0);
  if (res.get("table") != nullptr) {
    auto table = required_table(res, "reserve", "table");
    if (!table) return std::unexpected(table.error());
    if (auto ok = read_tier_quality_cells(**table, "reserve.table", mapping); !ok) {
      return std::unexpected(ok.error());
    }
    rule.reserve.per_image_table = std::move(mapping);
  }
  return PriceRule{std::move(rule)};
}

}  // namespace

Result<PriceRule> parse_price_rule(const toml::table& table) {
  try {
    const toml::node* kind_node = table.get("kind");
    if (kind_node == nullptr) return bad("kind", "required");
    const auto* kind = kind_node->as_string();
    if (kind == nullptr) return bad("kind", "expected a string, got " + type_name(*kind_node));
    const std::string& k = kind->get();
    if (k == "flat") return read_flat(table);
    if (k == "per_tier") return read_per_tier(table);
    if (k == "per_tier_quality") return read_per_tier_quality(table);
    if (k == "tokens") return read_tokens(table);
    return bad("kind", "unknown kind '" + k + "' (use flat, per_tier, per_tier_quality or tokens)");
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal, std::string("reading the price table: ") + e.what());
  }
}

}  // namespace ig::billing
