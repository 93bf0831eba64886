// Initializes libsodium once for the whole unit-test binary, as run_cli() does for the server.
#include <gtest/gtest.h>
#include <sodium.h>

namespace {
class SodiumEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }
};
const auto* const kSodium = ::testing::AddGlobalTestEnvironment(new SodiumEnvironment);
}  // namespace
