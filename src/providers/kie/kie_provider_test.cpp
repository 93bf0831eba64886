#include "providers/kie/kie_provider.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#include <vips/vips8>

#include "core/clock.h"
#include "media/local_renderer.h"
#include "net/fake_http_client.h"

namespace ig::providers {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;

constexpr char kBase[] = "https://kie.example";
constexpr char kCreate[] = "https://kie.example/api/v1/jobs/createTask";
constexpr char kTaskId[] = "task-abc123";

std::string poll_url(std::string_view task_id) {
  return std::string(kBase) + "/api/v1/jobs/recordInfo?taskId=" + std::string(task_id);
}

// A real image encoded by libvips (`suffix` picks the saver: ".png", ".jpg", ".webp").
std::string encode(int w, int h, const char* suffix) {
  EXPECT_TRUE(media::init_media());
  using vips::VImage;
  VImage img = VImage::black(w, h, VImage::option()->set("bands", 3)) + 90;
  img = img.cast(VIPS_FORMAT_UCHAR)
            .copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
  void* buf = nullptr;
  std::size_t size = 0;
  img.write_to_buffer(suffix, &buf, &size, VImage::option()->set("strip", true));
  std::string out(static_cast<const char*>(buf), size);
  g_free(buf);
  return out;
}

std::string create_ok(std::string_view task_id = kTaskId) {
  return R"({"code":200,"msg":"success","data":{"taskId":")" + std::string(task_id) + R"("}})";
}

std::string record(std::string_view state, std::string_view task_id = kTaskId) {
  json::object data;
  data["taskId"] = task_id;
  data["model"] = "gpt-image-2-text-to-image";
  data["state"] = state;
  data["resultJson"] = "";
  data["failCode"] = nullptr;
  data["failMsg"] = nullptr;
  json::object root;
  root["code"] = 200;
  root["msg"] = "success";
  root["data"] = std::move(data);
  return json::serialize(root);
}

std::string record_success(const std::vector<std::string>& urls,
                           std::string_view task_id = kTaskId) {
  json::array list;
  for (const auto& url : urls) list.emplace_back(url);
  json::object result;
  result["resultUrls"] = std::move(list);
  json::value doc = json::parse(record("success", task_id));
  doc.as_object()["data"].as_object()["resultJson"] = json::serialize(result);  // a string!
  return json::serialize(doc);
}

std::string record_fail(json::value fail_code, std::string_view fail_msg) {
  json::value doc = json::parse(record("fail"));
  doc.as_object()["data"].as_object()["failCode"] = std::move(fail_code);
  doc.as_object()["data"].as_object()["failMsg"] = fail_msg;
  return json::serialize(doc);
}

KieChannelSettings settings() {
  KieChannelSettings s;
  s.name = "kie-main";
  s.base_url = std::string(kBase) + "/";
  s.api_key = "kie-key";
  s.poll_interval_ms = 2;
  s.request_timeout_ms = 12'000;
  s.connect_timeout_ms = 3'000;
  s.timeout_ms = 60'000;
  s.proxy = "http://proxy.local:3128";
  s.max_result_bytes = 1 << 20;
  s.address_policy = net::AddressPolicy{.allow_loopback = true, .allow_private = true};
  s.callback_url_for = [](std::string_view job_id) {
    return "https://gw.example/v1/callbacks/kie/" + std::string(job_id);
  };
  return s;
}

ImageTask text_task() {
  ImageTask t;
  t.job_id = "job-1";
  t.model = "gpt-image-2";
  t.prompt = "a white siamese cat";
  t.n = 1;
  t.width = 1536;
  t.height = 1024;
  t.size_label = "1536x1024";
  t.output_format = "png";
  return t;
}

std::expected<ImageResult, ProviderError> run(ImageProvider& provider, const ImageTask& task) {
  asio::io_context ioc;
  auto future = asio::co_spawn(ioc, provider.generate(task, nullptr), asio::use_future);
  ioc.run();
  return future.get();
}

using Headers = std::vector<std::pair<std::string, std::string>>;

// A scripted Kie upstream behind FakeHttpClient's handler: createTask answers `create_reply`,
// recordInfo walks waiting -> queuing -> generating (`polls_before_final` polls) and then
// answers `final_reply`; files come from `files` (else 404). Optionally moves a FakeClock on
// every poll, so overall timeouts are deterministic.
class FakeKie {
 public:
  explicit FakeKie(net::FakeHttpClient& client) {
    client.set_handler([this](const net::HttpRequest& r) { return handle(r); });
  }

