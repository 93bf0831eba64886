#include "jobs/image_pipeline.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <deque>

#include "blobs/memory_blob_store.h"
#include "jobs/job_runner.h"
#include "net/fake_http_client.h"
#include "store/memory/memory_store.h"

namespace ig::jobs {
namespace {

namespace asio = boost::asio;
using providers::FailureKind;
using providers::ImageResult;
using providers::ProviderError;

// A provider whose answers the test scripts, one per call.
class ScriptedProvider final : public providers::ImageProvider {
 public:
  explicit ScriptedProvider(std::string name) : name_(std::move(name)) {}
  const std::string& channel() const override { return name_; }
  asio::awaitable<std::expected<ImageResult, ProviderError>> generate(
      const providers::ImageTask& task, providers::PartialSink* sink) override {
    ++calls;
    last_task = task;
    if (!script.empty()) {
      auto next = script.front();
      script.pop_front();
      if (next) {
        for (int i = 0; sink != nullptr && i < partials_before_failure; ++i) {
          const providers::OutputImage preview{"\x89PNG-partial", "image/png", 8, 8, std::nullopt};
          co_await sink->partial(i, preview);
        }
        co_return std::unexpected(*next);
      }
    }
    ImageResult r;
    for (int i = 0; i < task.n + extra_images; ++i) {
      r.images.push_back({"\x89PNG-fake-" + std::to_string(i), "image/png", task.width, task.height,
                          std::nullopt});
    }
    r.usage = providers::ImageUsage{10, 0, 1000};
    co_return r;
  }
  std::deque<std::optional<ProviderError>> script;  // nullopt = succeed
  int partials_before_failure = 0;                  // sent to a sink before a scripted failure
  int extra_images = 0;                             // delivered beyond task.n
  int calls = 0;
  providers::ImageTask last_task;

 private:
  std::string name_;
};

class ImagePipelineTest : public ::testing::Test {
 protected:
  ImagePipelineTest()
      : store_(clock_),
        pool_(2),
        blobs_(random_, clock_),
        references_(http_, ReferenceLoaderSettings{}),
        catalog_(make_catalog()) {
    auto a = std::make_unique<ScriptedProvider>("a");
    auto b = std::make_unique<ScriptedProvider>("b");
    a_ = a.get();
    b_ = b.get();
    registry_.add(std::move(a));
    registry_.add(std::move(b));
    pipeline_ = std::make_unique<ImagePipeline>(store_, pool_, blobs_, catalog_, registry_,
                                                references_, random_, clock_);
    user_ = store_.create_user({"u@example.com", "x", false})->id;
  }

  static Catalog make_catalog() {
    ModelEntry m = default_model_entry();
    m.channels = {"a", "b"};
    ModelEntry single = default_model_entry();
    single.id = "single";
    single.aliases = {};
    single.channels = {"a"};
    return Catalog({m, single});
  }

  Result<ImageJobOutcome> run(const ImageRequest& req, providers::PartialSink* sink = nullptr) {
    asio::io_context ioc;
    Caller caller{user_, 1, "openai"};
    auto fut = asio::co_spawn(ioc, pipeline_->run(caller, req, sink), asio::use_future);
    ioc.run();
    return fut.get();
  }

  ImageRequest request(std::string model = "gpt-image-2") {
    ImageRequest r;
    r.model = std::move(model);
    r.prompt = "a cat";
    return r;
  }

  Micros balance() { return store_.find_user(user_)->balance; }
  std::size_t ledger_rows() { return store_.list_ledger(user_, 1000)->size(); }

