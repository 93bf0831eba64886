#include "providers/openai/sse_parser.h"

#include <gtest/gtest.h>

#include <deque>
#include <string>
#include <vector>

namespace ig::providers {
namespace {

std::deque<SseEvent> parse_in_pieces(std::string_view text, std::size_t piece) {
  SseParser parser;
  std::deque<SseEvent> out;
  for (std::size_t at = 0; at < text.size(); at += piece) parser.feed(text.substr(at, piece), out);
  parser.finish(out);
  return out;
}

const std::deque<SseEvent> kExpected = {
    {"image_generation.partial_image", R"({"i":0})"},
    {"", "two\nlines"},
    {"image_generation.completed", R"({"done":true})"},
    {"", "[DONE]"},
};

std::string stream_with(std::string_view eol) {
  std::string text;
  auto line = [&](std::string_view l) { text.append(l).append(eol); };
  line(": keep-alive");
  line("");
  line("event: image_generation.partial_image");
  line(R"(data: {"i":0})");
  line("");
  line("data:two");
  line("data: lines");
  line("id: ignored");
  line("");
  line("event: image_generation.completed");
  line(R"(data: {"done":true})");
  line("");
  line("event: no data, dropped");
  line("");
  text.append("data: [DONE]");  // the last event lacks its blank line
  return text;
}

TEST(SseParserTest, EveryLineEndingAndEveryChunkingGiveTheSameEvents) {
  for (std::string_view eol : {"\n", "\r\n", "\r"}) {
    const std::string text = stream_with(eol);
    for (std::size_t piece = 1; piece <= text.size(); ++piece) {
      EXPECT_EQ(parse_in_pieces(text, piece), kExpected) << "eol "
                                                         << (eol == "\n"   ? "LF"
                                                             : eol == "\r" ? "CR"
                                                                           : "CRLF")
                                                         << ", pieces of " << piece;
    }
  }
}

TEST(SseParserTest, ACrAtTheEndOfAChunkWaitsForItsLf) {
  SseParser parser;
  std::deque<SseEvent> out;
  parser.feed("data: a\r", out);
  parser.feed("\n\r", out);  // CRLF (the line), then a CR that may start a CRLF blank line
  EXPECT_TRUE(out.empty());
  parser.feed("\n", out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "a");
}

}  // namespace
}  // namespace ig::providers