  std::mutex mutex;
  net::NetResult<net::HttpResponse> create_reply = net::FakeHttpClient::response(200, create_ok());
  int polls_before_final = 2;
  std::optional<std::string> final_reply;  // nullopt: never finishes ("generating" forever)
  std::vector<net::NetResult<net::HttpResponse>> transient;  // answers for the first polls
  std::map<std::string, net::NetResult<net::HttpResponse>> files;
  FakeClock* clock = nullptr;
  std::int64_t advance_per_poll_ms = 0;
  int creates = 0;
  int polls = 0;

 private:
  net::NetResult<net::HttpResponse> handle(const net::HttpRequest& request) {
    std::lock_guard lock(mutex);
    if (request.url == kCreate) {
      ++creates;
      return create_reply;
    }
    if (request.url.find("/api/v1/jobs/recordInfo?taskId=") != std::string::npos) {
      ++polls;
      if (clock != nullptr) clock->advance_ms(advance_per_poll_ms);
      if (static_cast<std::size_t>(polls) <= transient.size()) return transient[polls - 1];
      const int progress = polls - static_cast<int>(transient.size());
      static const char* kStates[] = {"waiting", "queuing", "generating"};
      if (progress <= polls_before_final || !final_reply) {
        return net::FakeHttpClient::response(200, record(kStates[std::min(progress - 1, 2)]));
      }
      return net::FakeHttpClient::response(200, *final_reply);
    }
    if (auto it = files.find(request.url); it != files.end()) return it->second;
    return net::FakeHttpClient::response(404, "not found");
  }
};

class RecordingObserver final : public UpstreamObserver {
 public:
  explicit RecordingObserver(net::FakeHttpClient& client) : client_(client) {}
  asio::awaitable<void> accepted(std::string upstream_task_id) override {
    ids.push_back(upstream_task_id);
    requests_seen.push_back(client_.requests());
    co_return;
  }
  std::vector<std::string> ids;
  std::vector<std::vector<net::HttpRequest>> requests_seen;

 private:
  net::FakeHttpClient& client_;
};

class KieProviderTest : public ::testing::Test {
 protected:
  KieProviderTest() {
    png_ = encode(64, 48, ".png");
    kie_.final_reply = record_success({"https://cdn.kie.example/r/0.png"});
    kie_.files["https://cdn.kie.example/r/0.png"] = net::FakeHttpClient::response(200, png_);
  }

  std::vector<net::HttpRequest> requests_to(std::string_view url_prefix) const {
    std::vector<net::HttpRequest> out;
    for (auto& r : client_.requests()) {
      if (r.url.rfind(url_prefix, 0) == 0) out.push_back(r);
    }
    return out;
  }