  FakeClock clock_;
  SeededRandom random_{1};
  store::MemoryStore store_;
  BlockingPool pool_;
  blobs::MemoryBlobStore blobs_;
  net::FakeHttpClient http_;
  ReferenceLoader references_;
  Catalog catalog_;
  providers::ProviderRegistry registry_;
  ScriptedProvider* a_ = nullptr;
  ScriptedProvider* b_ = nullptr;
  std::unique_ptr<ImagePipeline> pipeline_;
  std::int64_t user_ = 0;
};

TEST_F(ImagePipelineTest, SuccessChargesTheTierPriceTimesN) {
  store_.grant(user_, credits(10), "t");
  auto req = request("gpt-image-2-all");  // alias
  req.n = 2;
  req.size = "16:9";
  req.quality = "hd";
  auto out = run(req);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(out->images.size(), 2u);
  EXPECT_EQ(out->size.size.width, 2048);
  EXPECT_EQ(out->size.size.height, 1152);
  EXPECT_EQ(out->charged, credits(4));  // 2K = 2 credits x 2
  EXPECT_EQ(out->balance_after, credits(6));
  EXPECT_EQ(out->job.status, JobStatus::kSucceeded);
  EXPECT_EQ(out->job.model, "gpt-image-2");
  EXPECT_EQ(a_->last_task.width, 2048);
  auto blob = blobs_.stat(out->images[0].blob_id);
  ASSERT_TRUE(blob.has_value());
  EXPECT_TRUE(store_.check_ledger()->violations.empty());
}

TEST_F(ImagePipelineTest, JobIdsSortByCreationTimeAndCarry24RandomCharacters) {
  store_.grant(user_, credits(10), "t");
  auto first = run(request());
  clock_.advance_ms(1);
  auto second = run(request());
  clock_.advance_ms(62 * 62);
  auto third = run(request());
  ASSERT_TRUE(first && second && third);
  const std::string& a = first->job.id;
  const std::string& b = second->job.id;
  const std::string& c = third->job.id;
  EXPECT_EQ(a.size(), 4u + 8u + 24u) << a;
  EXPECT_TRUE(a.starts_with("img_")) << a;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_NE(a.substr(12), b.substr(12));  // the random part differs
}

TEST_F(ImagePipelineTest, RetryableFailureFailsOverAndChargesOnce) {
  store_.grant(user_, credits(10), "t");
  a_->script.push_back(ProviderError{FailureKind::kRetryable, "503", 503});
  auto out = run(request());
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(a_->calls, 1);
  EXPECT_EQ(b_->calls, 1);
  EXPECT_EQ(out->job.channel, "b");
  EXPECT_EQ(balance(), credits(9));
}

TEST_F(ImagePipelineTest, FailureAfterTheUpstreamAcceptedDoesNotFailOver) {
  // kFailed: e.g. a 200 cut short, or garbage. Another channel would render (and bill the
  // operator for) the same job a second time.
  store_.grant(user_, credits(10), "t");
  a_->script.push_back(ProviderError{FailureKind::kFailed, "reset after 200", 200});
  auto out = run(request());
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, ErrorCode::kUpstream);
  EXPECT_EQ(a_->calls, 1);
  EXPECT_EQ(b_->calls, 0);
  EXPECT_EQ(balance(), credits(10));
  // The client hears a summary; the upstream's detail stays in the log.
  EXPECT_EQ(out.error().message.find("reset after 200"), std::string::npos) << out.error().message;
}

class CountingSink final : public providers::PartialSink {
 public:
  asio::awaitable<void> partial(int, const providers::OutputImage&) override {
    ++count;
    co_return;
  }
  int count = 0;
};

TEST_F(ImagePipelineTest, StreamThatSentPartialsDoesNotFailOver) {
  // The client has seen this upstream's previews: a second channel's image would not match.
  store_.grant(user_, credits(10), "t");
  a_->script.push_back(ProviderError{FailureKind::kRetryable, "503 mid-stream", 503});
  a_->partials_before_failure = 1;
  CountingSink sink;
  auto req = request();
  req.stream = true;
  req.partial_images = 2;
  auto out = run(req, &sink);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(sink.count, 1);
  EXPECT_EQ(b_->calls, 0);
  EXPECT_EQ(balance(), credits(10));
}

TEST_F(ImagePipelineTest, StreamThatSentNothingFailsOver) {
  store_.grant(user_, credits(10), "t");
  a_->script.push_back(ProviderError{FailureKind::kRetryable, "503", 503});
  CountingSink sink;
  auto req = request();
  req.stream = true;
  req.partial_images = 2;
  auto out = run(req, &sink);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(b_->calls, 1);
  EXPECT_EQ(balance(), credits(9));
}

TEST_F(ImagePipelineTest, ExtraImagesFromTheUpstreamAreNotHandedOut) {
  store_.grant(user_, credits(10), "t");
  a_->extra_images = 3;
  auto req = request();
  req.n = 2;
  auto out = run(req);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(out->images.size(), 2u);
  EXPECT_EQ(balance(), credits(8));
}

TEST_F(ImagePipelineTest, LastChannelFailureRefunds) {
  store_.grant(user_, credits(10), "t");
  a_->script.push_back(ProviderError{FailureKind::kFailed, "timeout", 0});
  auto out = run(request("single"));
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, ErrorCode::kUpstream);
  EXPECT_EQ(b_->calls, 0);
  EXPECT_EQ(balance(), credits(10));
  EXPECT_TRUE(store_.check_ledger()->violations.empty());
}

