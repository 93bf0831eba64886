#pragma once
// WebhookDispatcher: delivers the callback outbox (store "callback deliveries") to users'
// callback URLs, signed per Standard Webhooks.
//
// Promises:
//  - At-least-once: a delivery leaves the outbox only through record_delivery_attempt. Claims are
//    leases (timeout_ms + 30 s), so an attempt cut short by a crash or by stop() is claimed
//    again once its lease ends, by this process or the next one.
//  - Every attempt of a delivery carries the same `webhook-id` (the delivery id) and the same
//    body (rendered once, then saved); `webhook-timestamp` and the signature are fresh per
//    attempt, signed with the user's current secret (created on first use).
//  - Only a 2xx succeeds. Redirects are never followed (a 3xx is a failure). Failures retry after
//    retry_schedule_ms[k] (+/- jitter) until the schedule is used up, then the delivery fails.
//  - At most max_concurrent attempts run at once, each bounded by timeout_ms; an attempt never
//    waits for another one, so a slow or hanging receiver costs one slot, not the queue.
//  - notify() and stop() may be called from any thread. The store, pool, client, clock, random
//    and render callback must outlive the dispatcher's coroutines: destroy the dispatcher
//    before its io_context (as the CurlHttpClient), or stop() it and let the context drain.

#include <boost/asio/any_io_executor.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/random.h"
#include "http/blocking_pool.h"
#include "jobs/job.h"
#include "net/address_policy.h"
#include "net/http_client.h"
#include "store/store.h"

namespace ig::jobs {

struct WebhookSettings {
  // Attempt k (0-based, counted since enqueue or replay) is due retry_schedule_ms[k] after the
  // previous failure; the number of entries is the attempt cap. Standard Webhooks' schedule:
  // now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
  std::vector<std::int64_t> retry_schedule_ms = {0,         5'000,      300'000,    1'800'000,
                                                 7'200'000, 18'000'000, 36'000'000, 36'000'000};
  int jitter_percent = 20;  // a retry delay moves by up to this share of itself, either way
  int timeout_ms = 15'000;  // whole attempt (connect, send, response)
  int connect_timeout_ms = 5'000;
  int max_concurrent = 64;     // attempts in flight
  int poll_interval_ms = 500;  // outbox polling when not notified
  int claim_batch = 100;       // most deliveries claimed per store round trip
  // Which addresses receivers may resolve to; nullopt = the HttpClient's default policy.
  std::optional<net::AddressPolicy> address_policy;
  std::size_t max_response_bytes = 64 * 1024;  // a larger reply body fails the attempt
  std::string user_agent = "imagegate-webhooks/1";
};

// Renders the callback body of a finished job: the same JSON as the task GET in the job's
// dialect. nullopt = cannot render (the delivery then fails without retry). Called on a
// blocking-pool thread, possibly concurrently: it must be thread-safe.
using RenderCallbackBody = std::function<std::optional<std::string>(const Job&)>;

class WebhookDispatcher {
 public:
  WebhookDispatcher(store::Store& store, BlockingPool& pool, net::HttpClient& http,
                    const Clock& clock, Random& random, WebhookSettings settings,
                    RenderCallbackBody render);
  ~WebhookDispatcher();  // stop()s
  WebhookDispatcher(const WebhookDispatcher&) = delete;
  WebhookDispatcher& operator=(const WebhookDispatcher&) = delete;

  // Starts the polling loop; it and every attempt run on `executor`, which must run one handler
  // at a time (an io_context run by one thread, or a strand). Once only.
  void start(boost::asio::any_io_executor executor);
  // Polls the outbox now (a job just finished, a delivery was replayed). Any thread; a no-op
  // before start() or after stop().
  void notify();
  // Stops claiming and cancels in-flight attempts (a cancelled attempt is not recorded; its
  // lease makes it due again later). Idempotent; any thread. The dispatcher's coroutines end
  // once the executor has run their cancellation.
  void stop();
  // Attempts currently running.
  std::size_t in_flight() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace ig::jobs