  std::string png_;
  net::FakeHttpClient client_;
  FakeKie kie_{client_};
  UpstreamWakeups wakeups_;
  SystemClock clock_;
  KieProvider provider_{client_, wakeups_, settings(), clock_};
};

// --- request shape --------------------------------------------------------------------------

TEST_F(KieProviderTest, TextToImageRequestShape) {
  ImageTask task = text_task();
  task.n = 2;
  kie_.final_reply =
      record_success({"https://cdn.kie.example/r/0.png", "https://cdn.kie.example/r/0.png"});
  auto result = run(provider_, task);
  ASSERT_TRUE(result.has_value()) << result.error().message;

  std::vector<net::HttpRequest> creates = requests_to(kCreate);
  ASSERT_EQ(creates.size(), 1u);
  const net::HttpRequest& create = creates[0];
  EXPECT_EQ(create.method, "POST");
  EXPECT_EQ(create.headers,
            (Headers{{"Authorization", "Bearer kie-key"}, {"Content-Type", "application/json"}}));
  EXPECT_EQ(create.body,
            R"({"model":"gpt-image-2-text-to-image",)"
            R"("callBackUrl":"https://gw.example/v1/callbacks/kie/job-1",)"
            R"("input":{"prompt":"a white siamese cat","aspect_ratio":"3:2","resolution":"1K",)"
            R"("n":2,"output_format":"png"}})");
  EXPECT_TRUE(create.mime.empty());
  EXPECT_EQ(create.total_timeout_ms, 12'000);
  EXPECT_EQ(create.connect_timeout_ms, 3'000);
  EXPECT_EQ(create.proxy, "http://proxy.local:3128");
  EXPECT_EQ(create.address_policy, settings().address_policy);

  std::vector<net::HttpRequest> polls = requests_to(poll_url(kTaskId));
  ASSERT_EQ(polls.size(), 3u);  // waiting, queuing, success
  EXPECT_EQ(polls[0].method, "GET");
  EXPECT_EQ(polls[0].headers, (Headers{{"Authorization", "Bearer kie-key"}}));
  EXPECT_TRUE(polls[0].body.empty());
  EXPECT_EQ(polls[0].total_timeout_ms, 12'000);
  EXPECT_EQ(polls[0].address_policy, settings().address_policy);

  ASSERT_EQ(result->images.size(), 2u);
  EXPECT_FALSE(result->usage.has_value());
  EXPECT_EQ(wakeups_.waiter_count(), 0u);
}

TEST_F(KieProviderTest, NoCallbackUrlWithoutTheFunctionOrWithAnEmptyUrl) {
  KieChannelSettings s = settings();
  s.callback_url_for = nullptr;
  KieProvider no_function(client_, wakeups_, s, clock_);
  ImageTask task = text_task();
  ASSERT_TRUE(run(no_function, task).has_value());
  s.callback_url_for = [](std::string_view) { return std::string(); };
  KieProvider empty_url(client_, wakeups_, s, clock_);
  ASSERT_TRUE(run(empty_url, task).has_value());
  for (const auto& create : requests_to(kCreate)) {
    json::object body = json::parse(create.body).as_object();
    EXPECT_FALSE(body.contains("callBackUrl")) << create.body;
    EXPECT_EQ(body.size(), 2u);
  }
}

TEST_F(KieProviderTest, ImageToImageUsesInputUrlsAndTheImageToImageModel) {
  ImageTask task = text_task();
  task.edit = true;
  task.width = 1024;
  task.height = 1024;
  task.size_label = "1024x1024";
  task.output_format = "jpeg";
  task.images = {InputImage{"bytes-a", "image/png", 10, 10},
                 InputImage{"bytes-b", "image/png", 8, 8}};
  task.image_urls = {"https://gw.example/files/a.png", "https://gw.example/files/b.png"};
  ASSERT_TRUE(run(provider_, task).has_value());
  std::vector<net::HttpRequest> creates = requests_to(kCreate);
  ASSERT_EQ(creates.size(), 1u);
  EXPECT_EQ(creates[0].body,
            R"({"model":"gpt-image-2-image-to-image",)"
            R"("callBackUrl":"https://gw.example/v1/callbacks/kie/job-1",)"
            R"("input":{"prompt":"a white siamese cat","aspect_ratio":"1:1","resolution":"1K",)"
            R"("input_urls":["https://gw.example/files/a.png","https://gw.example/files/b.png"],)"
            R"("n":1,"output_format":"jpeg"}})");
}

TEST_F(KieProviderTest, ReferenceImagesWithoutPublicUrlsFailWithoutSending) {
  ImageTask task = text_task();
  task.edit = true;
  task.images = {InputImage{"bytes-a", "image/png", 10, 10}};
  auto result = run(provider_, task);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kFailed);
  EXPECT_EQ(result.error().message, "reference images have no public URL for this upstream");
  EXPECT_EQ(client_.request_count(), 0u);
  EXPECT_EQ(wakeups_.waiter_count(), 0u);
}

TEST_F(KieProviderTest, ModelMapsOverrideDefaultsAndUnknownModelsPassThrough) {
  KieChannelSettings s = settings();
  s.text_to_image_models = {{"gpt-image-2", "custom-t2i"}};
  s.image_to_image_models = {{"seedream", "seedream-edit"}};
  KieProvider mapped(client_, wakeups_, s, clock_);

  ImageTask task = text_task();
  ASSERT_TRUE(run(mapped, task).has_value());
  task.model = "nano-banana";
  ASSERT_TRUE(run(mapped, task).has_value());
  task.model = "gpt-image-2";
  task.image_urls = {"https://gw.example/files/a.png"};
  ASSERT_TRUE(run(mapped, task).has_value());  // i2i map has no gpt-image-2: the default
  task.model = "seedream";
  ASSERT_TRUE(run(mapped, task).has_value());

  std::vector<std::string> models;
  for (const auto& create : requests_to(kCreate)) {
    models.emplace_back(json::parse(create.body).at("model").as_string());
  }
  EXPECT_EQ(models, (std::vector<std::string>{"custom-t2i", "nano-banana",
                                              "gpt-image-2-image-to-image", "seedream-edit"}));
}

TEST(KieMappingTest, AspectRatio) {
  struct Case {
    int w, h;
    const char* label;
    const char* expected;
  };
  for (const Case& c : std::vector<Case>{
           {1024, 1024, "1024x1024", "1:1"},
           {1536, 1024, "1536x1024", "3:2"},
           {1024, 1536, "", "2:3"},
           {2048, 1152, "", "16:9"},
           {1152, 2048, "", "9:16"},
           {3840, 2160, "", "16:9"},
           {2048, 1536, "", "4:3"},
           {1536, 2048, "", "3:4"},
           {1280, 1024, "", "5:4"},
           {1024, 1280, "", "4:5"},
           {2520, 1080, "", "21:9"},  // 7:3 is 21:9 reduced
           {1000, 300, "", "21:9"},   // 10:3: nearest
           {1100, 1000, "", "1:1"},   // 11:10: nearest
           {1792, 1024, "", "16:9"},  // 7:4 (1.75): nearest
           {1024, 1792, "", "9:16"},
           {1000, 1900, "", "9:16"},
           {0, 0, "", "1:1"},
           {-5, 10, "", "1:1"},
           {1024, 1024, "16:9", "16:9"},  // a ratio label wins over the resolved size
           {1024, 1024, "9:16", "9:16"},
           {1024, 1024, "21:9", "21:9"},
           {1024, 1024, "32:18", "16:9"},  // reduced
           {1024, 1024, "3:1", "21:9"},    // not Kie's: nearest
           {1536, 1024, "auto", "3:2"},    // not a ratio: the size
           {1536, 1024, "0:5", "3:2"},
           {1536, 1024, "a:b", "3:2"},
       }) {
    EXPECT_EQ(kie_aspect_ratio(c.w, c.h, c.label), c.expected)
        << c.w << "x" << c.h << " label " << c.label;
  }
}

TEST(KieMappingTest, Resolution) {
  EXPECT_EQ(kie_resolution(1024, 1024), "1K");
  EXPECT_EQ(kie_resolution(1536, 1024), "1K");
  EXPECT_EQ(kie_resolution(1024, 1536), "1K");
  EXPECT_EQ(kie_resolution(1537, 100), "2K");
  EXPECT_EQ(kie_resolution(2048, 1152), "2K");
  EXPECT_EQ(kie_resolution(2048, 2048), "2K");
  EXPECT_EQ(kie_resolution(2049, 100), "4K");
  EXPECT_EQ(kie_resolution(3840, 2160), "4K");
  EXPECT_EQ(kie_resolution(2160, 3840), "4K");
}

// --- acceptance and resumption --------------------------------------------------------------

TEST_F(KieProviderTest, ObserverGetsTheTaskIdBeforeTheFirstPoll) {
  RecordingObserver observer(client_);
  ImageTask task = text_task();
  task.observer = &observer;
  ASSERT_TRUE(run(provider_, task).has_value());
  ASSERT_EQ(observer.ids, std::vector<std::string>{kTaskId});
  ASSERT_EQ(observer.requests_seen.size(), 1u);
  ASSERT_EQ(observer.requests_seen[0].size(), 1u);  // only createTask so far
  EXPECT_EQ(observer.requests_seen[0][0].url, kCreate);
  EXPECT_GE(requests_to(poll_url(kTaskId)).size(), 1u);
}

TEST_F(KieProviderTest, ResumeWaitsOnTheKnownTaskAndNeverSubmits) {
  RecordingObserver observer(client_);
  ImageTask task = text_task();
  task.observer = &observer;
  task.resume_upstream_task_id = "old task/1";
  kie_.polls_before_final = 0;
  kie_.final_reply = record_success({"https://cdn.kie.example/r/0.png"}, "old task/1");
  auto result = run(provider_, task);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(kie_.creates, 0);
  EXPECT_TRUE(requests_to(kCreate).empty());
  EXPECT_TRUE(observer.ids.empty());  // already persisted before the restart
  std::vector<net::HttpRequest> polls = requests_to(poll_url("old%20task%2F1"));
  EXPECT_EQ(polls.size(), 1u);
  ASSERT_EQ(result->images.size(), 1u);
}

// --- results --------------------------------------------------------------------------------

TEST_F(KieProviderTest, SuccessDownloadsAndSniffsEveryResult) {
  const std::string jpeg = encode(40, 30, ".jpg");
  const std::string webp = encode(20, 10, ".webp");
  kie_.files["https://cdn.kie.example/r/1.png"] = net::FakeHttpClient::response(200, jpeg);
  kie_.files["https://cdn.kie.example/r/2"] = net::FakeHttpClient::response(200, webp);
  kie_.final_reply = record_success({"https://cdn.kie.example/r/0.png",
                                     "https://cdn.kie.example/r/1.png",  // a JPEG named .png
                                     "https://cdn.kie.example/r/2"});
  ImageTask task = text_task();
  task.n = 3;
  auto result = run(provider_, task);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  ASSERT_EQ(result->images.size(), 3u);
  EXPECT_EQ(result->images[0].mime, "image/png");
  EXPECT_EQ(result->images[0].width, 64);
  EXPECT_EQ(result->images[0].height, 48);
  EXPECT_EQ(result->images[0].bytes, png_);
  EXPECT_EQ(result->images[1].mime, "image/jpeg");
  EXPECT_EQ(result->images[1].width, 40);
  EXPECT_EQ(result->images[1].height, 30);
  EXPECT_EQ(result->images[2].mime, "image/webp");
  EXPECT_EQ(result->images[2].width, 20);
  EXPECT_EQ(result->images[2].height, 10);

  std::vector<net::HttpRequest> downloads = requests_to("https://cdn.kie.example/");
  ASSERT_EQ(downloads.size(), 3u);
  EXPECT_EQ(downloads[0].method, "GET");
  EXPECT_TRUE(downloads[0].headers.empty());  // the CDN never sees our key
  EXPECT_EQ(downloads[0].max_response_bytes, std::size_t{1} << 20);
  // Another origin than the upstream's: the strict policy, whatever the channel allows.
  EXPECT_EQ(downloads[0].address_policy, std::optional<net::AddressPolicy>(net::AddressPolicy{}));
  EXPECT_EQ(downloads[0].total_timeout_ms, 12'000);
}

TEST_F(KieProviderTest, MoreResultsThanRequestedAreNotDownloaded) {
  kie_.final_reply =
      record_success({"https://cdn.kie.example/r/0.png", "https://cdn.kie.example/r/extra.png"});
  ImageTask task = text_task();
  auto result = run(provider_, task);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(result->images.size(), 1u);
  EXPECT_TRUE(requests_to("https://cdn.kie.example/r/extra").empty());
}

TEST_F(KieProviderTest, FailStateIsFailedWithCodeAndMessage) {
  kie_.final_reply = record_fail("500", "internal error");
  ImageTask task = text_task();
  auto result = run(provider_, task);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kFailed);
  EXPECT_EQ(result.error().message, "upstream task failed (failCode 500): internal error");
  EXPECT_EQ(wakeups_.waiter_count(), 0u);
  EXPECT_TRUE(requests_to("https://cdn.kie.example/").empty());
}

TEST_F(KieProviderTest, PolicyRefusalIsTheClientsFault) {
  kie_.final_reply = record_fail(400, "Your prompt violates our content policy");
  ImageTask task = text_task();
  auto result = run(provider_, task);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kInvalidRequest);
  EXPECT_EQ(result.error().message, "Your prompt violates our content policy");
}

TEST_F(KieProviderTest, ResultThatAnswers404IsFailed) {
  kie_.files.clear();
  ImageTask task = text_task();
  auto result = run(provider_, task);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kFailed);
  EXPECT_NE(result.error().message.find("HTTP 404"), std::string::npos) << result.error().message;
  EXPECT_EQ(requests_to("https://cdn.kie.example/").size(), 1u);  // a 404 is not retried
}

TEST_F(KieProviderTest, ResultThatIsNotAnImageIsFailed) {
  kie_.files["https://cdn.kie.example/r/0.png"] =
      net::FakeHttpClient::response(200, "<html>hello</html>");
  ImageTask task = text_task();
  auto result = run(provider_, task);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kFailed);
  EXPECT_NE(result.error().message.find("not a PNG, JPEG or WebP"), std::string::npos)
      << result.error().message;
}

