#include "providers/openai/openai_provider.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "net/fake_http_client.h"

namespace ig::providers {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;

constexpr char kBase[] = "https://up.example/v1";
constexpr char kGenerations[] = "https://up.example/v1/images/generations";
constexpr char kEdits[] = "https://up.example/v1/images/edits";

void put_be32(std::string& s, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((v >> shift) & 0xff);
}

// A PNG header that probe_image accepts (signature, IHDR, IEND); `tag` varies the bytes.
std::string png(int width, int height, char tag = 'x') {
  std::string s("\x89PNG\r\n\x1a\n", 8);
  put_be32(s, 13);
  s += "IHDR";
  put_be32(s, static_cast<std::uint32_t>(width));
  put_be32(s, static_cast<std::uint32_t>(height));
  s += std::string("\x08\x02\x00\x00\x00", 5);
  s += "crc!";
  put_be32(s, 0);
  s += "IEND";
  s += tag;
  return s;
}

// A baseline JPEG header: SOI, SOF0 with the size.
std::string jpeg(int width, int height) {
  std::string s("\xFF\xD8\xFF\xC0\x00\x11\x08", 7);
  s += static_cast<char>(height >> 8);
  s += static_cast<char>(height & 0xff);
  s += static_cast<char>(width >> 8);
  s += static_cast<char>(width & 0xff);
  s += std::string(10, '\x01');
  return s;
}

std::string b64(std::string_view bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

std::string usage_json() {
  return R"({"input_tokens":50,"output_tokens":272,"total_tokens":322,)"
         R"("input_tokens_details":{"text_tokens":40,"image_tokens":10}})";
}

std::string sse(std::string_view event, const json::object& data) {
  return "event: " + std::string(event) + "\ndata: " + json::serialize(data) + "\n\n";
}

OpenAiChannelSettings settings() {
  OpenAiChannelSettings s;
  s.name = "openai-main";
  s.base_url = std::string(kBase) + "/";
  s.api_key = "sk-upstream";
  s.timeout_ms = 123'000;
  s.connect_timeout_ms = 4'000;
  s.proxy = "http://proxy.local:3128";
  s.extra_headers = {{"OpenAI-Organization", "org-1"}, {"X-Extra", "yes"}};
  s.model_map = {{"gpt-image-2", "gpt-image-1.5"}, {"dalle", "dall-e-3"}};
  s.max_response_bytes = 1 << 20;
  return s;
}

ImageTask generation_task() {
  ImageTask t;
  t.job_id = "job-1";
  t.model = "gpt-image-2";
  t.prompt = "a white siamese cat";
  t.n = 2;
  t.width = 1536;
  t.height = 1024;
  t.quality = "high";
  t.background = "transparent";
  t.output_format = "webp";
  t.output_compression = 80;
  t.moderation = "low";
  t.user = "user-7";
  return t;
}

// Records partial images as the provider hands them over; thread-safe so a test thread can
// wait for a delivery.
class RecordingSink final : public PartialSink {
 public:
  asio::awaitable<void> partial(int index, const OutputImage& image) override {
    {
      std::lock_guard lock(mutex_);
      indexes_.push_back(index);
      images_.push_back(image);
    }
    cv_.notify_all();
    co_return;
  }

  bool wait_for(std::size_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return indexes_.size() >= count; });
  }
  std::vector<int> indexes() const {
    std::lock_guard lock(mutex_);
    return indexes_;
  }
  std::vector<OutputImage> images() const {
    std::lock_guard lock(mutex_);
    return images_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<int> indexes_;
  std::vector<OutputImage> images_;
};

std::expected<ImageResult, ProviderError> run(ImageProvider& provider, const ImageTask& task,
                                              PartialSink* sink = nullptr) {
  asio::io_context ioc;
  auto future = asio::co_spawn(ioc, provider.generate(task, sink), asio::use_future);
  ioc.run();
  return future.get();
}

json::object body_json(const net::HttpRequest& request) {
  return json::parse(request.body).as_object();
}

const net::MimeField* find_field(const net::HttpRequest& request, std::string_view name) {
  for (const auto& f : request.mime) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

std::string header(const net::HttpRequest& request, std::string_view name) {
  for (const auto& [k, v] : request.headers) {
    if (k == name) return v;
  }
  return "<none>";
}

class OpenAiProviderTest : public ::testing::Test {
 protected:
  net::FakeHttpClient client_;
  OpenAiProvider provider_{client_, settings()};

  std::string ok_reply(std::string_view bytes) {
    return R"({"created":1,"data":[{"b64_json":")" + b64(bytes) + R"("}],"usage":)" + usage_json() +
           "}";
  }
};

// --- request shape --------------------------------------------------------------------------

TEST_F(OpenAiProviderTest, GenerationRequestShape) {
  client_.add_response(kGenerations, 200, ok_reply(png(1536, 1024)));
  ImageTask task = generation_task();
  ASSERT_TRUE(run(provider_, task).has_value());

  ASSERT_EQ(client_.request_count(), 1u);
  net::HttpRequest request = *client_.last_request();
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.url, kGenerations);
  EXPECT_EQ(header(request, "Authorization"), "Bearer sk-upstream");
  EXPECT_EQ(header(request, "Content-Type"), "application/json");
  EXPECT_EQ(header(request, "OpenAI-Organization"), "org-1");
  EXPECT_EQ(header(request, "X-Extra"), "yes");
  EXPECT_TRUE(request.mime.empty());
  EXPECT_EQ(request.total_timeout_ms, 123'000);
  EXPECT_EQ(request.connect_timeout_ms, 4'000);
  EXPECT_EQ(request.proxy, "http://proxy.local:3128");
  EXPECT_EQ(request.max_response_bytes, std::size_t{1} << 20);
  EXPECT_FALSE(request.on_body_chunk);

  json::object body = body_json(request);
  EXPECT_EQ(body.at("model"), "gpt-image-1.5");  // mapped
  EXPECT_EQ(body.at("prompt"), "a white siamese cat");
  EXPECT_EQ(body.at("n"), 2);
  EXPECT_EQ(body.at("size"), "1536x1024");
  EXPECT_EQ(body.at("quality"), "high");
  EXPECT_EQ(body.at("background"), "transparent");
  EXPECT_EQ(body.at("output_format"), "webp");
  EXPECT_EQ(body.at("output_compression"), 80);
  EXPECT_EQ(body.at("moderation"), "low");
  EXPECT_EQ(body.at("user"), "user-7");
  EXPECT_FALSE(body.contains("response_format"));  // gpt-image always answers b64_json
  EXPECT_FALSE(body.contains("stream"));
  EXPECT_FALSE(body.contains("partial_images"));
  EXPECT_EQ(body.size(), 10u);
}

TEST_F(OpenAiProviderTest, DefaultsAreOmittedAndUnmappedModelsPassThrough) {
  client_.add_response(kGenerations, 200, ok_reply(png(1024, 1024)));
  ImageTask task;
  task.model = "gpt-image-1";
  task.prompt = "p";
  task.quality = "standard";
  task.background = "auto";
  task.output_format = "png";
  task.output_compression = 50;  // meaningless for png: not sent
  ASSERT_TRUE(run(provider_, task).has_value());
  json::object body = body_json(*client_.last_request());
  EXPECT_EQ(body.at("model"), "gpt-image-1");
  EXPECT_EQ(body.at("n"), 1);
  EXPECT_EQ(body.at("size"), "1024x1024");
  EXPECT_EQ(body.at("output_format"), "png");
  for (const char* absent :
       {"quality", "background", "output_compression", "moderation", "user", "response_format"}) {
    EXPECT_FALSE(body.contains(absent)) << absent;
  }
}

TEST(OpenAiQualityTest, Mapping) {
  EXPECT_EQ(map_quality("low", "gpt-image-1"), "low");
  EXPECT_EQ(map_quality("medium", "gpt-image-1"), "medium");
  EXPECT_EQ(map_quality("high", "gpt-image-1"), "high");
  EXPECT_EQ(map_quality("auto", "gpt-image-1"), "auto");
  EXPECT_EQ(map_quality("HIGH", "gpt-image-1"), "high");
  EXPECT_EQ(map_quality("standard", "gpt-image-1"), "");
  // Size tiers, priced at the default quality: the upstream renders at its default too.
  EXPECT_EQ(map_quality("hd", "gpt-image-1"), "");
  EXPECT_EQ(map_quality("uhd", "gpt-image-1"), "");
  EXPECT_EQ(map_quality("", "gpt-image-1"), "");
  EXPECT_EQ(map_quality("ultra", "gpt-image-1"), "");
  EXPECT_EQ(map_quality("standard", "dall-e-3"), "standard");
  EXPECT_EQ(map_quality("hd", "dall-e-3"), "hd");
  EXPECT_EQ(map_quality("uhd", "dall-e-3"), "hd");
  EXPECT_EQ(map_quality("high", "dall-e-3"), "hd");
  EXPECT_EQ(map_quality("low", "dall-e-3"), "");
}

TEST_F(OpenAiProviderTest, DalleModelsAskForB64AndGetNoGptImageFields) {
  client_.add_response(kGenerations, 200, ok_reply(png(1024, 1024)));
  ImageTask task = generation_task();
  task.model = "dalle";
  task.quality = "hd";
  ASSERT_TRUE(run(provider_, task).has_value());
  json::object body = body_json(*client_.last_request());
  EXPECT_EQ(body.at("model"), "dall-e-3");
  EXPECT_EQ(body.at("response_format"), "b64_json");
  EXPECT_EQ(body.at("quality"), "hd");
  for (const char* absent : {"background", "output_format", "output_compression", "moderation"}) {
    EXPECT_FALSE(body.contains(absent)) << absent;
  }
}

TEST_F(OpenAiProviderTest, EditRequestIsMultipartWithImageFilesAndMask) {
  client_.add_response(kEdits, 200, ok_reply(png(1024, 1024)));
  ImageTask task = generation_task();
  task.edit = true;
  task.images.push_back(InputImage{png(512, 512, 'a'), "image/png", 512, 512});
  task.images.push_back(InputImage{jpeg(640, 480), "image/jpeg", 640, 480});
  task.images.push_back(InputImage{"RIFFxxxxWEBP", "image/webp", 1, 1});
  task.mask = InputImage{png(512, 512, 'm'), "image/png", 512, 512};
  ASSERT_TRUE(run(provider_, task).has_value());

  net::HttpRequest request = *client_.last_request();
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.url, kEdits);
  EXPECT_EQ(header(request, "Authorization"), "Bearer sk-upstream");
  EXPECT_EQ(header(request, "Content-Type"), "<none>");  // curl sets the multipart boundary
  EXPECT_EQ(header(request, "X-Extra"), "yes");
  EXPECT_TRUE(request.body.empty());

  std::vector<const net::MimeField*> files;
  for (const auto& f : request.mime) {
    if (f.name == "image[]") files.push_back(&f);
  }
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0]->filename, "image_1.png");
  EXPECT_EQ(files[0]->content_type, "image/png");
  EXPECT_EQ(files[0]->value, png(512, 512, 'a'));
  EXPECT_EQ(files[1]->filename, "image_2.jpg");
  EXPECT_EQ(files[1]->content_type, "image/jpeg");
  EXPECT_EQ(files[1]->value, jpeg(640, 480));
  EXPECT_EQ(files[2]->filename, "image_3.webp");
  EXPECT_EQ(files[2]->content_type, "image/webp");
  const net::MimeField* mask = find_field(request, "mask");
  ASSERT_NE(mask, nullptr);
  EXPECT_EQ(mask->filename, "mask.png");
  EXPECT_EQ(mask->content_type, "image/png");
  EXPECT_EQ(mask->value, png(512, 512, 'm'));

