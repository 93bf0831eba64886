#include "jobs/webhook_dispatcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "core/standard_webhooks.h"
#include "net/fake_http_client.h"
#include "store/memory/memory_store.h"

namespace ig::jobs {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using store::DeliveryState;

// FakeHttpClient, except that URLs in `hanging` never answer: their send waits until it is
// cancelled (as CurlHttpClient's does through the cancellation slot), then fails with kAborted.
class HangingHttpClient final : public net::HttpClient {
 public:
  explicit HangingHttpClient(net::FakeHttpClient& fake) : fake_(fake) {}

  void hang(std::string url) {
    std::lock_guard lock(mu_);
    hanging_.insert(std::move(url));
  }
  int hung() const { return hung_.load(); }

  asio::awaitable<net::NetResult<net::HttpResponse>> send(net::HttpRequest request) override {
    bool hangs;
    {
      std::lock_guard lock(mu_);
      hangs = hanging_.contains(request.url);
    }
    if (!hangs) co_return co_await fake_.send(std::move(request));
    ++hung_;
    asio::steady_timer timer(co_await asio::this_coro::executor, 1h);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    --hung_;
    co_return std::unexpected(net::NetError{net::NetErrc::kAborted, "cancelled", false});
  }

 private:
  net::FakeHttpClient& fake_;
  std::mutex mu_;
  std::set<std::string> hanging_;
  std::atomic<int> hung_{0};
};

std::string header(const net::HttpRequest& request, std::string_view name) {
  for (const auto& [key, value] : request.headers) {
    if (key == name) return value;
  }
  return "<missing>";
}

class WebhookDispatcherTest : public ::testing::Test {
 protected:
  WebhookDispatcherTest() : store_(clock_), client_(http_), pool_(2) {
    user_ = store_.create_user({"u@example.com", "x", false})->id;
    settings_.retry_schedule_ms = {0, 10, 10};
    settings_.poll_interval_ms = 2;
    settings_.timeout_ms = 1000;
  }
  ~WebhookDispatcherTest() override { EXPECT_TRUE(shutdown()); }

  void start() {
    dispatcher_ =
        std::make_unique<WebhookDispatcher>(store_, pool_, client_, clock_, random_, settings_,
                                            [this](const Job& job) { return render(job); });
    dispatcher_->start(ioc_.get_executor());
  }

  // The API layer's renderer, reduced to what the tests check. Runs on pool threads.
  std::optional<std::string> render(const Job& job) {
    ++renders_;
    if (!render_ok_) return std::nullopt;
    return R"({"id":")" + job.id + R"(","status":")" + std::string(to_string(job.status)) + R"("})";
  }

  // Stops the dispatcher and runs the context until nothing is left: true when it drained.
  bool shutdown() {
    if (!dispatcher_) return true;
    dispatcher_->stop();
    ioc_.restart();
    ioc_.run_for(5s);
    const bool drained = ioc_.stopped();
    EXPECT_EQ(dispatcher_->in_flight(), 0u);
    dispatcher_.reset();
    return drained;
  }

  // A finished job with a callback URL (so the store has queued its delivery).
  std::string finished_job(const std::string& url) {
    NewJob job;
    job.id = "job_" + std::to_string(++jobs_made_);
    job.user_id = user_;
    job.key_id = 1;
    job.kind = "image.generation";
    job.model = "m";
    job.dialect = "openai";
    job.params_json = "{}";
    job.callback_url = url;
    EXPECT_TRUE(store_.create_job(job).has_value());
    JobFinish finish;
    finish.status = JobStatus::kSucceeded;
    finish.result_json = "{}";
    EXPECT_TRUE(store_.finish_job(job.id, finish).has_value());
    return job.id;
  }

  store::Delivery delivery(const std::string& job_id) {
    auto list = store_.list_deliveries(job_id);
    EXPECT_TRUE(list.has_value() && list->size() == 1);
    return list && !list->empty() ? list->front() : store::Delivery{};
  }