TEST_F(KieProviderTest, TransientDownloadErrorsAreRetried) {
  kie_.files.clear();
  client_.add_response("https://cdn.kie.example/r/0.png", net::FakeHttpClient::response(503, ""));
  client_.add_response("https://cdn.kie.example/r/0.png", net::FakeHttpClient::response(200, png_));
  ImageTask task = text_task();
  auto result = run(provider_, task);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(requests_to("https://cdn.kie.example/").size(), 2u);
}

TEST_F(KieProviderTest, BrokenResultJsonIsFailed) {
  for (std::string data : {R"("resultJson":"not json")", R"("resultJson":"{\"resultUrls\":[]}")",
                           R"("resultJson":"{\"other\":1}")", R"("resultJson":7)"}) {
    kie_.final_reply = R"({"code":200,"data":{"state":"success",)" + data + "}}";
    ImageTask task = text_task();
    auto result = run(provider_, task);
    ASSERT_FALSE(result.has_value()) << data;
    EXPECT_EQ(result.error().kind, FailureKind::kFailed) << data;
    std::lock_guard lock(kie_.mutex);
    kie_.polls = 0;
  }
}

TEST_F(KieProviderTest, TransientPollErrorsAreSkipped) {
  kie_.transient = {
      net::FakeHttpClient::response(200, "<<garbage>>"),
      net::FakeHttpClient::response(503, R"({"code":503,"msg":"busy"})"),
      std::unexpected(net::NetError{net::NetErrc::kTimeout, "poll timed out", false}),
      net::FakeHttpClient::response(200, R"({"code":500,"msg":"server error"})"),
      net::FakeHttpClient::response(200, R"({"code":200,"data":"nope"})"),
      net::FakeHttpClient::response(200, R"([1,2,3])"),
  };
  ImageTask task = text_task();
  auto result = run(provider_, task);
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_EQ(kie_.creates, 1);  // a poll problem never resubmits
  EXPECT_EQ(kie_.polls, 6 + 3);
  ASSERT_EQ(result->images.size(), 1u);
}

// --- createTask classification --------------------------------------------------------------

TEST_F(KieProviderTest, CreateTaskFailuresAreClassified) {
  struct Case {
    const char* name;
    net::NetResult<net::HttpResponse> reply;
    FailureKind kind;
    const char* message_part;
  };
  using net::FakeHttpClient;
  const std::vector<Case> cases = {
      {"http 503", FakeHttpClient::response(503, R"({"code":503,"msg":"unavailable"})"),
       FailureKind::kRetryable, "HTTP 503: unavailable"},
      {"http 500", FakeHttpClient::response(500, "oops"), FailureKind::kRetryable, "HTTP 500"},
      {"http 429", FakeHttpClient::response(429, R"({"code":429,"msg":"rate limited"})"),
       FailureKind::kRetryable, "rate limited"},
      {"http 401", FakeHttpClient::response(401, R"({"code":401,"msg":"unauthorized"})"),
       FailureKind::kRetryable, "HTTP 401"},
      {"http 400", FakeHttpClient::response(400, R"({"code":400,"msg":"prompt too long"})"),
       FailureKind::kInvalidRequest, "prompt too long"},
      {"http 422", FakeHttpClient::response(422, "{}"), FailureKind::kInvalidRequest, "HTTP 422"},
      {"http 404", FakeHttpClient::response(404, "nope"), FailureKind::kFailed, "HTTP 404"},
      {"code 500", FakeHttpClient::response(200, R"({"code":500,"msg":"internal error"})"),
       FailureKind::kRetryable, "code 500: internal error"},
      {"code 429", FakeHttpClient::response(200, R"({"code":429,"msg":"slow down"})"),
       FailureKind::kRetryable, "code 429"},
      {"code 402", FakeHttpClient::response(200, R"({"code":402,"msg":"credits insufficient"})"),
       FailureKind::kRetryable, "credits insufficient"},
      {"code 401 as string", FakeHttpClient::response(200, R"({"code":"401","msg":"bad key"})"),
       FailureKind::kRetryable, "code 401"},
      {"code 400", FakeHttpClient::response(200, R"({"code":400,"msg":"input.n must be 1..16"})"),
       FailureKind::kInvalidRequest, "input.n must be 1..16"},
      {"code 422 no msg", FakeHttpClient::response(200, R"({"code":422})"),
       FailureKind::kInvalidRequest, "code 422"},
      {"unparsable 200", FakeHttpClient::response(200, "<html>"), FailureKind::kFailed, "non-JSON"},
      {"200 without code", FakeHttpClient::response(200, R"({"data":{"taskId":"x"}})"),
       FailureKind::kFailed, "no code"},
      {"200 without taskId", FakeHttpClient::response(200, R"({"code":200,"data":{}})"),
       FailureKind::kFailed, "taskId"},
      {"timeout after send",
       std::unexpected(net::NetError{net::NetErrc::kTimeout, "operation timed out", false}),
       FailureKind::kFailed, "may have accepted"},
      {"reset after send",
       std::unexpected(net::NetError{net::NetErrc::kReset, "connection reset", false}),
       FailureKind::kFailed, "reset"},
      {"connect refused",
       std::unexpected(net::NetError{net::NetErrc::kConnect, "connection refused", false}),
       FailureKind::kRetryable, "connect"},
      {"nothing sent",
       std::unexpected(net::NetError{net::NetErrc::kBlockedAddress, "blocked", true}),
       FailureKind::kRetryable, "blocked"},
  };
  for (const Case& c : cases) {
    net::FakeHttpClient client;
    FakeKie kie(client);
    kie.create_reply = c.reply;
    UpstreamWakeups wakeups;
    KieProvider provider(client, wakeups, settings(), clock_);
    RecordingObserver observer(client);
    ImageTask task = text_task();
    task.observer = &observer;
    auto result = run(provider, task);
    ASSERT_FALSE(result.has_value()) << c.name;
    EXPECT_EQ(result.error().kind, c.kind) << c.name << ": " << result.error().message;
    EXPECT_NE(result.error().message.find(c.message_part), std::string::npos)
        << c.name << ": " << result.error().message;
    EXPECT_EQ(client.request_count(), 1u) << c.name;  // no poll, no second create
    EXPECT_TRUE(observer.ids.empty()) << c.name;
    EXPECT_EQ(wakeups.waiter_count(), 0u) << c.name;
  }
}

TEST_F(KieProviderTest, InvalidRequestCarriesTheUpstreamMessageVerbatim) {
  kie_.create_reply = net::FakeHttpClient::response(200, R"({"code":400,"msg":"提示词过长"})");
  ImageTask task = text_task();
  auto result = run(provider_, task);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kInvalidRequest);
  EXPECT_EQ(result.error().message, "提示词过长");
  EXPECT_EQ(result.error().upstream_status, 200);
}

