#include "api/image_request.h"

#include <boost/json.hpp>
#include <charconv>

#include "core/text.h"

namespace ig::api {
namespace json = boost::json;

namespace {

Error bad(std::string field, std::string message) {
  return Error::invalid(std::move(message), std::move(field));
}

bool one_of(std::string_view v, std::initializer_list<std::string_view> allowed) {
  for (auto a : allowed) {
    if (v == a) return true;
  }
  return false;
}

// Field values arrive as JSON values or multipart strings; both go through these checks.
class FieldSink {
 public:
  explicit FieldSink(ImageRequest& req) : req_(req) {}

  Result<void> string_field(std::string_view name, std::string_view v) {
    if (!is_valid_utf8(v)) return std::unexpected(bad(std::string(name), "'" + std::string(name) + "' must be valid UTF-8"));
    if (name == "model") {
      if (v.empty() || v.size() > 200) return std::unexpected(bad("model", "'model' must be 1-200 characters"));
      req_.model = v;
    } else if (name == "prompt") {
      if (utf8_length(v) > kMaxPromptChars) {
        return std::unexpected(bad("prompt", "'prompt' is longer than 32000 characters"));
      }
      req_.prompt = v;
    } else if (name == "size") {
      if (v.size() > 32) return std::unexpected(bad("size", "invalid 'size'"));
      req_.size = std::string(v);
    } else if (name == "quality") {
      if (!one_of(v, {"standard", "hd", "uhd", "low", "medium", "high", "auto"})) {
        return std::unexpected(bad("quality", "'quality' must be one of standard, hd, uhd, low, medium, high, auto; got '" + printable(v, 32) + "'"));
      }
      req_.quality = std::string(v);
    } else if (name == "resolution") {
      std::string lower = to_lower_ascii(v);
      if (!one_of(lower, {"1k", "2k", "4k"})) return std::unexpected(bad("resolution", "'resolution' must be 1K, 2K or 4K; got '" + printable(v, 32) + "'"));
      req_.resolution = lower;
    } else if (name == "aspect_ratio") {
      if (v.size() > 16) return std::unexpected(bad("aspect_ratio", "invalid 'aspect_ratio'"));
      req_.aspect_ratio = std::string(v);
    } else if (name == "background") {
      if (!one_of(v, {"transparent", "opaque", "auto"})) return std::unexpected(bad("background", "'background' must be transparent, opaque or auto"));
      req_.background = v;
    } else if (name == "moderation") {
      if (!one_of(v, {"low", "auto"})) return std::unexpected(bad("moderation", "'moderation' must be low or auto"));
      req_.moderation = v;
    } else if (name == "output_format") {
      std::string f = v == "jpg" ? "jpeg" : std::string(v);
      if (!one_of(f, {"png", "jpeg", "webp"})) return std::unexpected(bad("output_format", "'output_format' must be png, jpeg or webp"));
      req_.output_format = f;
      req_.output_format_set = true;
    } else if (name == "response_format") {
      if (!one_of(v, {"b64_json", "url"})) return std::unexpected(bad("response_format", "'response_format' must be b64_json or url"));
      req_.response_format = std::string(v);
    } else if (name == "user" || name == "safety_identifier") {
      if (v.size() > 256) return std::unexpected(bad(std::string(name), "'" + std::string(name) + "' is too long"));
      req_.user = v;
    } else if (name == "callback_url") {
      if (v.size() > 2048) return std::unexpected(bad("callback_url", "'callback_url' is too long"));
      req_.callback_url = std::string(v);
    } else if (name == "image_url" || name == "image_base64" || name == "image") {
      return add_image(name, v);
    } else if (name == "mask_url" || name == "mask_base64" || name == "mask") {
      return set_mask(name, v);
    }
    return {};
  }

  Result<void> int_field(std::string_view name, long long v) {
    if (name == "n") {
      if (v < 1 || v > 10) return std::unexpected(bad("n", "'n' must be between 1 and 10"));
      req_.n = static_cast<int>(v);
    } else if (name == "output_compression") {
      if (v < 0 || v > 100) return std::unexpected(bad("output_compression", "'output_compression' must be between 0 and 100"));
      req_.output_compression = static_cast<int>(v);
    } else if (name == "partial_images") {
      if (v < 0 || v > 3) return std::unexpected(bad("partial_images", "'partial_images' must be between 0 and 3"));
      req_.partial_images = static_cast<int>(v);
    }
    return {};
  }

  Result<void> bool_field(std::string_view name, bool v) {
    if (name == "stream") req_.stream = v;
    if (name == "nsfw_checker") req_.nsfw_checker = v;
    return {};
  }

