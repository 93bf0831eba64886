#include "jobs/webhook_dispatcher.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "core/standard_webhooks.h"

namespace ig::jobs {
namespace asio = boost::asio;

namespace {

// A claim's lease outlasts the attempt's own deadline by this much (store and pool time).
constexpr std::int64_t kLeaseGraceMs = 5'000;
// Largest jitter spread, so 2 * spread + 1 fits Random::uniform's argument.
constexpr std::int64_t kMaxJitterSpreadMs = std::int64_t{1} << 30;

// Attempt error text for a failure without a response; shown to users, so it never carries
// the client's message (resolved addresses, internals).
std::string describe(const net::NetError& error) {
  switch (error.code) {
    case net::NetErrc::kConnect:
      return "connection failed";
    case net::NetErrc::kTimeout:
      return "timeout";
    case net::NetErrc::kReset:
      return "connection reset";
    case net::NetErrc::kTooLarge:
      return "response too large";
    case net::NetErrc::kBlockedAddress:
      return "blocked address";
    case net::NetErrc::kBadUrl:
      return "invalid callback URL";
    case net::NetErrc::kTooManyRedirects:
      return "redirect not followed";
    case net::NetErrc::kAborted:
      return "aborted";
    case net::NetErrc::kTls:
      return "TLS error";
    case net::NetErrc::kOther:
      return "request failed";
  }
  return "request failed";
}

// What an attempt needs from the store before it can send.
struct Prepared {
  enum class Kind { kRetryLater, kGiveUp, kReady };
  Kind kind = Kind::kRetryLater;
  std::string body;
  std::string secret;
  std::string error;  // kGiveUp: the attempt's error; kRetryLater: for the log
};

}  // namespace

struct WebhookDispatcher::Impl : std::enable_shared_from_this<Impl> {
  Impl(store::Store& store, BlockingPool& pool, net::HttpClient& http, const Clock& clock,
       Random& random, WebhookSettings settings, RenderCallbackBody render)
      : store_(store),
        pool_(pool),
        http_(http),
        clock_(clock),
        random_(random),
        settings_(std::move(settings)),
        render_(std::move(render)),
        max_concurrent_(static_cast<std::size_t>(std::max(1, settings_.max_concurrent))) {}

  void start(asio::any_io_executor executor);
  void notify();
  void stop();

  // --- everything below runs on the executor (one handler at a time) ---
  // Coroutines take `self` so the state outlives them, whenever the dispatcher is destroyed.
  asio::awaitable<void> poll_loop(std::shared_ptr<Impl> self);
  asio::awaitable<void> deliver(std::shared_ptr<Impl> self, store::Delivery delivery);
  void spawn(store::Delivery delivery);
  void finished(std::uint64_t attempt, const std::string& delivery_id, std::exception_ptr error);
  void wake();
  void on_stop();
  // --- pool and helpers ---
  Prepared prepare(const store::Delivery& delivery, const std::string& candidate_secret);
  std::optional<std::int64_t> retry_at(int cycle_attempts_done, std::int64_t now_ms);
  asio::awaitable<void> record(const store::Delivery& delivery, store::DeliveryOutcome outcome);

  store::Store& store_;
  BlockingPool& pool_;
  net::HttpClient& http_;
  const Clock& clock_;
  Random& random_;
  const WebhookSettings settings_;
  const RenderCallbackBody render_;
  const std::size_t max_concurrent_;

  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> in_flight_{0};
  std::atomic<bool> wake_posted_{false};  // a notify() wake-up is queued on the executor

  std::mutex mu_;
  std::optional<asio::any_io_executor> started_on_;  // guarded by mu_; set once by start()
  bool stop_requested_ = false;                      // guarded by mu_

  // Executor-only state.
  asio::any_io_executor executor_;            // for spawning attempts
  asio::steady_timer* wake_timer_ = nullptr;  // the loop's timer while it runs
  bool wake_requested_ = false;
  bool more_due_ = false;  // the last claim was full: more deliveries may be due
  bool claim_failing_ = false;
  std::uint64_t next_attempt_ = 0;
  std::map<std::uint64_t, asio::cancellation_signal> attempts_;  // in flight, for stop()
  std::set<std::string> active_ids_;  // deliveries in flight (never run one twice at once)
};

void WebhookDispatcher::Impl::start(asio::any_io_executor executor) {
  {
    std::lock_guard lock(mu_);
    if (started_on_ || stop_requested_) return;
    started_on_ = executor;
    executor_ = executor;
  }
  asio::co_spawn(executor, poll_loop(shared_from_this()), [](std::exception_ptr error) {
    if (!error) return;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      spdlog::error("webhook dispatcher stopped: {}", e.what());
    } catch (...) {
      spdlog::error("webhook dispatcher stopped: unknown exception");
    }
  });
}