  // Runs the io_context until `done` holds (false after 5 s of real time).
  bool run_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (ioc_.stopped()) ioc_.restart();
      ioc_.run_one_for(5ms);
    }
    return true;
  }
  void run_for(std::chrono::milliseconds d) {
    if (ioc_.stopped()) ioc_.restart();
    ioc_.run_for(d);
  }

  bool attempts_are(const std::string& job_id, int n) { return delivery(job_id).attempts == n; }
  bool state_is(const std::string& job_id, DeliveryState state) {
    return delivery(job_id).state == state;
  }

  std::vector<net::HttpRequest> requests_to(const std::string& url) {
    std::vector<net::HttpRequest> out;
    for (auto& r : http_.requests()) {
      if (r.url == url) out.push_back(std::move(r));
    }
    return out;
  }

  std::string secret() { return *store_.webhook_secret(user_, "whsec_unused"); }

  FakeClock clock_;
  SeededRandom random_{7};
  store::MemoryStore store_;
  net::FakeHttpClient http_;
  HangingHttpClient client_;
  asio::io_context ioc_;
  BlockingPool pool_;  // after ioc_: its threads are joined before the context goes away
  WebhookSettings settings_;
  std::atomic<int> renders_{0};
  std::atomic<bool> render_ok_{true};
  std::unique_ptr<WebhookDispatcher> dispatcher_;
  std::int64_t user_ = 0;
  int jobs_made_ = 0;
};

constexpr const char* kUrl = "https://hooks.example.com/imagegate";

TEST_F(WebhookDispatcherTest, DeliversOnceWithSignedStandardHeaders) {
  http_.add_response(kUrl, 200, "ok");
  settings_.address_policy = net::AddressPolicy{};
  const std::string job = finished_job(kUrl);
  start();
  ASSERT_TRUE(run_until([&] { return state_is(job, DeliveryState::kSucceeded); }));
  run_for(30ms);  // more polls: nothing is sent twice
  auto sent = http_.requests();
  ASSERT_EQ(sent.size(), 1u);
  const net::HttpRequest& r = sent[0];
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.url, kUrl);
  EXPECT_EQ(header(r, "content-type"), "application/json");
  EXPECT_EQ(header(r, "user-agent"), "imagegate-webhooks/1");
  EXPECT_EQ(header(r, "webhook-id"), "msg_" + job);
  EXPECT_EQ(header(r, "webhook-timestamp"), std::to_string(clock_.now_s()));
  EXPECT_EQ(r.max_redirects, 0);
  EXPECT_EQ(r.total_timeout_ms, settings_.timeout_ms);
  EXPECT_EQ(r.connect_timeout_ms, settings_.connect_timeout_ms);
  EXPECT_EQ(r.max_response_bytes, settings_.max_response_bytes);
  EXPECT_EQ(r.address_policy, settings_.address_policy);
  EXPECT_EQ(r.body, R"({"id":")" + job + R"(","status":"succeeded"})");

  // The user's secret was created on first use and signs the request.
  const std::string key = secret();
  EXPECT_TRUE(key.starts_with("whsec_"));
  EXPECT_TRUE(verify_webhook(key, header(r, "webhook-id"), clock_.now_s(), r.body,
                             header(r, "webhook-signature"), clock_.now_s()));

  const store::Delivery d = delivery(job);
  EXPECT_EQ(d.body, r.body);  // saved for later attempts and replays
  EXPECT_EQ(d.attempts, 1);
  EXPECT_EQ(d.last_status, 200);
  EXPECT_EQ(d.last_error, "");
  auto attempts = store_.list_delivery_attempts(d.id);
  ASSERT_TRUE(attempts.has_value());
  ASSERT_EQ(attempts->size(), 1u);
  EXPECT_EQ((*attempts)[0].status, 200);
  EXPECT_EQ((*attempts)[0].at_ms, clock_.now_ms());
  EXPECT_EQ(renders_.load(), 1);
}

TEST_F(WebhookDispatcherTest, SignsWithTheUsersCurrentSecret) {
  http_.set_handler([](const net::HttpRequest&) { return net::FakeHttpClient::response(204, ""); });
  SeededRandom other(99);
  const std::string rotated = generate_webhook_secret(other);
  ASSERT_TRUE(store_.set_webhook_secret(user_, rotated).has_value());
  const std::string a = finished_job(kUrl);
  const std::string b = finished_job("https://b.example.com/");
  start();
  ASSERT_TRUE(run_until([&] {
    return state_is(a, DeliveryState::kSucceeded) && state_is(b, DeliveryState::kSucceeded);
  }));
  EXPECT_EQ(secret(), rotated);
  for (const auto& r : http_.requests()) {
    EXPECT_TRUE(verify_webhook(rotated, header(r, "webhook-id"),
                               std::stoll(header(r, "webhook-timestamp")), r.body,
                               header(r, "webhook-signature")));
  }
}