  const std::vector<std::pair<std::string, std::string>> expected = {
      {"model", "gpt-image-1.5"},
      {"prompt", "a white siamese cat"},
      {"n", "2"},
      {"size", "1536x1024"},
      {"quality", "high"},
      {"background", "transparent"},
      {"output_format", "webp"},
      {"output_compression", "80"},
      {"user", "user-7"}};
  for (const auto& [name, value] : expected) {
    const net::MimeField* f = find_field(request, name);
    ASSERT_NE(f, nullptr) << name;
    EXPECT_EQ(f->value, value) << name;
    EXPECT_FALSE(f->filename.has_value()) << name;
  }
  EXPECT_EQ(find_field(request, "moderation"), nullptr);  // not an images.edit parameter
  EXPECT_EQ(find_field(request, "stream"), nullptr);
  EXPECT_EQ(request.mime.size(), expected.size() + 4);
}

// --- reply parsing ---------------------------------------------------------------------------

TEST_F(OpenAiProviderTest, ParsesImagesRevisedPromptAndUsage) {
  const std::string body = R"({"created":1,"data":[{"b64_json":")" + b64(png(1536, 1024)) +
                           R"(","revised_prompt":"a fluffy cat"},{"b64_json":")" +
                           b64(jpeg(1024, 768)) + R"("}],"usage":)" + usage_json() + "}";
  client_.add_response(kGenerations, 200, body);
  ImageTask task = generation_task();
  auto result = run(provider_, task);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  ASSERT_EQ(result->images.size(), 2u);
  EXPECT_EQ(result->images[0].bytes, png(1536, 1024));
  EXPECT_EQ(result->images[0].mime, "image/png");
  EXPECT_EQ(result->images[0].width, 1536);
  EXPECT_EQ(result->images[0].height, 1024);
  EXPECT_EQ(result->images[0].revised_prompt, "a fluffy cat");
  EXPECT_EQ(result->images[1].mime, "image/jpeg");
  EXPECT_EQ(result->images[1].width, 1024);
  EXPECT_EQ(result->images[1].height, 768);
  EXPECT_FALSE(result->images[1].revised_prompt.has_value());
  ASSERT_TRUE(result->usage.has_value());
  EXPECT_EQ(result->usage->input_text_tokens, 40);
  EXPECT_EQ(result->usage->input_image_tokens, 10);
  EXPECT_EQ(result->usage->output_tokens, 272);
}

