#include "app/app.h"

#include <malloc.h>
#include <spdlog/async.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

#include "accounts/api_key.h"
#include "accounts/authenticator.h"
#include "accounts/password.h"
#include "api/account_api.h"
#include "api/images_api.h"
#include "api/request_auth.h"
#include "api/task_views.h"
#include "api/tasks_api.h"
#include "api/upstream_callbacks_api.h"
#include "app/batching_sink.h"
#include "blobs/local/local_blob_store.h"
#include "blobs/signed_url.h"
#include "blobs/tiered_blob_store.h"
#include "core/thread_name.h"
#include "http/blocking_pool.h"
#include "http/router.h"
#include "http/server.h"
#include "jobs/catalog.h"
#include "jobs/image_pipeline.h"
#include "jobs/job_runner.h"
#include "jobs/reference_loader.h"
#include "jobs/result_retention.h"
#include "jobs/webhook_dispatcher.h"
#include "media/local_renderer.h"
#include "net/curl_http_client.h"
#include "providers/kie/kie_provider.h"
#include "providers/local/local_provider.h"
#include "providers/openai/openai_provider.h"
#include "providers/provider_registry.h"
#include "providers/upstream_wakeups.h"
#include "store/sqlite/sqlite_blob_store.h"
#include "store/sqlite/sqlite_store.h"

