#include "providers/openai/sse_parser.h"

#include <algorithm>

namespace ig::providers {

void SseParser::feed(std::string_view chunk, std::deque<SseEvent>& out) {
  buffer_.append(chunk);
  std::size_t start = 0;
  bool split_crlf = false;
  while (true) {
    const std::size_t lf = buffer_.find('\n', scan_);
    const std::size_t cr = buffer_.find('\r', scan_);
    const std::size_t end = std::min(lf, cr);
    if (end == std::string::npos) break;
    std::size_t next = end + 1;
    if (end == cr) {
      if (end + 1 == buffer_.size()) {  // a CR LF may be split between two chunks
        split_crlf = true;
        scan_ = end;
        break;
      }
      if (buffer_[end + 1] == '\n') next = end + 2;
    }
    take_line(std::string_view(buffer_.data() + start, end - start), out);
    start = next;
    scan_ = start;
  }
  buffer_.erase(0, start);
  scan_ = split_crlf ? scan_ - start : buffer_.size();
}

void SseParser::finish(std::deque<SseEvent>& out) {
  if (!buffer_.empty()) {
    std::string rest = std::move(buffer_);
    buffer_.clear();
    scan_ = 0;
    if (rest.back() == '\r') rest.pop_back();
    take_line(rest, out);
  }
  take_line("", out);
}

void SseParser::take_line(std::string_view line, std::deque<SseEvent>& out) {
  if (line.empty()) {
    if (has_data_) out.push_back(SseEvent{std::move(name_), std::move(data_)});
    name_.clear();
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment / keep-alive
  const std::size_t colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "event") {
    name_ = std::string(value);
  } else if (field == "data") {
    if (has_data_) data_ += '\n';
    data_.append(value);
    has_data_ = true;
  }
}

}  // namespace ig::providers
