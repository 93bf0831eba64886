#include "jobs/prepared_job_codec.h"

#include <boost/json.hpp>

#include "core/json.h"

namespace ig::jobs {
namespace json = boost::json;

namespace {

void write_input(JsonWriter& out, const StoredInput& in) {
  out.begin_object()
      .str("blob", in.blob_id)
      .str("mime", in.mime)
      .num("width", in.width)
      .num("height", in.height)
      .end_object();
}

std::string str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}

std::int64_t num(const json::object& o, std::string_view key, std::int64_t fallback = 0) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return fallback;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
  return fallback;
}

bool flag(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_bool() && v->get_bool();
}

const json::object* task_object(const Job& job, json::value& holder) {
  boost::system::error_code ec;
  holder = json::parse(job.params_json, ec);
  if (ec || !holder.is_object()) return nullptr;
  const json::value* task = holder.get_object().if_contains("task");
  return task != nullptr && task->is_object() ? &task->get_object() : nullptr;
}

Result<providers::InputImage> load_input(const json::value& v, blobs::BlobStore& blobs) {
  if (!v.is_object()) return fail(ErrorCode::kInternal, "damaged task input");
  const auto& o = v.get_object();
  const std::string blob = str(o, "blob");
  auto stat = blobs.stat(blob);
  if (!stat) return fail(ErrorCode::kInternal, "input image " + blob + " is gone");
  auto bytes = blobs.read(blob, 0, stat->size);
  if (!bytes)
    return fail(ErrorCode::kInternal, "input image " + blob + ": " + bytes.error().message);
  providers::InputImage img;
  img.bytes = std::move(*bytes);
  img.mime = str(o, "mime");
  img.width = static_cast<int>(num(o, "width"));
  img.height = static_cast<int>(num(o, "height"));
  return img;
}

}  // namespace

void encode_prepared(JsonWriter& out, const PreparedImageJob& job,
                     const std::vector<StoredInput>& inputs,
                     const std::optional<StoredInput>& mask) {
  const providers::ImageTask& t = job.task;
  out.begin_object().flag("async", job.async);
  out.key("size")
      .begin_object()
      .num("width", job.size.size.width)
      .num("height", job.size.size.height)
      .str("tier", to_string(job.size.tier))
      .str("label", job.size.label)
      .str("quality", job.size.quality);
  if (job.size.ratio) out.str("ratio", *job.size.ratio);
  out.end_object();
  out.key("price_input")
      .begin_object()
      .str("tier", to_string(job.price_input.tier))
      .str("quality", job.price_input.quality)
      .num("n", job.price_input.n)
      .num("reference_images", job.price_input.reference_images)
      .num("prompt_chars", job.price_input.prompt_chars)
      .end_object();
  out.flag("edit", t.edit)
      .str("prompt", t.prompt)
      .num("n", t.n)
      .str("size_label", t.size_label)
      .str("quality", t.quality)
      .str("background", t.background)
      .str("output_format", t.output_format)
      .str("moderation", t.moderation)
      .str("user", t.user)
      .num("deadline_ms", t.deadline_ms);
  out.key("inputs").begin_array();
  for (const auto& i : inputs) write_input(out, i);
  out.end_array();
  if (t.output_compression) out.num("output_compression", *t.output_compression);
  if (mask) {
    out.key("mask");
    write_input(out, *mask);
  }
  out.end_object();
}

Result<PreparedImageJob> decode_prepared(const Job& job, const Catalog& catalog,
                                         blobs::BlobStore& blobs) {
  json::value holder;
  const json::object* t = task_object(job, holder);
  if (t == nullptr) return fail(ErrorCode::kNotFound, "job " + job.id + " has no stored task");
  PreparedImageJob p;
  p.model = catalog.find(job.model);
  if (p.model == nullptr) {
    return fail(ErrorCode::kNotFound, "model '" + job.model + "' is no longer configured");
  }
  p.async = flag(*t, "async");
  p.job_id = job.id;
  p.user_id = job.user_id;
  p.price = job.reserved;
  const json::value* size = t->if_contains("size");
  const json::value* price = t->if_contains("price_input");
  if (size == nullptr || !size->is_object() || price == nullptr || !price->is_object()) {
    return fail(ErrorCode::kInternal, "job " + job.id + ": damaged task");
  }
  const auto& so = size->get_object();
  p.size.size.width = static_cast<int>(num(so, "width"));
  p.size.size.height = static_cast<int>(num(so, "height"));
  p.size.tier = parse_tier(str(so, "tier")).value_or(Tier::k1K);
  p.size.label = str(so, "label");
  p.size.quality = str(so, "quality");
  if (so.contains("ratio")) p.size.ratio = str(so, "ratio");
  const auto& po = price->get_object();
  p.price_input.tier = parse_tier(str(po, "tier")).value_or(Tier::k1K);
  p.price_input.quality = str(po, "quality");
  p.price_input.n = num(po, "n", 1);
  p.price_input.reference_images = num(po, "reference_images");
  p.price_input.prompt_chars = num(po, "prompt_chars");

  providers::ImageTask& task = p.task;
  task.job_id = job.id;
  task.model = p.model->id;
  task.edit = flag(*t, "edit");
  task.prompt = str(*t, "prompt");
  task.n = static_cast<int>(num(*t, "n", 1));
  task.width = p.size.size.width;
  task.height = p.size.size.height;
  task.size_label = str(*t, "size_label");
  task.quality = str(*t, "quality");
  task.background = str(*t, "background");
  task.output_format = str(*t, "output_format");
  task.moderation = str(*t, "moderation");
  task.user = str(*t, "user");
  task.deadline_ms = num(*t, "deadline_ms");
  if (t->contains("output_compression")) {
    task.output_compression = static_cast<int>(num(*t, "output_compression"));
  }
  if (const json::value* in = t->if_contains("inputs"); in != nullptr && in->is_array()) {
    for (const auto& v : in->get_array()) {
      auto img = load_input(v, blobs);
      if (!img) return std::unexpected(img.error());
      task.images.push_back(std::move(*img));
      p.input_blobs.push_back(str(v.get_object(), "blob"));
    }
  }
  if (const json::value* m = t->if_contains("mask"); m != nullptr) {
    auto img = load_input(*m, blobs);
    if (!img) return std::unexpected(img.error());
    task.mask = std::move(*img);
  }
  return p;
}

std::vector<std::string> prepared_input_blobs(const Job& job) {
  std::vector<std::string> out;
  json::value holder;
  const json::object* t = task_object(job, holder);
  if (t == nullptr) return out;
  if (const json::value* in = t->if_contains("inputs"); in != nullptr && in->is_array()) {
    for (const auto& v : in->get_array()) {
      if (v.is_object()) out.push_back(str(v.get_object(), "blob"));
    }
  }
  if (const json::value* m = t->if_contains("mask"); m != nullptr && m->is_object()) {
    out.push_back(str(m->get_object(), "blob"));
  }
  return out;
}

}  // namespace ig::jobs