namespace ig::app {

namespace asio = boost::asio;

Result<std::unique_ptr<store::SqliteStore>> open_store(const Settings& settings,
                                                       const Clock& clock) {
  std::error_code ec;
  std::filesystem::create_directories(settings.data_dir, ec);
  if (ec) {
    return fail(ErrorCode::kInternal,
                "cannot create data_dir '" + settings.data_dir + "': " + ec.message());
  }
  store::SqliteSettings sqlite{settings.store_path(), settings.store.busy_timeout_ms,
                               settings.store.pool_size, settings.store.synchronous == "full",
                               /*index_kept_results=*/settings.images.result_retention_s > 0};
  auto opened = store::SqliteStore::open(sqlite, clock);
  if (!opened) {
    return fail(ErrorCode::kInternal,
                "cannot open store '" + settings.store_path() + "': " + opened.error().message);
  }
  return std::move(*opened);
}

namespace {

void raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

// Holds without a job are only opened by in-flight requests of this process, so any still open
// at startup belongs to a request that died with the previous process: refund it, never keep
// it. (Holds of jobs are resolved through their jobs; the store refuses them here.)
void release_orphaned_holds(store::Store& store, spdlog::logger& log) {
  auto holds = store.list_open_holds();
  if (!holds) {
    log.error("cannot list open holds: {}", holds.error().message);
    return;
  }
  int released = 0;
  for (const auto& hold : *holds) {
    auto r = store.refund(hold.id, "released at startup: hold was open when the server stopped");
    if (r) ++released;
  }
  if (released > 0) log.warn("released {} hold(s) left open by the previous run", released);
}

// First start on an empty database: an admin, a key with free credits, and a curl line.
Result<void> bootstrap(const Settings& settings, store::Store& store, Random& random,
                       const std::string& base_url) {
  auto count = store.count_users();
  if (!count) return fail(ErrorCode::kInternal, count.error().message);
  if (*count > 0 || !settings.bootstrap.enabled) return {};
  const std::string password = random.base62(20);
  auto hash = accounts::hash_password(password);
  if (!hash) return std::unexpected(hash.error());
  auto user = store.create_user({settings.bootstrap.admin_email, *hash, true});
  if (!user) return fail(ErrorCode::kInternal, "bootstrap: " + user.error().message);
  auto key = accounts::generate_api_key(random);
  auto stored = store.create_api_key({user->id, "bootstrap", key.prefix, key.last4, key.hash});
  if (!stored) return fail(ErrorCode::kInternal, "bootstrap: " + stored.error().message);
  if (settings.bootstrap.free_credits > 0) {
    auto granted = store.grant(user->id, settings.bootstrap.free_credits, "welcome credits");
    if (!granted) return fail(ErrorCode::kInternal, "bootstrap: " + granted.error().message);
  }
  std::cout << "\n"
            << "  First start: created the admin account and an API key.\n"
            << "    login:    " << user->email << "\n"
            << "    password: " << password << "\n"
            << "    API key:  " << key.secret << "  ("
            << format_credits(settings.bootstrap.free_credits) << " credits; shown only now)\n\n"
            << "  Try it:\n"
            << "    curl -s " << base_url << "/v1/me -H 'Authorization: Bearer " << key.secret
            << "'\n\n"
            << std::flush;
  return {};
}

std::string base_url_for(const Settings& settings, std::uint16_t port) {
  if (!settings.public_base_url.empty()) {
    std::string url = settings.public_base_url;
    while (!url.empty() && url.back() == '/') url.pop_back();
    return url;
  }
  std::string host = settings.server.host;
  if (host == "0.0.0.0" || host == "::") host = "127.0.0.1";
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "http://" + host + ":" + std::to_string(port);
}

// Waits until no async job runs or the deadline passes, then calls done(all jobs done).
asio::awaitable<void> wait_for_jobs(jobs::JobRunner& runner,
                                    std::chrono::steady_clock::time_point deadline,
                                    std::function<void(bool)> done) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (runner.running() > 0 && std::chrono::steady_clock::now() < deadline) {
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  done(runner.running() == 0);
}

// Periodic auth maintenance on the pool: revocation polling and last_used_at batching.
asio::awaitable<void> auth_maintenance(accounts::Authenticator& auth, BlockingPool& pool,
                                       std::shared_ptr<std::atomic<bool>> stopping) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto poll = std::chrono::milliseconds(auth.settings().revocation_poll_ms);
  const auto flush_every = std::chrono::milliseconds(auth.settings().last_used_flush_ms);
  auto next_flush = std::chrono::steady_clock::now() + flush_every;
  auto poll_job = [&auth] {
    auth.poll_revocations();
    return 0;
  };
  auto flush_job = [&auth] {
    auth.flush_last_used();
    return 0;
  };
  while (!*stopping) {
    co_await pool.run(poll_job);
    if (std::chrono::steady_clock::now() >= next_flush) {
      co_await pool.run(flush_job);
      next_flush = std::chrono::steady_clock::now() + flush_every;
    }
    timer.expires_after(poll);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

}  // namespace

int serve(const Settings& settings) {
  auto log = spdlog::default_logger();
  raise_fd_limit();
  // Image bodies are tens of MB. A fixed mmap threshold makes glibc map every large buffer
  // separately and unmap it on free, instead of raising the threshold after the first free and
  // keeping freed 4K images in the heap for good.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  // Fixing the mmap threshold also pins the trim threshold at 128 KiB, and each thread arena
  // then gives its top back with madvise() (a TLB shootdown on every core) after nearly every
  // request. Buffers under 1 MiB are the small change of a request: keep up to 32 MiB of them.
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
  SystemClock clock;
  SodiumRandom random;

  auto store = open_store(settings, clock);
  if (!store) {
    std::cerr << "imagegate: error: " << store.error().message << std::endl;
    return 1;
  }
  if (auto ok = media::init_media(); !ok) {
    std::cerr << "imagegate: error: " << ok.error().message << std::endl;
    return 1;
  }
  if (auto ok = net::init_curl(); !ok) {
    std::cerr << "imagegate: error: " << ok.error().message << std::endl;
    return 1;
  }
  blobs::LocalBlobStore disk_blobs(settings.data_dir + "/blobs", random, clock);
  (void)disk_blobs.remove_temp_files(std::chrono::seconds(60));
  store::SqliteBlobStore database_blobs(**store, random, clock);
  blobs::TieredBlobStore tiered_blobs(
      database_blobs, disk_blobs, static_cast<std::size_t>(settings.store.blob_inline_max_bytes));
  blobs::BlobStore& blob_store = settings.store.blob_inline_max_bytes > 0
                                     ? static_cast<blobs::BlobStore&>(tiered_blobs)
                                     : disk_blobs;
  auto signing_key = blobs::load_or_create_secret(settings.data_dir + "/url_signing.key", random);
  if (!signing_key) {
    std::cerr << "imagegate: error: " << signing_key.error().message << std::endl;
    return 1;
  }
  blobs::UrlSigner signer(std::move(*signing_key), clock);

  const int io_threads = settings.io_threads > 0
                             ? settings.io_threads
                             : std::max(1u, std::thread::hardware_concurrency());
  // One io_context per IO thread. The first also runs the acceptor, signals, timers and the
  // upstream clients; connections are spread over all of them.
  asio::io_context ioc(1);
  std::vector<std::unique_ptr<asio::io_context>> extra_contexts;
  std::vector<asio::io_context*> io_contexts{&ioc};
  for (int i = 1; i < io_threads; ++i) {
    extra_contexts.push_back(std::make_unique<asio::io_context>(1));
    io_contexts.push_back(extra_contexts.back().get());
  }
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> keep_running;
  for (auto& ctx : extra_contexts) keep_running.push_back(asio::make_work_guard(*ctx));
  BlockingPool pool(static_cast<std::size_t>(settings.blocking_threads));
  accounts::Authenticator auth(**store, pool, clock, settings.auth);
  auth.poll_revocations();

  // Upstream channels are operator-configured (trusted); reference-image URLs come from
  // clients (strict address policy), so they get a client of their own.
  net::CurlClientSettings upstream_settings;
  // Operator-configured upstreams may sit on a private network. This is the client's default
  // policy, so upstream connections are reused; a channel that opts out gets the strict policy
  // per request (and fresh connections).
  upstream_settings.address_policy = net::AddressPolicy{true, true, true};
  upstream_settings.max_connections_per_host =
      static_cast<std::size_t>(settings.images.upstream_max_connections_per_host);
  upstream_settings.max_total_connections = upstream_settings.max_connections_per_host * 2;
  net::CurlHttpClient upstream_client(ioc, upstream_settings);
  net::CurlClientSettings strict;
  if (settings.images.allow_private_reference_urls) {
    strict.address_policy = net::AddressPolicy{true, true, true};
  }
  net::CurlHttpClient reference_client(ioc, strict);

  std::string public_base_url;  // known once the port is bound
  providers::UpstreamWakeups wakeups;
  providers::ProviderRegistry registry;
  for (const auto& p : settings.providers) {
    if (p.type == "local") {
      registry.add(std::make_unique<providers::LocalProvider>(
          pool, random,
          providers::LocalProviderSettings{p.name, p.latency_ms, p.failure_percent,
                                           p.failures_retryable}));
    } else if (p.type == "openai") {
      providers::OpenAiChannelSettings channel;
      channel.name = p.name;
      channel.base_url = p.base_url;
      channel.api_key = p.api_key;
      channel.timeout_ms = p.timeout_ms;
      channel.connect_timeout_ms = p.connect_timeout_ms;
      channel.proxy = p.proxy;
      channel.extra_headers = p.headers;
      for (const auto& [from, to] : p.model_map) channel.model_map[from] = to;
      if (!p.allow_private_network) channel.address_policy = net::AddressPolicy{};
      registry.add(std::make_unique<providers::OpenAiProvider>(upstream_client, channel));
    } else if (p.type == "kie") {
      providers::KieChannelSettings channel;
      channel.name = p.name;
      channel.base_url = p.base_url;
      channel.api_key = p.api_key;
      channel.poll_interval_ms = p.poll_interval_ms;
      channel.request_timeout_ms = std::min(p.timeout_ms, 60'000);
      channel.connect_timeout_ms = p.connect_timeout_ms;
      channel.timeout_ms = p.task_timeout_ms;
      channel.proxy = p.proxy;
      for (const auto& [from, to] : p.text_to_image_models) channel.text_to_image_models[from] = to;
      for (const auto& [from, to] : p.image_to_image_models)
        channel.image_to_image_models[from] = to;
      if (!p.allow_private_network) channel.address_policy = net::AddressPolicy{};
      const std::int64_t valid_for_s = p.task_timeout_ms / 1000 + 24 * 3600;
      channel.callback_url_for = [&signer, &public_base_url, &clock, name = p.name,
                                  valid_for_s](std::string_view job_id) {
        return api::upstream_callback_url(signer, public_base_url, name, job_id,
                                          clock.now_s() + valid_for_s);
      };
      registry.add(std::make_unique<providers::KieProvider>(upstream_client, wakeups,
                                                            std::move(channel), clock));
    }
  }
  jobs::Catalog catalog(settings.models);

  jobs::ReferenceLoaderSettings loader_settings;
  loader_settings.max_image_bytes = settings.images.reference_max_bytes;
  loader_settings.connect_timeout_ms = settings.images.reference_connect_timeout_ms;
  loader_settings.total_timeout_ms = settings.images.reference_timeout_ms;
  loader_settings.max_redirects = settings.images.reference_max_redirects;
  loader_settings.address_policy = strict.address_policy;
  jobs::ReferenceLoader references(reference_client, loader_settings);
  jobs::PipelineSettings pipeline_settings;
  pipeline_settings.async_deadline_ms = settings.tasks.deadline_ms;
  for (const auto& p : settings.providers) {
    if (p.max_concurrent > 0) pipeline_settings.channel_limits[p.name] = p.max_concurrent;
  }
  pipeline_settings.public_blob_url = [&signer, &public_base_url](const std::string& blob_id,
                                                                  std::int64_t expires_at_s) {
    const std::string path = "/v1/files/" + blob_id;
    return public_base_url + path + "?" + signer.sign(path, expires_at_s);
  };
  jobs::ImagePipeline pipeline(**store, pool, blob_store, catalog, registry, references, random,
                               clock, std::move(pipeline_settings));
  release_orphaned_holds(**store, *log);

  jobs::WebhookSettings webhook_settings;
  webhook_settings.retry_schedule_ms = settings.callbacks.retry_schedule_ms;
  webhook_settings.jitter_percent = settings.callbacks.jitter_percent;
  webhook_settings.timeout_ms = settings.callbacks.timeout_ms;
  webhook_settings.connect_timeout_ms = settings.callbacks.connect_timeout_ms;
  webhook_settings.max_concurrent = settings.callbacks.max_concurrent;
  webhook_settings.poll_interval_ms = settings.callbacks.poll_interval_ms;
  webhook_settings.address_policy = strict.address_policy;
  jobs::WebhookDispatcher webhooks(
      **store, pool, reference_client, clock, random, webhook_settings,
      [&public_base_url](const jobs::Job& job) -> std::optional<std::string> {
        return api::render_callback_body(job, public_base_url);
      });

  http::Router router;
  router.set_body_gate(
      [&auth](const http::Request& req) { return api::require_key_before_body(auth, req); });
  api::AccountApi account_api(**store, pool, auth, settings.account);
  account_api.register_routes(router);
  jobs::JobRunner runner(
      pipeline, **store, pool, clock,
      jobs::JobRunnerSettings{static_cast<std::size_t>(settings.tasks.max_running),
                              settings.tasks.sweep_interval_ms});
  runner.set_on_finished([&webhooks] { webhooks.notify(); });
  jobs::ResultRetention retention(
      **store, blob_store, pool, clock,
      jobs::RetentionSettings{.retention_ms = settings.images.result_retention_s * 1000,
                              .sweep_interval_ms = settings.images.result_sweep_interval_ms});
  api::ImagesApiSettings images_api_settings = settings.images.api;
  images_api_settings.task_profile = settings.tasks.profile;
  images_api_settings.callback_policy = strict.address_policy;
  images_api_settings.public_base_url_configured = !settings.public_base_url.empty();
  api::ImagesApi images_api(**store, pool, auth, pipeline, runner, blob_store, signer, clock,
                            public_base_url, images_api_settings);
  images_api.register_routes(router);
  api::TasksApi tasks_api(
      **store, pool, auth, clock,
      [&images_api](const http::Request& req) { return images_api.base_url(req); },
      [&webhooks] { webhooks.notify(); });
  tasks_api.register_routes(router);
  api::UpstreamCallbacksApi upstream_callbacks(signer, wakeups);
  upstream_callbacks.register_routes(router);

  // The access log writes one line per request: batched, so the hot path never wakes a
  // thread or makes a system call for it.
  auto access_sink = std::make_shared<BatchingSink>(STDERR_FILENO);
  access_sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  auto access_log = std::make_shared<spdlog::logger>("access", access_sink);
  access_log->set_level(log->level());

  http::Server server(ioc, io_contexts, settings.server, router, access_log);
  // Signals are handled from here on, before anything is printed: a SIGTERM that follows the
  // listening line always drains gracefully.
  auto stopping = std::make_shared<std::atomic<bool>>(false);
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    log->info("signal {}: draining (grace {} ms)", signo, settings.server.shutdown_grace_ms);
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(settings.server.shutdown_grace_ms);
    // No new async job starts from now on; queued ones stay queued in the store.
    runner.stop();
    server.begin_shutdown([&, stopping, deadline](bool drained) {
      if (!drained) log->warn("grace period over with requests still in flight; stopping");
      // Running async jobs get the rest of the grace period: one whose upstream cannot be asked
      // about it after a restart would otherwise be failed and refunded, though the upstream
      // may be about to deliver (and has billed the operator).
      auto stop_all = [&, stopping](bool jobs_done) {
        if (!jobs_done) {
          log->warn(
              "grace period over with {} async jobs running; the next start resumes them "
              "or, where the upstream cannot be asked, fails and refunds them",
              runner.running());
        }
        *stopping = true;
        // Undelivered callbacks stay in the store too; the next start resumes them.
        webhooks.stop();
        for (auto* ctx : io_contexts) ctx->stop();
      };
      asio::co_spawn(ioc, wait_for_jobs(runner, deadline, std::move(stop_all)), asio::detached);
    });
  });