TEST_F(ImagePipelineTest, MissingModelUsesTheFirstConfiguredModel) {
  store_.grant(user_, credits(10), "t");
  auto out = run(request(""));
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(out->job.model, "gpt-image-2");
}

TEST_F(ImagePipelineTest, EditWithoutImageIsRejected) {
  store_.grant(user_, credits(10), "t");
  auto req = request();
  req.edit_endpoint = true;
  auto out = run(req);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().param.value_or(""), "image");
  EXPECT_EQ(balance(), credits(10));
}

TEST_F(ImagePipelineTest, UpstreamRejectionIsA400AndRefunded) {
  store_.grant(user_, credits(10), "t");
  a_->script.push_back(ProviderError{FailureKind::kInvalidRequest, "moderation_blocked", 400});
  auto out = run(request());
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, ErrorCode::kInvalidRequest);
  EXPECT_EQ(balance(), credits(10));
}

TEST_F(ImagePipelineTest, AllChannelsExhaustedIs503) {
  store_.grant(user_, credits(10), "t");
  a_->script.push_back(ProviderError{FailureKind::kRetryable, "429", 429});
  b_->script.push_back(ProviderError{FailureKind::kRetryable, "500", 500});
  auto out = run(request());
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, ErrorCode::kUpstream);
  EXPECT_EQ(balance(), credits(10));
}

TEST_F(ImagePipelineTest, InsufficientCreditsWritesNothing) {
  auto out = run(request());
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, ErrorCode::kInsufficientCredits);
  EXPECT_EQ(a_->calls, 0);
  EXPECT_EQ(ledger_rows(), 0u);
  EXPECT_TRUE(store_.list_unfinished_jobs()->empty());
}

TEST_F(ImagePipelineTest, ValidationFailuresWriteNothing) {
  store_.grant(user_, credits(10), "t");
  const std::size_t rows = ledger_rows();
  struct Case {
    ImageRequest req;
    ErrorCode code;
    const char* param;
  };
  ImageRequest bad_size = request();
  bad_size.size = "1000x1000";
  ImageRequest square_4k = request();
  square_4k.size = "1:1";
  square_4k.quality = "uhd";
  ImageRequest unknown = request("dall-e-9");
  ImageRequest empty_prompt = request();
  empty_prompt.prompt.clear();
  ImageRequest mask_only = request();
  mask_only.mask = ImageSource{ImageSource::Kind::kBase64, "AAAA", "", "", "mask"};
  for (const Case& c : {Case{bad_size, ErrorCode::kInvalidRequest, "size"},
                        Case{square_4k, ErrorCode::kInvalidRequest, "size"},
                        Case{unknown, ErrorCode::kModelNotFound, "model"},
                        Case{empty_prompt, ErrorCode::kInvalidRequest, "prompt"},
                        Case{mask_only, ErrorCode::kInvalidRequest, "mask"}}) {
    auto out = run(c.req);
    ASSERT_FALSE(out.has_value());
    EXPECT_EQ(out.error().code, c.code) << out.error().message;
    EXPECT_EQ(out.error().param.value_or(""), c.param) << out.error().message;
  }
  EXPECT_EQ(ledger_rows(), rows);
  EXPECT_EQ(a_->calls, 0);
  EXPECT_EQ(balance(), credits(10));
}

// Prepares an async job (queued, reserved, task persisted) the way an async create call does.
PreparedImageJob prepare_async(ImagePipeline& pipeline, std::int64_t user,
                               const ImageRequest& req) {
  asio::io_context ioc;
  Caller caller{user, 1, "tasks", true};
  auto fut = asio::co_spawn(ioc, pipeline.prepare(caller, req), asio::use_future);
  ioc.run();
  auto prepared = fut.get();
  EXPECT_TRUE(prepared.has_value());
  return std::move(*prepared);
}