TEST_F(OpenAiProviderTest, UsageWithoutDetailsCountsInputAsTextAndNoUsageIsNullopt) {
  client_.add_response(kGenerations, 200,
                       R"({"data":[{"b64_json":")" + b64(png(8, 8)) +
                           R"("}],"usage":{"input_tokens":6,"output_tokens":275}})");
  ImageTask task = generation_task();
  auto result = run(provider_, task);
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->usage.has_value());
  EXPECT_EQ(result->usage->input_text_tokens, 6);
  EXPECT_EQ(result->usage->input_image_tokens, 0);
  EXPECT_EQ(result->usage->output_tokens, 275);

  net::FakeHttpClient other;
  OpenAiProvider provider(other, settings());
  other.add_response(kGenerations, 200, R"({"data":[{"b64_json":")" + b64(png(8, 8)) + "\"}]}");
  auto bare = run(provider, task);
  ASSERT_TRUE(bare.has_value());
  EXPECT_FALSE(bare->usage.has_value());
}

// A usage the adapter cannot read must not settle a token-priced job at zero: it is unknown
// (nullopt) and the job settles at its reservation.
TEST_F(OpenAiProviderTest, UnreadableUsageIsUnknownNotZero) {
  ImageTask task = generation_task();
  for (const char* usage :
       {R"({})", R"({"total_tokens":281})", R"({"input_tokens":6,"output_tokens":"275"})",
        R"({"input_tokens":6,"output_tokens":-5})", R"({"input_tokens":-1,"output_tokens":5})",
        R"({"input_tokens":6,"output_tokens":2.5})",
        R"({"output_tokens":5,"input_tokens_details":{"text_tokens":-3}})"}) {
    net::FakeHttpClient client;
    OpenAiProvider provider(client, settings());
    client.add_response(
        kGenerations, 200,
        R"({"data":[{"b64_json":")" + b64(png(8, 8)) + R"("}],"usage":)" + usage + "}");
    auto result = run(provider, task);
    ASSERT_TRUE(result.has_value()) << usage;
    EXPECT_FALSE(result->usage.has_value()) << usage;
  }
  // Chat-style names are read like OpenAI's image names.
  net::FakeHttpClient client;
  OpenAiProvider provider(client, settings());
  client.add_response(kGenerations, 200,
                      R"({"data":[{"b64_json":")" + b64(png(8, 8)) +
                          R"("}],"usage":{"prompt_tokens":6,"completion_tokens":275}})");
  auto chat = run(provider, task);
  ASSERT_TRUE(chat.has_value() && chat->usage.has_value());
  EXPECT_EQ(chat->usage->input_text_tokens, 6);
  EXPECT_EQ(chat->usage->output_tokens, 275);
}