  auto port = server.listen();
  if (!port) {
    std::cerr << "imagegate: error: " << port.error().message << std::endl;
    return 1;
  }
  const std::string base_url = base_url_for(settings, *port);
  public_base_url = base_url;
  if (settings.public_base_url.empty() &&
      (settings.server.host == "0.0.0.0" || settings.server.host == "::")) {
    log->warn(
        "listening on every address but [server] public_base_url is not set: result URLs and "
        "callback URLs will name {}, which other machines cannot reach",
        base_url);
  }
  if (auto boot = bootstrap(settings, **store, random, base_url); !boot) {
    std::cerr << "imagegate: error: " << boot.error().message << std::endl;
    return 1;
  }
  // Resumed only now: a resumed job may need the public URL (upstream callbacks, input URLs).
  const jobs::RecoveryReport recovered = runner.recover(ioc.get_executor());
  if (recovered.requeued + recovered.resumed + recovered.failed > 0) {
    log->warn(
        "recovered unfinished jobs of the previous run: {} requeued, {} resumed, {} failed "
        "and refunded",
        recovered.requeued, recovered.resumed, recovered.failed);
  }
  runner.start_sweeper(ioc.get_executor());
  webhooks.start(ioc.get_executor());
  server.start();
  std::cout << "imagegate listening on http://" << settings.server.host << ":" << *port
            << " (public URL " << base_url << ", data in " << settings.data_dir << ")" << std::endl;

  asio::co_spawn(ioc, auth_maintenance(auth, pool, stopping), asio::detached);
  asio::co_spawn(ioc, retention.run(stopping), asio::detached);

  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < extra_contexts.size(); ++i) {
    threads.emplace_back([c = extra_contexts[i].get(), i] {
      name_this_thread("ig-io-" + std::to_string(i + 1));
      c->run();
    });
  }
  ioc.run();  // the main thread keeps the process name: it is IO thread 0
  for (auto& t : threads) t.join();
  upstream_client.shutdown();
  reference_client.shutdown();
  pool.stop();
  auth.flush_last_used();
  access_log->flush();
  log->info("stopped");
  return 0;
}

}  // namespace ig::app