void WebhookDispatcher::Impl::notify() {
  std::optional<asio::any_io_executor> executor;
  {
    std::lock_guard lock(mu_);
    if (stop_requested_ || !started_on_) return;
    executor = started_on_;
  }
  // A burst of notifications (many jobs finishing at once) costs one wake-up.
  if (wake_posted_.exchange(true)) return;
  asio::post(*executor, [self = shared_from_this()] {
    self->wake_posted_ = false;
    self->wake();
  });
}

void WebhookDispatcher::Impl::stop() {
  std::optional<asio::any_io_executor> executor;
  {
    std::lock_guard lock(mu_);
    if (stop_requested_) return;
    stop_requested_ = true;
    stopping_ = true;
    executor = started_on_;
  }
  if (executor) asio::post(*executor, [self = shared_from_this()] { self->on_stop(); });
}

void WebhookDispatcher::Impl::wake() {
  wake_requested_ = true;
  if (wake_timer_ != nullptr) wake_timer_->cancel();
}

void WebhookDispatcher::Impl::on_stop() {
  wake();
  // Emit by id: a cancelled attempt may finish (and leave the map) while we iterate.
  std::vector<std::uint64_t> ids;
  ids.reserve(attempts_.size());
  for (const auto& [id, signal] : attempts_) ids.push_back(id);
  for (std::uint64_t id : ids) {
    auto it = attempts_.find(id);
    if (it != attempts_.end()) it->second.emit(asio::cancellation_type::terminal);
  }
}

asio::awaitable<void> WebhookDispatcher::Impl::poll_loop(std::shared_ptr<Impl> self) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  wake_timer_ = &timer;
  const std::int64_t lease_ms = std::int64_t{settings_.timeout_ms} + kLeaseGraceMs;
  const auto poll = std::chrono::milliseconds(std::max(1, settings_.poll_interval_ms));
  const std::size_t batch =
      static_cast<std::size_t>(std::clamp(settings_.claim_batch, 1, store::kMaxDeliveryClaim));
  while (!stopping_) {
    const std::size_t running = in_flight_.load();
    if (running < max_concurrent_) {
      const int limit = static_cast<int>(std::min(max_concurrent_ - running, batch));
      const std::int64_t now_ms = clock_.now_ms();
      auto claim = [this, now_ms, lease_ms, limit] {
        return store_.claim_due_deliveries(now_ms, lease_ms, limit);
      };
      auto claimed = co_await pool_.run(claim);
      if (!claimed) {
        more_due_ = false;
        if (!claim_failing_) {
          spdlog::warn("webhooks: claiming due deliveries failed: {}", claimed.error().message);
        }
        claim_failing_ = true;
      } else {
        if (claim_failing_) spdlog::info("webhooks: claiming due deliveries works again");
        claim_failing_ = false;
        more_due_ = claimed->size() == static_cast<std::size_t>(limit);
        if (stopping_) break;  // claimed but never started: their leases make them due again
        for (auto& delivery : *claimed) spawn(std::move(delivery));
        if (more_due_ && in_flight_.load() < max_concurrent_) continue;
      }
    }
    if (wake_requested_) {
      wake_requested_ = false;
      continue;
    }
    timer.expires_after(poll);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    wake_requested_ = false;
  }
  wake_timer_ = nullptr;
}

void WebhookDispatcher::Impl::spawn(store::Delivery delivery) {
  // Only if an attempt outlived its lease (a stalled pool): the running attempt records it.
  if (!active_ids_.insert(delivery.id).second) return;
  const std::uint64_t id = next_attempt_++;
  asio::cancellation_signal& signal = attempts_[id];
  ++in_flight_;
  std::string delivery_id = delivery.id;
  asio::co_spawn(executor_, deliver(shared_from_this(), std::move(delivery)),
                 asio::bind_cancellation_slot(
                     signal.slot(),
                     [self = shared_from_this(), id, delivery_id = std::move(delivery_id)](
                         std::exception_ptr error) { self->finished(id, delivery_id, error); }));
}