TEST_F(ImagePipelineTest, AsyncJobsRecordEachAttemptBeforeTheUpstreamCall) {
  store_.grant(user_, credits(5), "t");
  PreparedImageJob job = prepare_async(*pipeline_, user_, request());
  EXPECT_EQ(store_.find_job(job.job_id)->status, JobStatus::kQueued);
  ASSERT_TRUE(store_.transition_job(job.job_id, JobStatus::kQueued, JobStatus::kRunning, {}));
  a_->script = {ProviderError{FailureKind::kRetryable, "503", 503}};
  asio::io_context ioc;
  auto fut = asio::co_spawn(ioc, pipeline_->execute(job, nullptr), asio::use_future);
  ioc.run();
  ASSERT_TRUE(fut.get().has_value());
  const Job done = *store_.find_job(job.job_id);
  EXPECT_EQ(done.status, JobStatus::kSucceeded);
  EXPECT_EQ(done.attempts, 2);  // a (refused), then b
  EXPECT_EQ(done.channel, "b");
  EXPECT_EQ(a_->last_task.deadline_ms, clock_.now_ms() + PipelineSettings{}.async_deadline_ms);
}

TEST_F(ImagePipelineTest, RecoveryRequeuesFailsOrRefundsEachUnfinishedJobByWhatIsKnown) {
  store_.grant(user_, credits(10), "t");
  // A sync job: its caller is gone.
  NewJob sync;
  sync.id = "img_sync";
  sync.user_id = user_;
  sync.kind = "image.generation";
  sync.model = "gpt-image-2";
  sync.dialect = "openai";
  sync.reserve = credits(1);
  sync.start_running = true;
  ASSERT_TRUE(store_.create_job(sync));
  // Async: still queued; claimed but never sent; sent to a channel that cannot be asked.
  PreparedImageJob queued = prepare_async(*pipeline_, user_, request());
  PreparedImageJob claimed = prepare_async(*pipeline_, user_, request());
  ASSERT_TRUE(store_.transition_job(claimed.job_id, JobStatus::kQueued, JobStatus::kRunning, {}));
  PreparedImageJob sent = prepare_async(*pipeline_, user_, request());
  JobUpdate attempt;
  attempt.channel = "a";
  attempt.increment_attempts = true;
  ASSERT_TRUE(store_.transition_job(sent.job_id, JobStatus::kQueued, JobStatus::kRunning, attempt));
  EXPECT_EQ(balance(), credits(6));

  JobRunner runner(*pipeline_, store_, pool_, clock_, JobRunnerSettings{});
  asio::io_context ioc;
  const RecoveryReport report = runner.recover(ioc.get_executor());
  EXPECT_EQ(report.requeued, 2);
  EXPECT_EQ(report.resumed, 0);
  EXPECT_EQ(report.failed, 2);
  ioc.run();

  EXPECT_EQ(store_.find_job("img_sync")->status, JobStatus::kFailed);
  EXPECT_EQ(store_.find_job(queued.job_id)->status, JobStatus::kSucceeded);
  EXPECT_EQ(store_.find_job(claimed.job_id)->status, JobStatus::kSucceeded);
  const Job unknown = *store_.find_job(sent.job_id);
  EXPECT_EQ(unknown.status, JobStatus::kFailed);
  EXPECT_NE(unknown.error_message.find("outcome is unknown"), std::string::npos)
      << unknown.error_message;
  EXPECT_EQ(a_->calls, 2);  // the two requeued jobs; the unknown one was never resubmitted
  EXPECT_EQ(balance(), credits(8));
  EXPECT_TRUE(store_.check_ledger()->violations.empty());
}

TEST_F(ImagePipelineTest, TheTimeoutSweepRefundsOnceAndALateFinishIsDiscarded) {
  store_.grant(user_, credits(5), "t");
  PreparedImageJob job = prepare_async(*pipeline_, user_, request());
  ASSERT_TRUE(store_.transition_job(job.job_id, JobStatus::kQueued, JobStatus::kRunning, {}));
  JobRunner runner(*pipeline_, store_, pool_, clock_, JobRunnerSettings{});
  EXPECT_EQ(runner.sweep_once(), 0);
  clock_.advance_ms(PipelineSettings{}.async_deadline_ms);
  EXPECT_EQ(runner.sweep_once(), 1);
  EXPECT_EQ(runner.sweep_once(), 0);
  EXPECT_EQ(store_.find_job(job.job_id)->error_code, "timeout");
  EXPECT_EQ(balance(), credits(5));
  // The upstream finishes after the deadline: the refund stands.
  asio::io_context ioc;
  auto fut = asio::co_spawn(ioc, pipeline_->execute(job, nullptr), asio::use_future);
  ioc.run();
  EXPECT_FALSE(fut.get().has_value());
  EXPECT_EQ(store_.find_job(job.job_id)->status, JobStatus::kFailed);
  EXPECT_EQ(balance(), credits(5));
  EXPECT_TRUE(store_.check_ledger()->violations.empty());
}

}  // namespace
}  // namespace ig::jobs