TEST_F(OpenAiProviderTest, AcceptsDataUrlPrefixAndWrappedBase64) {
  std::string wrapped = b64(png(64, 32));
  wrapped.insert(10, "\\n");  // a JSON-escaped line break inside the base64
  client_.add_response(kGenerations, 200,
                       R"({"data":[{"b64_json":"data:image/png;base64,)" + wrapped + R"("}]})");
  ImageTask task = generation_task();
  auto result = run(provider_, task);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(result->images[0].bytes, png(64, 32));
  EXPECT_EQ(result->images[0].width, 64);
}

TEST_F(OpenAiProviderTest, UrlRepliesAreDownloadedWithoutOurKeyUnderTheStrictPolicy) {
  client_.add_response(kGenerations, 200,
                       R"({"data":[{"url":"https://cdn.example/img/1.png","revised_prompt":"r"}],)"
                       R"("usage":)" +
                           usage_json() + "}");
  client_.add_response("https://cdn.example/img/1.png", 200, png(1024, 1536));
  ImageTask task = generation_task();
  auto result = run(provider_, task);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  ASSERT_EQ(result->images.size(), 1u);
  EXPECT_EQ(result->images[0].bytes, png(1024, 1536));
  EXPECT_EQ(result->images[0].width, 1024);
  EXPECT_EQ(result->images[0].height, 1536);
  EXPECT_EQ(result->images[0].revised_prompt, "r");
  EXPECT_TRUE(result->usage.has_value());

  auto requests = client_.requests();
  ASSERT_EQ(requests.size(), 2u);
  const net::HttpRequest& get = requests[1];
  EXPECT_EQ(get.method, "GET");
  EXPECT_EQ(get.url, "https://cdn.example/img/1.png");
  EXPECT_EQ(header(get, "Authorization"), "<none>");
  EXPECT_EQ(get.max_response_bytes, std::size_t{1} << 20);
  EXPECT_EQ(get.proxy, "http://proxy.local:3128");
  ASSERT_TRUE(get.address_policy.has_value());
  EXPECT_EQ(*get.address_policy, net::AddressPolicy{});
}

TEST_F(OpenAiProviderTest, UrlOnTheUpstreamOriginUsesTheChannelPolicy) {
  OpenAiChannelSettings s = settings();
  s.address_policy = net::AddressPolicy{.allow_loopback = true, .allow_private = true};
  OpenAiProvider provider(client_, s);
  client_.add_response(kGenerations, 200, R"({"data":[{"url":"https://UP.example:443/f/1.png"}]})");
  client_.add_response("https://UP.example:443/f/1.png", 200, png(16, 16));
  ImageTask task = generation_task();
  ASSERT_TRUE(run(provider, task).has_value());
  auto requests = client_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].address_policy, s.address_policy);
  EXPECT_EQ(requests[1].address_policy, s.address_policy);
}

