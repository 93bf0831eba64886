#pragma once
// JSON text rendering. Boost.JSON prints doubles as "4.7E0"; clients and humans expect "4.7",
// so replies are serialized here with the shortest round-trip form of every number.

#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ig {

std::string to_json_text(const boost::json::value& value);

// JsonWriter: appends JSON text straight to a string, for hot paths that would otherwise build a
// boost::json::object only to serialize it (an allocation per key and per string value).
// Strings are escaped exactly as to_json_text escapes them. The caller keeps begin/end balanced
// and names a key before each value inside an object; commas are placed here.
class JsonWriter {
 public:
  JsonWriter() = default;
  explicit JsonWriter(std::size_t reserve) { out_.reserve(reserve); }
  JsonWriter& begin_object() { return open('{'); }
  JsonWriter& end_object() { return close('}'); }
  JsonWriter& begin_array() { return open('['); }
  JsonWriter& end_array() { return close(']'); }
  JsonWriter& key(std::string_view name);
  JsonWriter& string(std::string_view value);
  JsonWriter& number(std::int64_t value);
  JsonWriter& boolean(bool value);
  JsonWriter& value(const boost::json::value& value);

  // key + value, for the common case.
  JsonWriter& str(std::string_view name, std::string_view v) { return key(name).string(v); }
  JsonWriter& num(std::string_view name, std::int64_t v) { return key(name).number(v); }
  JsonWriter& flag(std::string_view name, bool v) { return key(name).boolean(v); }

  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void separate() {
    if (need_comma_) out_ += ',';
  }
  JsonWriter& open(char c) {
    separate();
    out_ += c;
    need_comma_ = false;
    return *this;
  }
  JsonWriter& close(char c) {
    out_ += c;
    need_comma_ = true;
    return *this;
  }
  std::string out_;
  bool need_comma_ = false;  // a value was written last in the open container
};

}  // namespace ig
