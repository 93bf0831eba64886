#pragma once
// An incremental text/event-stream splitter for upstream streams (untrusted bytes). Promises:
// events come out the same however the bytes are chunked; lines end with LF, CRLF or a lone CR;
// `:` comments are skipped; an event is its `event:` name and its `data:` lines joined by "\n"
// (an event without data is dropped); finish() flushes a last event that lacks its blank line.
// Cheap per chunk (it scans only the new bytes), so it can run on the HTTP client's strand.

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>

namespace ig::providers {

struct SseEvent {
  std::string name;
  std::string data;
  bool operator==(const SseEvent&) const = default;
};

class SseParser {
 public:
  void feed(std::string_view chunk, std::deque<SseEvent>& out);
  void finish(std::deque<SseEvent>& out);

 private:
  void take_line(std::string_view line, std::deque<SseEvent>& out);

  std::string buffer_;
  std::size_t scan_ = 0;
  std::string name_;
  std::string data_;
  bool has_data_ = false;
};

}  // namespace ig::providers
