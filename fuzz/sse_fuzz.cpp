// Fuzzes the upstream text/event-stream splitter (an OpenAI-compatible upstream's stream is
// untrusted): whatever the bytes, it must not crash, and feeding them in pieces of any size
// must give the same events as feeding them whole. The first byte picks the piece size.
#include <cstdint>
#include <deque>
#include <string_view>

#include "providers/openai/sse_parser.h"

namespace {

std::deque<ig::providers::SseEvent> parse(std::string_view text, std::size_t piece) {
  ig::providers::SseParser parser;
  std::deque<ig::providers::SseEvent> out;
  for (std::size_t at = 0; at < text.size(); at += piece) parser.feed(text.substr(at, piece), out);
  parser.finish(out);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t piece = 1 + data[0] % 16;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto whole = parse(text, text.size() + 1);
  if (parse(text, piece) != whole) __builtin_trap();
  if (parse(text, 1) != whole) __builtin_trap();
  return 0;
}