  Result<void> add_image(std::string_view field, std::string_view v) {
    if (v.empty()) return std::unexpected(bad(std::string(field), "'" + std::string(field) + "' must not be empty"));
    if (req_.images.size() >= kMaxReferenceImages) {
      return std::unexpected(bad(std::string(field), "at most 16 reference images are allowed"));
    }
    req_.images.push_back(source(field, v));
    return {};
  }

  Result<void> set_mask(std::string_view field, std::string_view v) {
    if (v.empty()) return std::unexpected(bad(std::string(field), "'" + std::string(field) + "' must not be empty"));
    req_.mask = source(field, v);
    return {};
  }

  static ImageSource source(std::string_view field, std::string_view v) {
    ImageSource s;
    s.field = field;
    s.value = v;
    if (v.starts_with("data:")) {
      s.kind = ImageSource::Kind::kDataUrl;
    } else if (v.starts_with("http://") || v.starts_with("https://")) {
      s.kind = ImageSource::Kind::kUrl;
    } else if (field.ends_with("base64")) {
      s.kind = ImageSource::Kind::kBase64;
    } else {
      // Neither a URL nor a data: URL: treat as raw base64, as several resellers accept.
      s.kind = ImageSource::Kind::kBase64;
    }
    return s;
  }

 private:
  ImageRequest& req_;
};

bool is_string_field(std::string_view k) {
  return one_of(k, {"model", "prompt", "size", "quality", "resolution", "aspect_ratio", "background",
                    "moderation", "output_format", "response_format", "user", "safety_identifier",
                    "callback_url", "image_url", "image_base64", "mask_url", "mask_base64"});
}
bool is_int_field(std::string_view k) { return one_of(k, {"n", "output_compression", "partial_images"}); }
bool is_bool_field(std::string_view k) { return one_of(k, {"stream", "nsfw_checker"}); }

std::string_view kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64: return "an integer";
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "a value";
}

// An image reference inside JSON: "url", "data:...", or {"image_url": "..."} / {"url": "..."}.
Result<void> add_json_image(FieldSink& sink, std::string_view field, const json::value& v) {
  if (v.is_string()) return sink.add_image(field, v.get_string());
  if (v.is_object()) {
    const auto& o = v.get_object();
    for (auto key : {"image_url", "url", "b64_json"}) {
      if (auto it = o.find(key); it != o.end()) {
        if (it->value().is_string()) return sink.add_image(field, it->value().get_string());
        if (it->value().is_object()) return add_json_image(sink, field, it->value());
      }
    }
    if (o.contains("file_id")) {
      return std::unexpected(bad(std::string(field), "file_id references are not supported; send image_url"));
    }
  }
  return std::unexpected(bad(std::string(field), "'" + std::string(field) + "' entries must be URLs, data: URLs or {\"image_url\": ...} objects"));
}

Result<void> apply_json_object(FieldSink& sink, const json::object& obj) {
  for (const auto& kv : obj) {
    std::string_view k = kv.key();
    const json::value& v = kv.value();
    if (v.is_null()) continue;  // SDKs send explicit nulls for unset optionals
    if (is_string_field(k)) {
      if (!v.is_string()) return std::unexpected(bad(std::string(k), "'" + std::string(k) + "' must be a string, not " + std::string(kind_name(v))));
      if (auto r = sink.string_field(k, v.get_string()); !r) return r;
    } else if (is_int_field(k)) {
      if (!v.is_int64() && !v.is_uint64()) return std::unexpected(bad(std::string(k), "'" + std::string(k) + "' must be an integer, not " + std::string(kind_name(v))));
      long long n = v.is_int64() ? v.get_int64() : static_cast<long long>(std::min<std::uint64_t>(v.get_uint64(), 1u << 30));
      if (auto r = sink.int_field(k, n); !r) return r;
    } else if (is_bool_field(k)) {
      if (!v.is_bool()) return std::unexpected(bad(std::string(k), "'" + std::string(k) + "' must be a boolean, not " + std::string(kind_name(v))));
      if (auto r = sink.bool_field(k, v.get_bool()); !r) return r;
    } else if (k == "image_urls" || k == "images" || k == "image" || k == "image[]") {
      if (k == "image" && v.is_string()) {
        if (auto r = sink.add_image(k, v.get_string()); !r) return r;
        continue;
      }
      if (!v.is_array()) return std::unexpected(bad(std::string(k), "'" + std::string(k) + "' must be an array"));
      if (v.get_array().size() > kMaxReferenceImages) {
        return std::unexpected(bad(std::string(k), "at most 16 reference images are allowed; got " + std::to_string(v.get_array().size())));
      }
      for (const auto& item : v.get_array()) {
        if (auto r = add_json_image(sink, k, item); !r) return r;
      }
    } else if (k == "mask") {
      if (v.is_string()) {
        if (auto r = sink.set_mask(k, v.get_string()); !r) return r;
      } else if (v.is_object()) {
        const auto& o = v.get_object();
        const json::value* url = o.if_contains("image_url");
        if (url == nullptr) url = o.if_contains("url");
        if (url == nullptr || !url->is_string()) return std::unexpected(bad("mask", "'mask' must be {\"image_url\": ...}"));
        if (auto r = sink.set_mask(k, url->get_string()); !r) return r;
      } else {
        return std::unexpected(bad("mask", "'mask' must be a URL or {\"image_url\": ...}"));
      }
    }
    // Anything else is ignored: OpenAI clients send extra fields.
  }
  return {};
}

Result<long long> parse_form_int(std::string_view name, std::string_view v) {
  long long out = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size() || v.empty()) {
    return std::unexpected(bad(std::string(name), "'" + std::string(name) + "' must be an integer"));
  }
  return out;
}

}  // namespace

