#pragma once
// Composition root: the only place that names concrete backends and wires the object graph.

#include <memory>
#include <string>

#include "app/settings.h"
#include "core/clock.h"
#include "core/random.h"
#include "store/sqlite/sqlite_store.h"
#include "store/store.h"

namespace ig::app {

// Opens the configured store backend (migrations applied).
Result<std::unique_ptr<store::SqliteStore>> open_store(const Settings& settings,
                                                       const Clock& clock);

// `imagegate serve`: runs until SIGINT/SIGTERM. Returns the process exit code.
int serve(const Settings& settings);

// Entry point for every subcommand.
int run_cli(int argc, char** argv);

}  // namespace ig::app