void WebhookDispatcher::Impl::finished(std::uint64_t attempt, const std::string& delivery_id,
                                       std::exception_ptr error) {
  attempts_.erase(attempt);
  active_ids_.erase(delivery_id);
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      spdlog::error("webhook {}: attempt aborted: {}", delivery_id, e.what());
    } catch (...) {
      spdlog::error("webhook {}: attempt aborted: unknown exception", delivery_id);
    }
  }
  const std::size_t before = in_flight_.fetch_sub(1);
  // A freed slot matters only when deliveries may be waiting for one.
  if (!stopping_ && (more_due_ || before >= max_concurrent_)) wake();
}

Prepared WebhookDispatcher::Impl::prepare(const store::Delivery& delivery,
                                          const std::string& candidate_secret) {
  Prepared out;
  if (delivery.body.empty()) {
    auto job = store_.find_job(delivery.job_id);
    if (!job) {
      if (job.error().code == store::StoreErrc::kNotFound) {
        out.kind = Prepared::Kind::kGiveUp;
        out.error = "job not found";
      } else {
        out.error = "finding the job: " + job.error().message;
      }
      return out;
    }
    auto body = render_(*job);
    if (!body) {
      out.kind = Prepared::Kind::kGiveUp;
      out.error = "cannot render the callback body";
      return out;
    }
    out.body = std::move(*body);
  } else {
    out.body = delivery.body;
  }
  auto secret = store_.webhook_secret(delivery.user_id, candidate_secret);
  if (!secret) {
    if (secret.error().code == store::StoreErrc::kNotFound) {
      out.kind = Prepared::Kind::kGiveUp;
      out.error = "user not found";
    } else {
      out.error = "reading the webhook secret: " + secret.error().message;
    }
    return out;
  }
  if (!webhook_secret_key(*secret)) {
    out.kind = Prepared::Kind::kGiveUp;
    out.error = "invalid webhook secret";
    return out;
  }
  out.secret = std::move(*secret);
  out.kind = Prepared::Kind::kReady;
  return out;
}

std::optional<std::int64_t> WebhookDispatcher::Impl::retry_at(int cycle_attempts_done,
                                                              std::int64_t now_ms) {
  const auto& schedule = settings_.retry_schedule_ms;
  if (cycle_attempts_done < 0 || static_cast<std::size_t>(cycle_attempts_done) >= schedule.size()) {
    return std::nullopt;
  }
  std::int64_t delay = std::max<std::int64_t>(0, schedule[cycle_attempts_done]);
  const std::int64_t percent = std::clamp(settings_.jitter_percent, 0, 100);
  // delay / 100 * percent first would lose precision for short delays; delays are far below
  // 2^63 / 100, so this cannot overflow.
  const std::int64_t spread = std::min(delay * percent / 100, kMaxJitterSpreadMs);
  if (spread > 0) {
    const auto offset =
        static_cast<std::int64_t>(random_.uniform(static_cast<std::uint32_t>(2 * spread + 1)));
    delay += offset - spread;  // |offset - spread| <= spread <= delay: never negative
  }
  return now_ms + delay;
}

asio::awaitable<void> WebhookDispatcher::Impl::record(const store::Delivery& delivery,
                                                      store::DeliveryOutcome outcome) {
  auto save = [this, &delivery, &outcome] {
    return store_.record_delivery_attempt(delivery.id, outcome);
  };
  auto saved = co_await pool_.run(save);
  if (!saved) {
    // kConflict: no longer pending (a concurrent attempt after an expired lease recorded it).
    if (saved.error().code == store::StoreErrc::kConflict) {
      spdlog::debug("webhook {}: attempt not recorded: {}", delivery.id, saved.error().message);
    } else {
      spdlog::warn("webhook {}: recording the attempt failed: {}", delivery.id,
                   saved.error().message);
    }
    co_return;
  }
  if (outcome.success) {
    spdlog::debug("webhook {} delivered (job {}, attempt {})", delivery.id, delivery.job_id,
                  saved->attempts);
  } else if (!outcome.retry_at_ms) {
    spdlog::info("webhook {} failed for good (job {}, user {}, {} attempts): {}", delivery.id,
                 delivery.job_id, delivery.user_id, saved->attempts, outcome.error);
  } else {
    spdlog::debug("webhook {} attempt {} failed ({}), retry in {} ms", delivery.id, saved->attempts,
                  outcome.error, *outcome.retry_at_ms - clock_.now_ms());
  }
}

