// Micro-benchmarks of the pieces on the GET /v1/me path (and the credit ledger), linked against
// imagegate_core. Built as build/release/imagegate_microbench by the release preset; run it
// directly (Google Benchmark flags apply, e.g. --benchmark_filter=Router).
//
// The first group measures pure functions (what the brief asks for). The "Path" group measures
// the blocking-pool hop, the SQLite user read and the whole /v1/me handler without HTTP, so a
// gap between bench/bench_me.sh and nginx can be attributed to a layer.

#include <benchmark/benchmark.h>
#include <sodium.h>
#include <stdlib.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>

#include "accounts/api_key.h"
#include "accounts/authenticator.h"
#include "api/account_api.h"
#include "billing/money.h"
#include "core/base64.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/random.h"
#include "http/blocking_pool.h"
#include "http/router.h"
#include "store/memory/memory_store.h"
#include "store/sqlite/sqlite_blob_store.h"
#include "store/sqlite/sqlite_store.h"

namespace {

namespace asio = boost::asio;
namespace json = boost::json;

// libsodium must be initialized before any hashing; a static initializer runs before main().
[[maybe_unused]] const bool kSodiumReady = [] {
  if (sodium_init() < 0) throw std::runtime_error("sodium_init failed");
  return true;
}();

// A key of the real shape: "sk-" + 43 base62 characters.
const std::string kKey = "sk-" + std::string("Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0hIj3");
const std::string kBearer = "Bearer " + kKey;

// Runs a coroutine body to completion on a private io_context on the benchmark thread.
template <class MakeAwaitable>
void run_on_io(MakeAwaitable make) {
  asio::io_context ioc(1);
  asio::co_spawn(ioc, make(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  ioc.run();
}

// Temp directory removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/ig_microbench_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// ------------------------------------------------------------------------------------------
// Pure functions

void BM_HashApiKey(benchmark::State& state) {
  for (auto _ : state) {
    auto h = ig::accounts::hash_api_key(kKey);
    benchmark::DoNotOptimize(h);
  }
}
BENCHMARK(BM_HashApiKey);

void BM_ParseBearer(benchmark::State& state) {
  for (auto _ : state) {
    auto k = ig::accounts::parse_bearer(kBearer);
    benchmark::DoNotOptimize(k);
  }
}
BENCHMARK(BM_ParseBearer);

void BM_FormatCredits(benchmark::State& state) {
  const ig::Micros m = state.range(0);
  for (auto _ : state) {
    auto s = ig::format_credits(m);
    benchmark::DoNotOptimize(s);
  }
}
// 100 credits (whole), 4.7 credits, -0.0235 credits.
BENCHMARK(BM_FormatCredits)->Arg(100'000'000)->Arg(4'700'000)->Arg(-23'500);

void BM_ParseCredits(benchmark::State& state) {
  static const char* kInputs[] = {"100", "4.7", "-0.0235"};
  const std::string_view text = kInputs[state.range(0)];
  state.SetLabel(std::string(text));
  for (auto _ : state) {
    auto r = ig::parse_credits(text);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_ParseCredits)->DenseRange(0, 2);

// Building the /v1/me object and rendering it, as AccountApi::me does per request.
void BM_ToJsonText_Me(benchmark::State& state) {
  const ig::Micros balance = state.range(0);
  for (auto _ : state) {
    auto text = ig::to_json_text(json::object{{"id", ig::api::public_user_id(1)},
                                              {"email", "admin@localhost"},
                                              {"credits", ig::credits_json(balance)}});
    benchmark::DoNotOptimize(text);
  }
}
BENCHMARK(BM_ToJsonText_Me)->Arg(100'000'000)->Arg(95'300'000);

// Rendering only (object built once).
void BM_ToJsonText_MePrebuilt(benchmark::State& state) {
  const json::value v = json::object{
      {"id", "user_1"}, {"email", "admin@localhost"}, {"credits", ig::credits_json(100'000'000)}};
  for (auto _ : state) {
    auto text = ig::to_json_text(v);
    benchmark::DoNotOptimize(text);
  }
}
BENCHMARK(BM_ToJsonText_MePrebuilt);

// A b64_json reply: one image as base64 (range(0) bytes of it), rendered into the reply text.
// The escape scan over the base64 is most of the work.
void BM_ToJsonText_B64Image(benchmark::State& state) {
  std::string b64;
  b64.reserve(static_cast<std::size_t>(state.range(0)));
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::int64_t i = 0; i < state.range(0); ++i) b64 += kAlphabet[(i * 7919) % 64];
  const json::value v =
      json::object{{"created", 1}, {"data", json::array{json::object{{"b64_json", b64}}}}};
  for (auto _ : state) {
    auto text = ig::to_json_text(v);
    benchmark::DoNotOptimize(text);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_ToJsonText_B64Image)->Arg(21'000)->Arg(4'000'000);

// Decoding an upstream's b64_json image (range(0) bytes of base64, no whitespace).
void BM_Base64Decode(benchmark::State& state) {
  std::string bytes(static_cast<std::size_t>(state.range(0)) / 4 * 3, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 131 + 7);
  const std::string b64 = ig::base64_encode(bytes);
  for (auto _ : state) {
    auto decoded = ig::base64_decode(b64, bytes.size());
    benchmark::DoNotOptimize(decoded);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_Base64Decode)->Arg(21'000)->Arg(4'000'000);

ig::http::Handler noop_handler() {
  return [](ig::http::Request&) -> asio::awaitable<ig::http::Response> {
    co_return ig::http::Response::json(200, "{}");
  };
}

ig::http::Router make_router() {
  ig::http::Router r;
  for (const char* p :
       {"/healthz", "/readyz", "/v1/models", "/v1/credits", "/v1/keys", "/v1/tasks/{id}",
        "/v1/images/generations", "/v1/images/edits", "/v1/ledger", "/v1/me"}) {
    r.add("GET", p, noop_handler());
  }
  r.add("POST", "/v1/tasks/{id}/cancel", noop_handler());
  return r;
}

// 11 routes; /v1/me registered last (worst case for the linear scan).
void BM_RouterMatch(benchmark::State& state) {
  const ig::http::Router r = make_router();
  const std::string_view path = state.range(0) == 0 ? "/api/v1/me" : "/v1/me";
  state.SetLabel(std::string(path));
  for (auto _ : state) {
    auto m = r.match("GET", path);
    if (m.handler == nullptr) state.SkipWithError("no match");
    benchmark::DoNotOptimize(m);
  }
}
BENCHMARK(BM_RouterMatch)->Arg(0)->Arg(1);

// One reserve and its settle (two ledger rows) through the in-memory store.
void BM_MemoryStore_ReserveSettle(benchmark::State& state) {
  ig::SystemClock clock;
  ig::store::MemoryStore store(clock);
  auto user = store.create_user({"bench@localhost", "x", false});
  if (!user) {
    state.SkipWithError("create_user failed");
    return;
  }
  if (!store.grant(user->id, ig::kMaxMicros / 2, "bench")) {
    state.SkipWithError("grant failed");
    return;
  }
  for (auto _ : state) {
    auto hold = store.reserve(user->id, ig::credits(1), "job");
    if (!hold) {
      state.SkipWithError("reserve failed");
      break;
    }
    auto settled = store.settle(hold->id, 700'000);
    benchmark::DoNotOptimize(settled);
  }
  // The ledger grows by two rows per iteration; report it so a slowdown is explainable.
  state.counters["ledger_rows"] = static_cast<double>(state.iterations() * 2);
}
BENCHMARK(BM_MemoryStore_ReserveSettle);

// ------------------------------------------------------------------------------------------
// Path: the layers a GET /v1/me crosses below HTTP.

// One round trip IO thread -> blocking pool -> IO thread with a trivial job: the fixed cost of
// every `co_await pool.run(...)` (two posts and, usually, two thread wake-ups).
void BM_Path_BlockingPoolHop(benchmark::State& state) {
  ig::BlockingPool pool(static_cast<std::size_t>(state.range(0)));
  auto job = [] { return 1; };
  run_on_io([&]() -> asio::awaitable<void> {
    for (auto _ : state) {
      int v = co_await pool.run(job);
      benchmark::DoNotOptimize(v);
    }
  });
}
BENCHMARK(BM_Path_BlockingPoolHop)->Arg(4)->UseRealTime();

struct SqliteFixture {
  TempDir dir;
  ig::SystemClock clock;
  std::unique_ptr<ig::store::SqliteStore> store;
  std::int64_t user_id = 0;
  std::string key;

  SqliteFixture() {
    auto opened = ig::store::SqliteStore::open({(dir.path / "bench.db").string(), 5000, 4}, clock);
    if (!opened) throw std::runtime_error(opened.error().message);
    store = std::move(*opened);
    auto user = store->create_user({"admin@localhost", "x", true});
    if (!user) throw std::runtime_error(user.error().message);
    user_id = user->id;
    ig::SodiumRandom random;
    auto k = ig::accounts::generate_api_key(random);
    key = k.secret;
    if (!store->create_api_key({user_id, "bench", k.prefix, k.last4, k.hash})) {
      throw std::runtime_error("create_api_key failed");
    }
    if (!store->grant(user_id, ig::credits(100), "bench")) throw std::runtime_error("grant");
  }
};

// The SQLite read AccountApi::me does per request (find_user), called directly.
void BM_Path_SqliteFindUser(benchmark::State& state) {
  SqliteFixture f;
  for (auto _ : state) {
    auto u = f.store->find_user(f.user_id);
    if (!u) state.SkipWithError("find_user failed");
    benchmark::DoNotOptimize(u);
  }
}
BENCHMARK(BM_Path_SqliteFindUser);

// Authenticator::authenticate on a cache hit (parse + SHA-256 + shared-locked map lookup).
void BM_Path_AuthenticateCached(benchmark::State& state) {
  SqliteFixture f;
  ig::BlockingPool pool(2);
  ig::accounts::Authenticator auth(*f.store, pool, f.clock, {});
  auth.poll_revocations();
  const std::string header = "Bearer " + f.key;
  run_on_io([&]() -> asio::awaitable<void> {
    auto warm = co_await auth.authenticate(header);  // fills the cache
    if (!warm) state.SkipWithError("authenticate failed");
    for (auto _ : state) {
      auto p = co_await auth.authenticate(header);
      benchmark::DoNotOptimize(p);
    }
  });
}
BENCHMARK(BM_Path_AuthenticateCached);

// The whole GET /v1/me handler as the router hands it a request (auth cache hit, pool hop,
// SQLite find_user, JSON rendering) — everything except Beast parsing/writing, the socket and
// the access log.
void BM_Path_MeHandler(benchmark::State& state) {
  SqliteFixture f;
  ig::BlockingPool pool(4);
  ig::accounts::Authenticator auth(*f.store, pool, f.clock, {});
  auth.poll_revocations();
  ig::api::AccountApi api(*f.store, pool, auth, {});
  ig::http::Router router;
  api.register_routes(router);
  auto match = router.match("GET", "/v1/me");
  if (match.handler == nullptr) {
    state.SkipWithError("no /v1/me route");
    return;
  }
  const ig::http::Handler& handler = *match.handler;
  ig::http::Request req;
  req.method = "GET";
  req.target = req.path = "/v1/me";
  req.headers.emplace_back("authorization", "Bearer " + f.key);
  run_on_io([&]() -> asio::awaitable<void> {
    for (auto _ : state) {
      ig::http::Response res = co_await handler(req);
      if (res.status != 200) state.SkipWithError("status != 200");
      benchmark::DoNotOptimize(res);
    }
  });
}
BENCHMARK(BM_Path_MeHandler)->UseRealTime();

// The store's share of one sync image, `jobs` at a time (the writer's group commit): create_job
// (kCommitted), then the result blob, finish_job and the balance read in one kDurable batched
// write, as ImagePipeline does. Process CPU (writer, flusher, checkpointer threads included) per
// job is the figure to compare across schema or statement changes: wall time is mostly fsync.
void BM_Store_SyncImageJobs(benchmark::State& state) {
  SqliteFixture f;
  ig::SodiumRandom random;
  ig::store::SqliteBlobStore blobs(*f.store, random, f.clock);
  const auto jobs = static_cast<int>(state.range(0));
  if (!f.store->grant(f.user_id, ig::credits(1'000'000), "bench")) {
    state.SkipWithError("grant failed");
    return;
  }
  const std::string png(16 * 1024, 'p');  // the benchmark fake's 1024x1024 PNG is about 16 KB
  std::mutex mu;
  std::condition_variable cv;
  int pending = 0;
  bool failed = false;
  std::atomic<bool> work_failed = false;  // on the writer thread: a throw there would end it
  auto done = [&](ig::store::StoreResult<void> r) {
    std::lock_guard lock(mu);
    if (!r) failed = true;
    if (--pending == 0) cv.notify_one();
  };
  auto wait_all = [&] {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return pending == 0; });
  };
  std::int64_t serial = 0;
  std::vector<std::string> ids(jobs);
  for (auto _ : state) {
    pending = jobs;
    for (int i = 0; i < jobs; ++i) {
      ig::jobs::NewJob job;
      job.id = "img_" + ig::time_prefix(f.clock.now_ms()) + random.base62(24);
      ids[i] = job.id;
      job.user_id = f.user_id;
      job.kind = "image.generation";
      job.model = "gpt-image-2";
      job.dialect = "openai";
      job.params_json = R"({"prompt":"bench","size":"1024x1024","quality":"auto","n":1})";
      job.reserve = 1000;
      job.start_running = true;
      auto work = [&f, &work_failed, job] {
        if (!f.store->create_job(job)) work_failed = true;
      };
      f.store->run_batched(work, done, ig::store::Store::Durability::kCommitted);
    }
    wait_all();
    pending = jobs;
    for (int i = 0; i < jobs; ++i) {
      auto work = [&f, &blobs, &png, &work_failed, id = ids[i]] {
        auto blob = blobs.put(png, "image/png");
        if (!blob) {
          work_failed = true;
          return;
        }
        ig::jobs::JobFinish finish;
        finish.charge = 1000;
        finish.channel = "fake";
        finish.result_json = R"({"images":[{"blob":")" + blob->id + R"(","mime":"image/png"}]})";
        if (!f.store->finish_job(id, finish)) work_failed = true;
        benchmark::DoNotOptimize(f.store->find_user(f.user_id));
      };
      f.store->run_batched(work, done, ig::store::Store::Durability::kDurable);
    }
    wait_all();
    serial += jobs;
  }
  if (failed || work_failed) state.SkipWithError("a batched write failed");
  state.counters["jobs"] = benchmark::Counter(
      static_cast<double>(serial), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Store_SyncImageJobs)->Arg(2)->Arg(8)->MeasureProcessCPUTime();

}  // namespace