Result<ImageRequest> parse_image_json(std::string_view body, bool edit_endpoint) {
  boost::system::error_code ec;
  json::value root = json::parse(body, ec);
  if (ec) return fail(ErrorCode::kInvalidRequest, "Request body is not valid JSON: " + ec.message());
  if (!root.is_object()) return fail(ErrorCode::kInvalidRequest, "Request body must be a JSON object.");
  ImageRequest req;
  req.edit_endpoint = edit_endpoint;
  FieldSink sink(req);
  const auto& obj = root.get_object();
  if (auto r = apply_json_object(sink, obj); !r) return std::unexpected(r.error());
  if (const json::value* input = obj.if_contains("input"); input && !input->is_null()) {
    if (!input->is_object()) return fail(ErrorCode::kInvalidRequest, "'input' must be an object", "input");
    req.input_object = true;
    if (auto r = apply_json_object(sink, input->get_object()); !r) return std::unexpected(r.error());
  }
  if (req.background == "transparent" && req.output_format == "jpeg") {
    return fail(ErrorCode::kInvalidRequest, "transparent background needs output_format png or webp", "background");
  }
  return req;
}

Result<ImageRequest> parse_image_multipart(const std::vector<http::MultipartPart>& parts,
                                           bool edit_endpoint) {
  ImageRequest req;
  req.edit_endpoint = edit_endpoint;
  FieldSink sink(req);
  // A file part normally has a filename; some clients (a File with an empty name in the OpenAI
  // SDK) send only its Content-Type. A text field has none (parsed as text/plain) or a text/* one.
  auto is_file = [](const http::MultipartPart& part) {
    return part.filename.has_value() || !part.content_type.starts_with("text/");
  };
  for (const auto& part : parts) {
    std::string_view name = part.name;
    const bool file = is_file(part);
    if (file || name == "image" || name == "image[]" || name == "mask") {
      if (name == "image" || name == "image[]" || name.starts_with("image[")) {
        if (req.images.size() >= kMaxReferenceImages) {
          return fail(ErrorCode::kInvalidRequest, "at most 16 reference images are allowed", "image");
        }
        if (!file) {
          if (auto r = sink.add_image("image", part.data); !r) return std::unexpected(r.error());
          continue;
        }
        ImageSource s{ImageSource::Kind::kUpload, std::string(part.data), part.filename.value_or(""), part.content_type, std::string(name)};
        req.images.push_back(std::move(s));
        continue;
      }
      if (name == "mask") {
        if (!file) {
          if (auto r = sink.set_mask("mask", part.data); !r) return std::unexpected(r.error());
          continue;
        }
        req.mask = ImageSource{ImageSource::Kind::kUpload, std::string(part.data), part.filename.value_or(""), part.content_type, "mask"};
        continue;
      }
    }
    std::string_view v = part.data;
    if (is_string_field(name)) {
      if (auto r = sink.string_field(name, v); !r) return std::unexpected(r.error());
    } else if (is_int_field(name)) {
      auto n = parse_form_int(name, v);
      if (!n) return std::unexpected(n.error());
      if (auto r = sink.int_field(name, *n); !r) return std::unexpected(r.error());
    } else if (is_bool_field(name)) {
      if (v != "true" && v != "false") return fail(ErrorCode::kInvalidRequest, "'" + std::string(name) + "' must be true or false", std::string(name));
      if (auto r = sink.bool_field(name, v == "true"); !r) return std::unexpected(r.error());
    } else if (name == "image_urls" || name == "image_urls[]") {
      if (auto r = sink.add_image("image_urls", v); !r) return std::unexpected(r.error());
    }
  }
  if (req.background == "transparent" && req.output_format == "jpeg") {
    return fail(ErrorCode::kInvalidRequest, "transparent background needs output_format png or webp", "background");
  }
  return req;
}

}  // namespace ig::api