// --- giving up ------------------------------------------------------------------------------

TEST_F(KieProviderTest, NeverFinishingTaskFailsAfterTheOverallTimeout) {
  FakeClock clock;
  kie_.final_reply.reset();  // "generating" forever
  kie_.clock = &clock;
  kie_.advance_per_poll_ms = 1'000;
  KieChannelSettings s = settings();
  s.timeout_ms = 10'000;
  KieProvider provider(client_, wakeups_, s, clock);
  ImageTask task = text_task();
  auto result = run(provider, task);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kFailed);
  EXPECT_EQ(result.error().message,
            "upstream task task-abc123 did not finish within 10 s (last state: generating)");
  EXPECT_EQ(kie_.polls, 10);
  EXPECT_EQ(kie_.creates, 1);
  EXPECT_EQ(wakeups_.waiter_count(), 0u);
}

TEST_F(KieProviderTest, NeverFinishingTaskFailsInRealTimeToo) {
  kie_.final_reply.reset();
  KieChannelSettings s = settings();
  s.timeout_ms = 150;
  s.poll_interval_ms = 20;
  KieProvider provider(client_, wakeups_, s, clock_);
  ImageTask task = text_task();
  const auto start = std::chrono::steady_clock::now();
  auto result = run(provider, task);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kFailed);
  EXPECT_NE(result.error().message.find("did not finish within 150 ms"), std::string::npos)
      << result.error().message;
  EXPECT_GE(elapsed, 140ms);
  EXPECT_LT(elapsed, 10s);
  EXPECT_GE(kie_.polls, 3);
}

