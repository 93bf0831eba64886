// ledger_torture: hammers one user's ledger through the Store with a random mix of grants,
// reserves, settles and refunds from several threads, until killed or --seconds pass. The
// crash-safety black-box test kill -9s it (and the server) mid-stream, then runs
// `imagegate ledger check`.

#include <sodium.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <iostream>
#include <random>
#include <thread>

#include "app/app.h"
#include "core/clock.h"

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  std::string config, email;
  int seconds = 10, threads = 4;
  CLI::App cli{"ledger torture"};
  cli.add_option("--config", config)->required();
  cli.add_option("--email", email)->required();
  cli.add_option("--seconds", seconds);
  cli.add_option("--threads", threads);
  CLI11_PARSE(cli, argc, argv);

  auto settings = ig::app::load_settings(config);
  if (!settings) {
    std::cerr << settings.error().message << "\n";
    return 1;
  }
  ig::SystemClock clock;
  auto store = ig::app::open_store(*settings, clock);
  if (!store) {
    std::cerr << store.error().message << "\n";
    return 1;
  }
  auto user = (*store)->find_user_by_email(email);
  if (!user) {
    std::cerr << "no such user\n";
    return 1;
  }
  std::atomic<long> ops{0};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t * 7919 + 1));
      while (std::chrono::steady_clock::now() < deadline) {
        int op = static_cast<int>(rng() % 10);
        if (op == 0) {
          (void)(*store)->grant(user->id, ig::credits(1 + rng() % 5), "torture grant");
        } else {
          auto hold = (*store)->reserve(user->id, ig::credits(1 + rng() % 3), "torture");
          if (hold) {
            int r = static_cast<int>(rng() % 3);
            if (r == 0) (void)(*store)->settle(hold->id, hold->amount / 2);
            if (r == 1) (void)(*store)->refund(hold->id, "torture refund");
            // r == 2: leave the hold open, as a request in flight at a crash would.
          }
        }
        if (++ops % 200 == 0) std::cout << "ops " << ops.load() << std::endl;
      }
    });
  }
  for (auto& th : pool) th.join();
  std::cout << "done " << ops.load() << std::endl;
  return 0;
}