TEST_F(WebhookDispatcherTest, RetryKeepsTheIdAndRefreshesTheTimestamp) {
  settings_.retry_schedule_ms = {0, 10'000, 10'000};
  http_.add_response(kUrl, 500, "boom");
  http_.add_response(kUrl, 200, "ok");
  const std::string job = finished_job(kUrl);
  start();
  ASSERT_TRUE(run_until([&] { return attempts_are(job, 1); }));
  const std::int64_t failed_at = clock_.now_ms();
  store::Delivery d = delivery(job);
  EXPECT_EQ(d.state, DeliveryState::kPending);
  EXPECT_EQ(d.last_status, 500);
  EXPECT_EQ(d.last_error, "HTTP 500");
  EXPECT_GE(d.next_attempt_at_ms, failed_at + 8'000);  // 10 s +/- 20 %
  EXPECT_LE(d.next_attempt_at_ms, failed_at + 12'000);
  run_for(30ms);  // not due yet: nothing is sent
  EXPECT_EQ(http_.request_count(), 1u);

  clock_.set_ms(d.next_attempt_at_ms);
  dispatcher_->notify();
  ASSERT_TRUE(run_until([&] { return state_is(job, DeliveryState::kSucceeded); }));
  auto sent = http_.requests();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(header(sent[0], "webhook-id"), header(sent[1], "webhook-id"));
  EXPECT_NE(header(sent[0], "webhook-timestamp"), header(sent[1], "webhook-timestamp"));
  EXPECT_EQ(header(sent[1], "webhook-timestamp"), std::to_string(clock_.now_s()));
  EXPECT_EQ(sent[0].body, sent[1].body);
  for (const auto& r : sent) {
    EXPECT_TRUE(verify_webhook(secret(), header(r, "webhook-id"),
                               std::stoll(header(r, "webhook-timestamp")), r.body,
                               header(r, "webhook-signature")));
  }
  d = delivery(job);
  EXPECT_EQ(d.attempts, 2);
  EXPECT_EQ(d.cycle_attempts, 2);
  auto attempts = store_.list_delivery_attempts(d.id);
  ASSERT_EQ(attempts->size(), 2u);
  EXPECT_EQ((*attempts)[0].status, 500);
  EXPECT_EQ((*attempts)[1].status, 200);
  EXPECT_EQ(renders_.load(), 1);  // the saved body is reused
}

TEST_F(WebhookDispatcherTest, AlwaysFailingReceiverGivesUpAfterTheSchedule) {
  settings_.retry_schedule_ms = {0, 10'000, 60'000};
  http_.add_response(kUrl, 503, "");
  const std::string job = finished_job(kUrl);
  start();
  const std::int64_t delays[] = {10'000, 60'000};
  for (int attempt = 1; attempt <= 2; ++attempt) {
    ASSERT_TRUE(run_until([&] { return attempts_are(job, attempt); }));
    const store::Delivery d = delivery(job);
    ASSERT_EQ(d.state, DeliveryState::kPending);
    const std::int64_t delay = delays[attempt - 1];
    EXPECT_GE(d.next_attempt_at_ms, clock_.now_ms() + delay * 8 / 10) << attempt;
    EXPECT_LE(d.next_attempt_at_ms, clock_.now_ms() + delay * 12 / 10) << attempt;
    clock_.set_ms(d.next_attempt_at_ms);
    dispatcher_->notify();
  }
  ASSERT_TRUE(run_until([&] { return state_is(job, DeliveryState::kFailed); }));
  clock_.advance_ms(24 * 3600 * 1000);
  dispatcher_->notify();
  run_for(30ms);
  EXPECT_EQ(http_.request_count(), 3u);
  const store::Delivery d = delivery(job);
  EXPECT_EQ(d.attempts, 3);
  EXPECT_EQ(d.last_status, 503);
  EXPECT_EQ(d.last_error, "HTTP 503");
}

TEST_F(WebhookDispatcherTest, JitterStaysWithinItsShareOfTheDelay) {
  settings_.retry_schedule_ms = {0, 100'000};
  http_.set_handler([](const net::HttpRequest&) { return net::FakeHttpClient::response(500, ""); });
  std::vector<std::string> jobs;
  for (int i = 0; i < 20; ++i) jobs.push_back(finished_job(kUrl));
  start();
  ASSERT_TRUE(run_until([&] {
    for (const auto& job : jobs) {
      if (!attempts_are(job, 1)) return false;
    }
    return true;
  }));
  std::set<std::int64_t> due;
  for (const auto& job : jobs) {
    const store::Delivery d = delivery(job);
    EXPECT_GE(d.next_attempt_at_ms, clock_.now_ms() + 80'000);
    EXPECT_LE(d.next_attempt_at_ms, clock_.now_ms() + 120'000);
    due.insert(d.next_attempt_at_ms);
  }
  EXPECT_GT(due.size(), 10u);  // spread, not one herd
}

TEST_F(WebhookDispatcherTest, RedirectIsAFailureAndIsNotFollowed) {
  const std::string elsewhere = "https://elsewhere.example.com/";
  http_.add_response(kUrl, 302, "", {{"Location", elsewhere}});
  http_.add_response(elsewhere, 200, "");
  const std::string job = finished_job(kUrl);
  start();
  ASSERT_TRUE(run_until([&] { return attempts_are(job, 1); }));
  const store::Delivery d = delivery(job);
  EXPECT_EQ(d.state, DeliveryState::kPending);  // retried later, like any failure
  EXPECT_EQ(d.last_status, 302);
  EXPECT_EQ(d.last_error, "redirect not followed (HTTP 302)");
  EXPECT_TRUE(requests_to(elsewhere).empty());
  ASSERT_EQ(requests_to(kUrl).size(), 1u);
  EXPECT_EQ(requests_to(kUrl)[0].max_redirects, 0);
}

TEST_F(WebhookDispatcherTest, TimeoutIsRecordedWithoutStatus) {
  http_.add_response(kUrl, std::unexpected(net::NetError{net::NetErrc::kTimeout, "slow", false}));
  const std::string job = finished_job(kUrl);
  start();
  ASSERT_TRUE(run_until([&] { return attempts_are(job, 1); }));
  const store::Delivery d = delivery(job);
  EXPECT_EQ(d.state, DeliveryState::kPending);
  EXPECT_EQ(d.last_status, 0);
  EXPECT_EQ(d.last_error, "timeout");
  auto attempts = store_.list_delivery_attempts(d.id);
  ASSERT_EQ(attempts->size(), 1u);
  EXPECT_EQ((*attempts)[0].status, 0);
  EXPECT_EQ((*attempts)[0].error, "timeout");
}

TEST_F(WebhookDispatcherTest, BlockedAddressIsRecordedWithoutStatus) {
  http_.add_response(
      kUrl, std::unexpected(net::NetError{net::NetErrc::kBlockedAddress, "10.0.0.1", true}));
  const std::string job = finished_job(kUrl);
  start();
  ASSERT_TRUE(run_until([&] { return attempts_are(job, 1); }));
  const store::Delivery d = delivery(job);
  EXPECT_EQ(d.last_status, 0);
  EXPECT_EQ(d.last_error, "blocked address");  // the client's message (an address) is not shown
}

TEST_F(WebhookDispatcherTest, FailingUrlDoesNotDelayAnother) {
  const std::string bad = "https://bad.example.com/";
  http_.add_response(bad, 500, "");
  http_.add_response(kUrl, 200, "");
  const std::string failing = finished_job(bad);
  const std::string fine = finished_job(kUrl);
  start();
  ASSERT_TRUE(run_until(
      [&] { return state_is(fine, DeliveryState::kSucceeded) && attempts_are(failing, 1); }));
  EXPECT_EQ(delivery(failing).state, DeliveryState::kPending);
}

TEST_F(WebhookDispatcherTest, HangingReceiverHoldsOneSlotOnly) {
  const std::string slow = "https://slow.example.com/";
  client_.hang(slow);
  http_.add_response(kUrl, 200, "");
  const std::string stuck = finished_job(slow);  // claimed first
  const std::string fine = finished_job(kUrl);
  start();
  ASSERT_TRUE(run_until(
      [&] { return state_is(fine, DeliveryState::kSucceeded) && dispatcher_->in_flight() == 1; }));
  EXPECT_EQ(client_.hung(), 1);
  EXPECT_EQ(delivery(stuck).attempts, 0);

  // stop() cancels the hanging attempt; it is not recorded and stays leased (due again later).
  ASSERT_TRUE(shutdown());
  EXPECT_EQ(client_.hung(), 0);
  const store::Delivery d = delivery(stuck);
  EXPECT_EQ(d.state, DeliveryState::kPending);
  EXPECT_EQ(d.attempts, 0);
  EXPECT_EQ(d.next_attempt_at_ms, clock_.now_ms() + settings_.timeout_ms + 5'000);
}

TEST_F(WebhookDispatcherTest, MaxConcurrentBoundsAttemptsInFlight) {
  settings_.max_concurrent = 2;
  std::vector<std::string> jobs;
  for (int i = 0; i < 3; ++i) {
    const std::string url = "https://slow" + std::to_string(i) + ".example.com/";
    client_.hang(url);
    jobs.push_back(finished_job(url));
  }
  start();
  ASSERT_TRUE(run_until([&] { return client_.hung() == 2; }));
  run_for(30ms);
  EXPECT_EQ(client_.hung(), 2);
  EXPECT_EQ(dispatcher_->in_flight(), 2u);
  // The third was never claimed: it is still due now.
  EXPECT_EQ(delivery(jobs[2]).next_attempt_at_ms, clock_.now_ms());
}

TEST_F(WebhookDispatcherTest, UnrenderableBodyFailsWithoutRetry) {
  render_ok_ = false;
  http_.add_response(kUrl, 200, "");
  const std::string job = finished_job(kUrl);
  start();
  ASSERT_TRUE(run_until([&] { return state_is(job, DeliveryState::kFailed); }));
  const store::Delivery d = delivery(job);
  EXPECT_EQ(d.attempts, 1);
  EXPECT_EQ(d.last_status, 0);
  EXPECT_EQ(d.last_error, "cannot render the callback body");
  EXPECT_EQ(http_.request_count(), 0u);
}

TEST_F(WebhookDispatcherTest, ReplaySendsAgainWithTheSameId) {
  http_.add_response(kUrl, 200, "");
  const std::string job = finished_job(kUrl);
  start();
  ASSERT_TRUE(run_until([&] { return state_is(job, DeliveryState::kSucceeded); }));
  clock_.advance_ms(60'000);
  ASSERT_TRUE(store_.replay_delivery("msg_" + job, clock_.now_ms()).has_value());
  dispatcher_->notify();
  ASSERT_TRUE(
      run_until([&] { return attempts_are(job, 2) && state_is(job, DeliveryState::kSucceeded); }));
  auto sent = http_.requests();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(header(sent[1], "webhook-id"), "msg_" + job);
  EXPECT_EQ(header(sent[0], "webhook-id"), header(sent[1], "webhook-id"));
  EXPECT_EQ(sent[0].body, sent[1].body);
  EXPECT_NE(header(sent[0], "webhook-timestamp"), header(sent[1], "webhook-timestamp"));
  EXPECT_EQ(renders_.load(), 1);
}

TEST_F(WebhookDispatcherTest, NewDispatcherDeliversWhatAStoppedOneLeft) {
  const std::string slow = "https://slow.example.com/";
  client_.hang(slow);
  const std::string job = finished_job(slow);
  start();
  ASSERT_TRUE(run_until([&] { return client_.hung() == 1; }));
  ASSERT_TRUE(shutdown());  // like a restart mid-attempt

  net::FakeHttpClient fresh;
  fresh.add_response(slow, 200, "");
  WebhookDispatcher next(store_, pool_, fresh, clock_, random_, settings_,
                         [](const Job&) { return std::optional<std::string>("{}"); });
  next.start(ioc_.get_executor());
  run_for(20ms);  // still leased
  EXPECT_EQ(fresh.request_count(), 0u);
  clock_.advance_ms(settings_.timeout_ms + 30'000);
  next.notify();
  ASSERT_TRUE(run_until([&] { return state_is(job, DeliveryState::kSucceeded); }));
  EXPECT_EQ(fresh.request_count(), 1u);
  next.stop();
  ioc_.restart();
  ioc_.run_for(5s);
  EXPECT_TRUE(ioc_.stopped());
}

TEST_F(WebhookDispatcherTest, StopIsIdempotentAndSafeAnytime) {
  {
    WebhookDispatcher never_started(store_, pool_, client_, clock_, random_, settings_,
                                    [](const Job&) { return std::optional<std::string>("{}"); });
    never_started.notify();
    never_started.stop();
    never_started.stop();
  }
  http_.add_response(kUrl, 200, "");
  start();
  run_for(10ms);
  dispatcher_->stop();
  dispatcher_->stop();
  dispatcher_->notify();  // ignored after stop
  const std::string job = finished_job(kUrl);
  ASSERT_TRUE(shutdown());
  EXPECT_EQ(delivery(job).attempts, 0);  // stopped: nothing claimed
  EXPECT_EQ(http_.request_count(), 0u);
}

}  // namespace
}  // namespace ig::jobs