TEST_F(OpenAiProviderTest, FailedOrOversizedDownloadsAreFailures) {
  client_.add_response(kGenerations, 200, R"({"data":[{"url":"https://cdn.example/a.png"}]})");
  client_.add_response("https://cdn.example/a.png", 404, "gone");
  ImageTask task = generation_task();
  auto missing = run(provider_, task);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().kind, FailureKind::kFailed);

  net::FakeHttpClient other;
  OpenAiProvider provider(other, settings());
  other.add_response(kGenerations, 200, R"({"data":[{"url":"https://cdn.example/b.png"}]})");
  other.add_response("https://cdn.example/b.png", 200, std::string((1 << 20) + 1, 'x'));
  auto huge = run(provider, task);
  ASSERT_FALSE(huge.has_value());
  EXPECT_EQ(huge.error().kind, FailureKind::kFailed);
  EXPECT_NE(huge.error().message.find("too_large"), std::string::npos) << huge.error().message;

  net::FakeHttpClient third;
  OpenAiProvider provider3(third, settings());
  third.add_response(kGenerations, 200, R"({"data":[{"url":"file:///etc/passwd"}]})");
  auto local = run(provider3, task);
  ASSERT_FALSE(local.has_value());
  EXPECT_EQ(local.error().kind, FailureKind::kFailed);
  EXPECT_EQ(third.request_count(), 1u);  // never fetched
}

// --- error mapping ---------------------------------------------------------------------------

struct StatusRow {
  int status;
  FailureKind kind;
};

class OpenAiProviderStatusTest : public ::testing::TestWithParam<StatusRow> {};

TEST_P(OpenAiProviderStatusTest, MapsUpstreamStatus) {
  const StatusRow row = GetParam();
  EXPECT_EQ(classify_status(row.status), row.kind);
  for (bool stream : {false, true}) {
    net::FakeHttpClient client;
    OpenAiProvider provider(client, settings());
    client.add_response(kGenerations, row.status,
                        R"({"error":{"message":"upstream says no","type":"x","code":null}})");
    ImageTask task = generation_task();
    RecordingSink sink;
    if (stream) task.partial_images = 2;
    auto result = run(provider, task, stream ? &sink : nullptr);
    ASSERT_FALSE(result.has_value());
    EXPECT_EQ(result.error().kind, row.kind) << row.status << " stream=" << stream;
    EXPECT_EQ(result.error().upstream_status, row.status);
    EXPECT_NE(result.error().message.find("upstream says no"), std::string::npos)
        << result.error().message;
    if (row.status == 401 || row.status == 403) {
      EXPECT_NE(result.error().message.find("upstream rejected our credentials"),
                std::string::npos);
    }
    if (row.kind == FailureKind::kInvalidRequest) {
      EXPECT_EQ(result.error().message, "upstream says no");  // passed on verbatim
    }
    EXPECT_TRUE(sink.indexes().empty());
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllRows, OpenAiProviderStatusTest,
    ::testing::Values(
        StatusRow{429, FailureKind::kRetryable}, StatusRow{500, FailureKind::kRetryable},
        StatusRow{502, FailureKind::kRetryable}, StatusRow{503, FailureKind::kRetryable},
        StatusRow{504, FailureKind::kRetryable}, StatusRow{529, FailureKind::kRetryable},
        StatusRow{401, FailureKind::kRetryable}, StatusRow{403, FailureKind::kRetryable},
        StatusRow{400, FailureKind::kInvalidRequest}, StatusRow{422, FailureKind::kInvalidRequest},
        StatusRow{404, FailureKind::kFailed}, StatusRow{409, FailureKind::kFailed},
        StatusRow{413, FailureKind::kFailed}, StatusRow{501, FailureKind::kFailed},
        StatusRow{302, FailureKind::kFailed}),
    [](const ::testing::TestParamInfo<StatusRow>& info) {
      return "Http" + std::to_string(info.param.status);
    });

struct TransportRow {
  net::NetErrc code;
  bool sent_nothing;
  FailureKind kind;
  int status = 0;  // a status line that arrived before the failure
};

class OpenAiProviderTransportTest : public ::testing::TestWithParam<TransportRow> {};

TEST_P(OpenAiProviderTransportTest, MapsTransportErrors) {
  const TransportRow row = GetParam();
  for (bool stream : {false, true}) {
    net::FakeHttpClient client;
    OpenAiProvider provider(client, settings());
    client.add_response(kGenerations, std::unexpected(net::NetError{row.code, "boom",
                                                                    row.sent_nothing, row.status}));
    ImageTask task = generation_task();
    RecordingSink sink;
    if (stream) task.partial_images = 1;
    auto result = run(provider, task, stream ? &sink : nullptr);
    ASSERT_FALSE(result.has_value());
    EXPECT_EQ(result.error().kind, row.kind) << net::to_string(row.code) << " " << stream;
    EXPECT_EQ(result.error().upstream_status, 0);
    EXPECT_NE(result.error().message.find(net::to_string(row.code)), std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllRows, OpenAiProviderTransportTest,
    ::testing::Values(TransportRow{net::NetErrc::kConnect, true, FailureKind::kRetryable},
                      TransportRow{net::NetErrc::kTls, true, FailureKind::kRetryable},
                      TransportRow{net::NetErrc::kBlockedAddress, true, FailureKind::kRetryable},
                      // No answer before the deadline: REQUIREMENTS §6 fails over.
                      TransportRow{net::NetErrc::kTimeout, false, FailureKind::kRetryable},
                      // A 200 arrived, then the body stalled: the upstream did the work.
                      TransportRow{net::NetErrc::kTimeout, false, FailureKind::kFailed, 200},
                      TransportRow{net::NetErrc::kReset, false, FailureKind::kFailed},
                      TransportRow{net::NetErrc::kReset, false, FailureKind::kFailed, 200},
                      TransportRow{net::NetErrc::kTooLarge, false, FailureKind::kFailed},
                      TransportRow{net::NetErrc::kConnect, false, FailureKind::kFailed}),
    [](const ::testing::TestParamInfo<TransportRow>& info) {
      return std::string(net::to_string(info.param.code)) +
             (info.param.sent_nothing ? "_SentNothing" : "_MaybeSent") +
             (info.param.status != 0 ? "_After" + std::to_string(info.param.status) : "");
    });

TEST_F(OpenAiProviderTest, UpstreamMessagesAreTruncatedAndCleaned) {
  const std::string long_message = "bad\x01image " + std::string(2000, 'z');
  json::object error{{"error", json::object{{"message", long_message}}}};
  client_.add_response(kGenerations, 400, json::serialize(error));
  ImageTask task = generation_task();
  auto result = run(provider_, task);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kInvalidRequest);
  EXPECT_LE(result.error().message.size(), 510u);
  EXPECT_EQ(result.error().message.rfind("bad image zzz", 0), 0u) << result.error().message;
  EXPECT_EQ(result.error().message.substr(result.error().message.size() - 3), "...");

  // UTF-8 messages (resellers answer in many languages) stay readable; resellers' shapes work.
  net::FakeHttpClient other;
  OpenAiProvider provider(other, settings());
  other.add_response(kGenerations, 422, R"({"code":422,"msg":"图片无法读取"})");
  auto utf8 = run(provider, task);
  ASSERT_FALSE(utf8.has_value());
  EXPECT_EQ(utf8.error().kind, FailureKind::kInvalidRequest);
  EXPECT_EQ(utf8.error().message, "图片无法读取");

  // Without a message the client still gets a useful sentence.
  net::FakeHttpClient third;
  OpenAiProvider provider3(third, settings());
  third.add_response(kGenerations, 400, "<html>nope</html>");
  auto bare = run(provider3, task);
  ASSERT_FALSE(bare.has_value());
  EXPECT_EQ(bare.error().message, "the upstream rejected the request (HTTP 400)");
}

TEST_F(OpenAiProviderTest, GarbageRepliesAreFailures) {
  const std::vector<std::string> bodies = {
      "<html>definitely not json",
      "[1,2,3]",
      R"({"created":1})",
      R"({"data":[]})",
      R"({"data":[{}]})",
      R"({"data":["x"]})",
      R"({"data":[{"b64_json":"!!!not base64!!!"}]})",
      R"({"data":[{"b64_json":")" + b64("plain text, not an image") + R"("}]})",
      R"({"error":{"message":"quota exhausted"}})",
  };
  for (const std::string& body : bodies) {
    net::FakeHttpClient client;
    OpenAiProvider provider(client, settings());
    client.add_response(kGenerations, 200, body);
    ImageTask task = generation_task();
    auto result = run(provider, task);
    ASSERT_FALSE(result.has_value()) << body;
    EXPECT_EQ(result.error().kind, FailureKind::kFailed) << body;
    EXPECT_EQ(result.error().upstream_status, 200) << body;
    EXPECT_FALSE(result.error().message.empty());
  }
}

// --- streaming -------------------------------------------------------------------------------

std::string stream_body(std::string_view prefix, int partials, const std::string& final_image) {
  std::string body;
  for (int i = 0; i < partials; ++i) {
    json::object data{{"type", std::string(prefix) + ".partial_image"},
                      {"partial_image_index", i},
                      {"b64_json", b64(png(64 + i, 64, static_cast<char>('0' + i)))},
                      {"size", "1024x1024"}};
    body += sse(std::string(prefix) + ".partial_image", data);
  }
  json::object done{{"type", std::string(prefix) + ".completed"},
                    {"b64_json", b64(final_image)},
                    {"usage", json::parse(usage_json())}};
  body += sse(std::string(prefix) + ".completed", done);
  return body;
}

TEST_F(OpenAiProviderTest, StreamingRelaysPartialsInOrderThenTheFinalImage) {
  client_.set_chunk_size(7);  // events arrive split across many chunks
  client_.add_response(kGenerations, 200, stream_body("image_generation", 2, png(1536, 1024)),
                       {{"Content-Type", "text/event-stream"}});
  ImageTask task = generation_task();
  task.partial_images = 2;
  RecordingSink sink;
  auto result = run(provider_, task, &sink);
  ASSERT_TRUE(result.has_value()) << result.error().message;

  net::HttpRequest request = *client_.last_request();
  json::object body = body_json(request);
  EXPECT_EQ(body.at("stream"), true);
  EXPECT_EQ(body.at("partial_images"), 2);
  EXPECT_TRUE(static_cast<bool>(request.on_body_chunk));

  EXPECT_EQ(sink.indexes(), (std::vector<int>{0, 1}));
  auto partials = sink.images();
  ASSERT_EQ(partials.size(), 2u);
  EXPECT_EQ(partials[0].bytes, png(64, 64, '0'));
  EXPECT_EQ(partials[0].mime, "image/png");
  EXPECT_EQ(partials[1].width, 65);
  ASSERT_EQ(result->images.size(), 1u);
  EXPECT_EQ(result->images[0].bytes, png(1536, 1024));
  EXPECT_EQ(result->images[0].width, 1536);
  ASSERT_TRUE(result->usage.has_value());
  EXPECT_EQ(result->usage->output_tokens, 272);
  EXPECT_EQ(result->usage->input_image_tokens, 10);
}

TEST_F(OpenAiProviderTest, StreamingEditsUseImageEditEventsAndCrlfLines) {
  std::string body = stream_body("image_edit", 1, png(1024, 1024));
  std::string crlf;
  for (char c : body) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  client_.set_chunk_size(0);
  client_.add_response(kEdits, 200, ": keep-alive\r\n\r\n" + crlf);
  ImageTask task = generation_task();
  task.edit = true;
  task.images.push_back(InputImage{png(32, 32), "image/png", 32, 32});
  task.partial_images = 1;
  RecordingSink sink;
  auto result = run(provider_, task, &sink);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  net::HttpRequest request = *client_.last_request();
  ASSERT_NE(find_field(request, "stream"), nullptr);
  EXPECT_EQ(find_field(request, "stream")->value, "true");
  EXPECT_EQ(find_field(request, "partial_images")->value, "1");
  EXPECT_EQ(sink.indexes(), (std::vector<int>{0}));
  ASSERT_EQ(result->images.size(), 1u);
  EXPECT_EQ(result->images[0].width, 1024);
}

TEST_F(OpenAiProviderTest, StreamingWithLoneCrLineEndsAtAnyChunking) {
  std::string body = stream_body("image_generation", 2, png(16, 16));
  for (char& c : body) {
    if (c == '\n') c = '\r';
  }
  for (std::size_t chunk : {0u, 1u, 2u, 7u}) {
    net::FakeHttpClient client;
    client.set_chunk_size(chunk);
    OpenAiProvider provider(client, settings());
    client.add_response(kGenerations, 200, ": keep-alive\r\r" + body);
    ImageTask task = generation_task();
    task.partial_images = 2;
    RecordingSink sink;
    auto result = run(provider, task, &sink);
    ASSERT_TRUE(result.has_value()) << "chunk " << chunk << ": " << result.error().message;
    EXPECT_EQ(sink.indexes(), (std::vector<int>{0, 1})) << "chunk " << chunk;
    ASSERT_EQ(result->images.size(), 1u);
    EXPECT_EQ(result->images[0].width, 16);
  }
}

TEST_F(OpenAiProviderTest, NoSinkMeansNoStreaming) {
  client_.add_response(kGenerations, 200, ok_reply(png(8, 8)));
  ImageTask task = generation_task();
  task.partial_images = 3;
  ASSERT_TRUE(run(provider_, task, nullptr).has_value());
  EXPECT_FALSE(body_json(*client_.last_request()).contains("stream"));
}

TEST_F(OpenAiProviderTest, StreamedRequestAnsweredWithPlainJsonIsParsedNormally) {
  client_.set_chunk_size(5);
  client_.add_response(kGenerations, 200, "\n" + ok_reply(png(300, 200)));
  ImageTask task = generation_task();
  task.partial_images = 2;
  RecordingSink sink;
  auto result = run(provider_, task, &sink);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_TRUE(sink.indexes().empty());
  ASSERT_EQ(result->images.size(), 1u);
  EXPECT_EQ(result->images[0].width, 300);
  EXPECT_TRUE(result->usage.has_value());
}

TEST_F(OpenAiProviderTest, StreamingFailures) {
  ImageTask task = generation_task();
  task.partial_images = 2;
  struct Case {
    std::string body;
    FailureKind kind;
    std::string message_part;
  };
  std::string partial_only = stream_body("image_generation", 2, png(8, 8));
  partial_only = partial_only.substr(0, partial_only.find("event: image_generation.completed"));
  json::object moderation{
      {"type", "error"},
      {"error", json::object{{"type", "invalid_request_error"}, {"message", "blocked"}}}};
  json::object server{{"type", "error"}, {"error", json::object{{"message", "overloaded"}}}};
  const std::vector<Case> cases = {
      {partial_only, FailureKind::kFailed, "without a completed image"},
      {partial_only + sse("error", moderation), FailureKind::kInvalidRequest, "blocked"},
      {partial_only + sse("error", server), FailureKind::kFailed, "overloaded"},
      {"<html>oops</html>", FailureKind::kFailed, "without a completed image"},
      {"{not json", FailureKind::kFailed, "non-JSON"},
  };
  for (const Case& c : cases) {
    net::FakeHttpClient client;
    client.set_chunk_size(3);
    OpenAiProvider provider(client, settings());
    client.add_response(kGenerations, 200, c.body);
    RecordingSink sink;
    auto result = run(provider, task, &sink);
    ASSERT_FALSE(result.has_value()) << c.body;
    EXPECT_EQ(result.error().kind, c.kind) << c.body;
    EXPECT_NE(result.error().message.find(c.message_part), std::string::npos)
        << result.error().message;
  }
}

TEST_F(OpenAiProviderTest, StreamingBrokenFinalImageFailsButBrokenPreviewIsSkipped) {
  json::object bad_partial{
      {"type", "image_generation.partial_image"}, {"partial_image_index", 0}, {"b64_json", "%%%"}};
  std::string body = sse("image_generation.partial_image", bad_partial) +
                     stream_body("image_generation", 0, png(10, 10));
  client_.add_response(kGenerations, 200, body);
  ImageTask task = generation_task();
  task.partial_images = 1;
  RecordingSink sink;
  auto result = run(provider_, task, &sink);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_TRUE(sink.indexes().empty());

  net::FakeHttpClient other;
  OpenAiProvider provider(other, settings());
  other.add_response(kGenerations, 200, stream_body("image_generation", 1, "not an image"));
  RecordingSink sink2;
  auto broken = run(provider, task, &sink2);
  ASSERT_FALSE(broken.has_value());
  EXPECT_EQ(broken.error().kind, FailureKind::kFailed);
  EXPECT_EQ(sink2.indexes(), (std::vector<int>{0}));
}

// An HttpClient that feeds the body from its own thread, like the real client's strand, and
// pauses after each chunk until `after_chunk` returns; completes on the caller's executor.
class ThreadedStreamClient final : public net::HttpClient {
 public:
  ThreadedStreamClient(std::vector<std::string> chunks, std::function<void(std::size_t)> after)
      : chunks_(std::move(chunks)), after_chunk_(std::move(after)) {}

  asio::awaitable<net::NetResult<net::HttpResponse>> send(net::HttpRequest request) override {
    using Done = asio::experimental::concurrent_channel<void(boost::system::error_code)>;
    asio::any_io_executor executor = co_await asio::this_coro::executor;
    auto done = std::make_shared<Done>(executor, 1);
    std::thread worker([this, &request, done] {
      for (std::size_t i = 0; i < chunks_.size(); ++i) {
        if (!request.on_body_chunk(chunks_[i])) break;
        after_chunk_(i);
      }
      done->try_send(boost::system::error_code{});
    });
    static constexpr auto kToken = asio::as_tuple(asio::use_awaitable);
    std::tuple<boost::system::error_code> finished = co_await done->async_receive(kToken);
    worker.join();
    (void)finished;
    co_return net::FakeHttpClient::response(200, "", {{"Content-Type", "text/event-stream"}});
  }

 private:
  std::vector<std::string> chunks_;
  std::function<void(std::size_t)> after_chunk_;
};

TEST(OpenAiProviderLiveTest, PartialsReachTheSinkWhileTheUpstreamIsStillStreaming) {
  // One chunk per event; after each partial the upstream "waits" until the sink has it. If the
  // provider only relayed after the response completed, the waits would time out.
  std::vector<std::string> chunks;
  for (int i = 0; i < 3; ++i) {
    json::object data{{"type", "image_generation.partial_image"},
                      {"partial_image_index", i},
                      {"b64_json", b64(png(10 + i, 10))}};
    chunks.push_back(sse("image_generation.partial_image", data));
  }
  json::object done{{"type", "image_generation.completed"},
                    {"b64_json", b64(png(1024, 1024))},
                    {"usage", json::parse(usage_json())}};
  chunks.push_back(sse("image_generation.completed", done));

  RecordingSink sink;
  std::mutex mutex;
  std::vector<bool> seen_live;
  ThreadedStreamClient client(chunks, [&](std::size_t i) {
    if (i >= 3) return;
    bool live = sink.wait_for(i + 1, 5s);
    std::lock_guard lock(mutex);
    seen_live.push_back(live);
  });
  OpenAiProvider provider(client, settings());
  ImageTask task = generation_task();
  task.partial_images = 3;

  // The caller's coroutine runs on two threads' worth of io_context to mimic the server.
  asio::io_context ioc;
  auto future = asio::co_spawn(ioc, provider.generate(task, &sink), asio::use_future);
  std::thread helper([&ioc] { ioc.run(); });
  ioc.run();
  helper.join();
  auto result = future.get();

  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(seen_live, (std::vector<bool>{true, true, true}));
  EXPECT_EQ(sink.indexes(), (std::vector<int>{0, 1, 2}));
  ASSERT_EQ(result->images.size(), 1u);
  EXPECT_EQ(result->images[0].width, 1024);
  EXPECT_EQ(result->usage->output_tokens, 272);
}

TEST_F(OpenAiProviderTest, ChannelNameComesFromSettings) {
  EXPECT_EQ(provider_.channel(), "openai-main");
}

}  // namespace
}  // namespace ig::providers