asio::awaitable<void> WebhookDispatcher::Impl::deliver(std::shared_ptr<Impl> self,
                                                       store::Delivery delivery) {
  // stop() cancels the send; what follows must still run (and never throw) to end cleanly.
  co_await asio::this_coro::throw_if_cancelled(false);

  const std::string candidate_secret = generate_webhook_secret(random_);
  auto load = [this, &delivery, &candidate_secret] { return prepare(delivery, candidate_secret); };
  Prepared prepared = co_await pool_.run(load);
  if (prepared.kind == Prepared::Kind::kRetryLater) {
    // The store is failing: leave the delivery leased; it is due again when the lease ends.
    spdlog::warn("webhook {}: {}", delivery.id, prepared.error);
    co_return;
  }
  if (prepared.kind == Prepared::Kind::kGiveUp) {
    store::DeliveryOutcome outcome;
    outcome.body = std::move(prepared.body);
    outcome.at_ms = clock_.now_ms();
    outcome.error = std::move(prepared.error);
    co_await record(delivery, std::move(outcome));
    co_return;
  }

  const std::int64_t at_ms = clock_.now_ms();
  const std::int64_t timestamp_s = at_ms / 1000;
  net::HttpRequest request;
  request.method = "POST";
  request.url = delivery.url;
  request.headers = {
      {"content-type", "application/json"},
      {"user-agent", settings_.user_agent},
      {"webhook-id", delivery.id},
      {"webhook-timestamp", std::to_string(timestamp_s)},
      {"webhook-signature", sign_webhook(prepared.secret, delivery.id, timestamp_s, prepared.body)},
  };
  request.body = prepared.body;
  request.connect_timeout_ms = settings_.connect_timeout_ms;
  request.total_timeout_ms = settings_.timeout_ms;
  request.max_response_bytes = settings_.max_response_bytes;
  request.max_redirects = 0;
  request.address_policy = settings_.address_policy;
  auto response = co_await http_.send(std::move(request));
  const std::int64_t end_ms = clock_.now_ms();
  if (!response && response.error().code == net::NetErrc::kAborted && stopping_) {
    co_return;  // cancelled by stop(): not an attempt the receiver got to answer
  }

  store::DeliveryOutcome outcome;
  outcome.body = std::move(prepared.body);
  outcome.at_ms = at_ms;
  outcome.duration_ms = std::max<std::int64_t>(0, end_ms - at_ms);
  bool may_retry = true;
  if (response) {
    outcome.status = response->status;
    if (outcome.status >= 200 && outcome.status <= 299) {
      outcome.success = true;
    } else if (outcome.status >= 300 && outcome.status <= 399) {
      outcome.error = fmt::format("redirect not followed (HTTP {})", outcome.status);
    } else {
      outcome.error = fmt::format("HTTP {}", outcome.status);
    }
  } else {
    spdlog::debug("webhook {}: {}: {}", delivery.id, net::to_string(response.error().code),
                  response.error().message);
    outcome.error = describe(response.error());
    may_retry = response.error().code != net::NetErrc::kBadUrl;  // the URL will not change
  }
  if (!outcome.success && may_retry) {
    outcome.retry_at_ms = retry_at(delivery.cycle_attempts + 1, end_ms);
  }
  co_await record(delivery, std::move(outcome));
}

WebhookDispatcher::WebhookDispatcher(store::Store& store, BlockingPool& pool, net::HttpClient& http,
                                     const Clock& clock, Random& random, WebhookSettings settings,
                                     RenderCallbackBody render)
    : impl_(std::make_shared<Impl>(store, pool, http, clock, random, std::move(settings),
                                   std::move(render))) {}

WebhookDispatcher::~WebhookDispatcher() { impl_->stop(); }

void WebhookDispatcher::start(asio::any_io_executor executor) { impl_->start(std::move(executor)); }

void WebhookDispatcher::notify() { impl_->notify(); }

void WebhookDispatcher::stop() { impl_->stop(); }

std::size_t WebhookDispatcher::in_flight() const { return impl_->in_flight_.load(); }

}  // namespace ig::jobs