TEST_F(KieProviderTest, JobDeadlineCutsTheWaitShort) {
  FakeClock clock;
  kie_.final_reply.reset();
  kie_.transient = {net::FakeHttpClient::response(502, "bad gateway")};
  kie_.clock = &clock;
  kie_.advance_per_poll_ms = 1'000;
  KieProvider provider(client_, wakeups_, settings(), clock);
  ImageTask task = text_task();
  task.deadline_ms = clock.now_ms() + 3'000;
  auto result = run(provider, task);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kFailed);
  EXPECT_EQ(result.error().message,
            "upstream task task-abc123 did not finish before the job's deadline "
            "(last state: queuing)");
  EXPECT_EQ(kie_.polls, 3);
}

TEST_F(KieProviderTest, PassedDeadlineSubmitsNothing) {
  FakeClock clock;
  KieProvider provider(client_, wakeups_, settings(), clock);
  ImageTask task = text_task();
  task.deadline_ms = clock.now_ms() - 1;
  auto result = run(provider, task);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind, FailureKind::kFailed);
  EXPECT_EQ(client_.request_count(), 0u);
}

// --- callbacks ------------------------------------------------------------------------------

TEST_F(KieProviderTest, CallbackNotifyCutsThePollWaitShort) {
  KieChannelSettings s = settings();
  s.poll_interval_ms = 600'000;  // without wakeups this test would take 20 minutes
  s.timeout_ms = 3'600'000;
  KieProvider provider(client_, wakeups_, s, clock_);
  kie_.polls_before_final = 1;
  std::atomic<bool> done{false};
  std::atomic<int> delivered{0};
  // The HTTP handler receiving Kie's callbacks runs on another thread.
  std::thread callbacks([&] {
    while (!done) {
      if (wakeups_.notify("job-1")) ++delivered;
      std::this_thread::sleep_for(2ms);
    }
  });
  ImageTask task = text_task();
  const auto start = std::chrono::steady_clock::now();
  auto result = run(provider, task);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  done = true;
  callbacks.join();
  ASSERT_TRUE(result.has_value()) << result.error().message;
  EXPECT_LT(elapsed, 30s);
  EXPECT_GE(delivered.load(), 1);
  EXPECT_EQ(kie_.polls, 2);
  EXPECT_EQ(wakeups_.waiter_count(), 0u);
  EXPECT_FALSE(wakeups_.notify("job-1"));
}

}  // namespace
}  // namespace ig::providers
