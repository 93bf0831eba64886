// The BlobStore contract: one suite, written only against BlobStore&, run over every backend
// (a new one, e.g. S3, joins by adding a line to backend_cases()), then LocalBlobStore's own
// on-disk promises: layout, persistence, crash leftovers, path traversal.

#include "blobs/blob_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "blobs/blob_etag.h"
#include "blobs/local/local_blob_store.h"
#include "blobs/memory_blob_store.h"
#include "blobs/tiered_blob_store.h"
#include "core/clock.h"
#include "core/random.h"
#include "core/temp_dir_for_tests.h"
#include "store/sqlite/sqlite_blob_store.h"
#include "store/sqlite/sqlite_store.h"

namespace ig::blobs {
namespace {

namespace fs = std::filesystem;

// --- helpers ---

std::string code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNotFound:
      return "kNotFound";
    case ErrorCode::kInvalidRequest:
      return "kInvalidRequest";
    case ErrorCode::kInternal:
      return "kInternal";
    default:
      return "code " + std::to_string(static_cast<int>(code));
  }
}

// "ok" or the error code's name, so EXPECT_EQ prints something readable.
template <class T>
std::string code(const Result<T>& result) {
  return result ? "ok" : code_name(result.error().code);
}

template <class T>
testing::AssertionResult ok(const Result<T>& result) {
  if (result) return testing::AssertionSuccess();
  return testing::AssertionFailure()
         << code_name(result.error().code) << ": " << result.error().message;
}

// Every path under `dir` with its size (0 for directories), to prove nothing changed.
std::set<std::string> snapshot(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    std::string line = fs::relative(entry.path(), dir).string();
    if (entry.is_regular_file()) line += " " + std::to_string(entry.file_size());
    out.insert(line);
  }
  return out;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

bool is_base62(std::string_view s) {
  return std::ranges::all_of(s, [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
  });
}

// 256 distinct byte values, NULs included, repeated.
std::string binary_bytes(std::size_t size) {
  std::string out(size, '\0');
  for (std::size_t i = 0; i < size; ++i) out[i] = static_cast<char>((i * 7 + i / 256) & 0xff);
  return out;
}

// --- backends ---

// One backend instance under test, owning whatever it needs.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual BlobStore& store() = 0;
  // Where the backend keeps data on this machine, if anywhere (checked for stray changes).
  virtual fs::path sandbox() const { return {}; }
  // Files of unfinished puts still lying around.
  virtual std::size_t leftover_temp_files() const { return 0; }
};

class MemoryBackend final : public Backend {
 public:
  MemoryBackend(Random& random, const Clock& clock) : store_(random, clock) {}
  BlobStore& store() override { return store_; }

 private:
  MemoryBlobStore store_;
};

class LocalBackend final : public Backend {
 public:
  LocalBackend(Random& random, const Clock& clock) : store_(dir_.path() / "blobs", random, clock) {
    write_file(dir_.path() / "sentinel", "keep me");
  }
  BlobStore& store() override { return store_; }
  fs::path sandbox() const override { return dir_.path(); }
  std::size_t leftover_temp_files() const override {
    std::error_code ec;
    auto it = fs::directory_iterator(store_.root() / "tmp", ec);
    return ec ? 0 : static_cast<std::size_t>(std::distance(it, fs::directory_iterator()));
  }

 private:
  TempDir dir_{"blobs"};  // declared first: outlives the store
  LocalBlobStore store_;
};

std::unique_ptr<store::SqliteStore> open_sqlite(const fs::path& dir, const Clock& clock) {
  auto opened = store::SqliteStore::open({.path = (dir / "imagegate.db").string()}, clock);
  EXPECT_TRUE(opened.has_value()) << opened.error().message;
  return opened ? std::move(*opened) : nullptr;
}

// Blobs as rows of the store's database.
class SqliteBackend final : public Backend {
 public:
  SqliteBackend(Random& random, const Clock& clock)
      : sqlite_(open_sqlite(dir_.path(), clock)), store_(*sqlite_, random, clock) {}
  BlobStore& store() override { return store_; }

 private:
  TempDir dir_{"blobs"};
  std::unique_ptr<store::SqliteStore> sqlite_;
  store::SqliteBlobStore store_;
};

// The embedded setup: small blobs in the database, the rest on disk (64 KiB apart here, so the
// suite's 256 KiB and 1 MiB blobs land on disk and the others in the database).
class TieredBackend final : public Backend {
 public:
  TieredBackend(Random& random, const Clock& clock)
      : sqlite_(open_sqlite(dir_.path(), clock)),
        small_(*sqlite_, random, clock),
        large_(dir_.path() / "blobs", random, clock),
        store_(small_, large_, 64 * 1024) {}
  BlobStore& store() override { return store_; }
  std::size_t leftover_temp_files() const override {
    std::error_code ec;
    auto it = fs::directory_iterator(large_.root() / "tmp", ec);
    return ec ? 0 : static_cast<std::size_t>(std::distance(it, fs::directory_iterator()));
  }

 private:
  TempDir dir_{"blobs"};
  std::unique_ptr<store::SqliteStore> sqlite_;
  store::SqliteBlobStore small_;
  LocalBlobStore large_;
  TieredBlobStore store_;
};

using BackendFactory = std::function<std::unique_ptr<Backend>(Random&, const Clock&)>;

struct BackendCase {
  std::string name;
  BackendFactory make;
};

void PrintTo(const BackendCase& backend, std::ostream* out) { *out << backend.name; }

std::vector<BackendCase> backend_cases() {
  return {
      {"memory", [](Random& random,
                    const Clock& clock) { return std::make_unique<MemoryBackend>(random, clock); }},
      {"local", [](Random& random,
                   const Clock& clock) { return std::make_unique<LocalBackend>(random, clock); }},
      {"sqlite", [](Random& random,
                    const Clock& clock) { return std::make_unique<SqliteBackend>(random, clock); }},
      {"tiered", [](Random& random,
                    const Clock& clock) { return std::make_unique<TieredBackend>(random, clock); }},
  };
}

// --- the contract suite ---

class BlobStoreContractTest : public testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override { backend_ = GetParam().make(random_, clock_); }

  BlobStore& store() { return backend_->store(); }

  BlobInfo put(std::string_view bytes, std::string_view type = "image/png") {
    auto info = store().put(bytes, type);
    EXPECT_TRUE(ok(info));
    return info.value_or(BlobInfo{});
  }

  FakeClock clock_;
  SodiumRandom random_;
  std::unique_ptr<Backend> backend_;
};

TEST_P(BlobStoreContractTest, PutThenStatAndReadBack) {
  const std::string bytes = binary_bytes(10'000);
  BlobInfo info = put(bytes, "image/webp");
  EXPECT_TRUE(info.id.size() == kBlobIdLength ||
              info.id.size() == kBlobIdLength + kTimePrefixLength)
      << info.id;
  EXPECT_TRUE(is_valid_blob_id(info.id)) << info.id;
  EXPECT_TRUE(is_base62(info.id)) << info.id;
  EXPECT_EQ(info.content_type, "image/webp");
  EXPECT_EQ(info.size, bytes.size());
  EXPECT_EQ(info.created_at, clock_.now_s());

  auto stat = store().stat(info.id);
  ASSERT_TRUE(ok(stat));
  EXPECT_EQ(stat->id, info.id);
  EXPECT_EQ(stat->content_type, info.content_type);
  EXPECT_EQ(stat->size, info.size);
  EXPECT_EQ(stat->etag, info.etag);
  EXPECT_EQ(stat->created_at, info.created_at);

  auto all = store().read(info.id, 0, bytes.size());
  ASSERT_TRUE(ok(all));
  EXPECT_EQ(*all, bytes);
}

TEST_P(BlobStoreContractTest, ReadsRangesWithTheLengthClampedToTheEnd) {
  const std::string bytes = "0123456789";
  BlobInfo info = put(bytes, "text/plain");
  struct Case {
    std::uint64_t offset, length;
    std::string want;
  };
  for (const Case& c : std::vector<Case>{{0, 10, "0123456789"},
                                         {0, 1, "0"},
                                         {3, 4, "3456"},
                                         {9, 1, "9"},
                                         {7, 100, "789"},
                                         {2, UINT64_MAX, "23456789"},
                                         {4, 0, ""},
                                         {10, 5, ""},
                                         {10, UINT64_MAX, ""}}) {
    auto got = store().read(info.id, c.offset, c.length);
    ASSERT_TRUE(ok(got)) << c.offset << "+" << c.length;
    EXPECT_EQ(*got, c.want) << c.offset << "+" << c.length;
  }
  EXPECT_EQ(code(store().read(info.id, 11, 1)), "kInvalidRequest");
  EXPECT_EQ(code(store().read(info.id, UINT64_MAX, UINT64_MAX)), "kInvalidRequest");
}

TEST_P(BlobStoreContractTest, StoresEmptyAndLargeBlobs) {
  BlobInfo empty = put("", "application/octet-stream");
  EXPECT_EQ(empty.size, 0u);
  auto empty_read = store().read(empty.id, 0, 100);
  ASSERT_TRUE(ok(empty_read));
  EXPECT_EQ(*empty_read, "");

  const std::string big = binary_bytes(3 * 1024 * 1024 + 17);
  BlobInfo info = put(big, "video/mp4");
  EXPECT_EQ(info.size, big.size());
  std::string chunked;  // read the way a streaming response does
  for (std::uint64_t offset = 0; offset < big.size(); offset += 1 << 20) {
    auto chunk = store().read(info.id, offset, 1 << 20);
    ASSERT_TRUE(ok(chunk));
    chunked += *chunk;
  }
  EXPECT_EQ(chunked, big);
}

TEST_P(BlobStoreContractTest, EtagIsAQuotedStrongValidatorOfTheBlob) {
  BlobInfo a = put("same bytes");
  BlobInfo b = put("same bytes", "image/jpeg");
  BlobInfo c = put("other bytes");
  EXPECT_NE(a.id, b.id);
  // One tag per blob, never shared: an id (and so its tag) never names other bytes.
  EXPECT_NE(a.etag, b.etag);
  EXPECT_NE(a.etag, c.etag);
  EXPECT_EQ(a.etag, blob_etag(a.id));
  EXPECT_EQ(a.etag.find(a.id), std::string::npos);  // the tag does not reveal the id
  ASSERT_GE(a.etag.size(), 18u);                    // at least 64 bits of hash
  EXPECT_EQ(a.etag.front(), '"');
  EXPECT_EQ(a.etag.back(), '"');
  EXPECT_EQ(a.etag.find('"', 1), a.etag.size() - 1);
  EXPECT_FALSE(a.etag.starts_with("W/"));
}

TEST_P(BlobStoreContractTest, CreatedAtComesFromTheClock) {
  BlobInfo first = put("a");
  clock_.advance_ms(90'000);
  BlobInfo second = put("b");
  EXPECT_EQ(second.created_at, first.created_at + 90);
  auto stat = store().stat(first.id);
  ASSERT_TRUE(ok(stat));
  EXPECT_EQ(stat->created_at, first.created_at);
}

TEST_P(BlobStoreContractTest, IdsAreLongUniqueBase62) {
  std::set<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    BlobInfo info = put("x");
    EXPECT_GE(info.id.size(), 22u);
    EXPECT_TRUE(is_valid_blob_id(info.id)) << info.id;
    ids.insert(info.id);
  }
  EXPECT_EQ(ids.size(), 50u);
}

TEST_P(BlobStoreContractTest, RemoveDeletesOnlyThatBlob) {
  BlobInfo gone = put("gone");
  BlobInfo kept = put("kept");
  ASSERT_TRUE(ok(store().remove(gone.id)));
  EXPECT_EQ(code(store().stat(gone.id)), "kNotFound");
  EXPECT_EQ(code(store().read(gone.id, 0, 10)), "kNotFound");
  EXPECT_EQ(code(store().remove(gone.id)), "kNotFound");
  auto still = store().read(kept.id, 0, 10);
  ASSERT_TRUE(ok(still));
  EXPECT_EQ(*still, "kept");
}

TEST_P(BlobStoreContractTest, UnknownIdsAreNotFound) {
  const std::string unknown(kBlobIdLength, 'A');
  EXPECT_EQ(code(store().stat(unknown)), "kNotFound");
  EXPECT_EQ(code(store().read(unknown, 0, 1)), "kNotFound");
  EXPECT_EQ(code(store().remove(unknown)), "kNotFound");
}

TEST_P(BlobStoreContractTest, InvalidIdsAreRejectedWithoutTouchingAnything) {
  BlobInfo real = put("real");
  const fs::path sandbox = backend_->sandbox();
  const auto before = sandbox.empty() ? std::set<std::string>{} : snapshot(sandbox);

  const std::string nul_id = std::string(11, 'a') + std::string(1, '\0') + std::string(10, 'b');
  const std::vector<std::string> invalid = {
      "",
      "../x",
      "../sentinel",
      "../../sentinel",
      "a/b",
      std::string(10 * 1024, 'a'),
      std::string(kMaxBlobIdLength + 1, 'a'),
      std::string(kBlobIdLength - 1, 'a'),
      nul_id,
      real.id + ".meta",
      real.id + "/",
      "/" + real.id,
      real.id.substr(0, 2) + "/" + real.id,
      "tmp",
      std::string(kBlobIdLength - 3, 'a') + "/..",
      std::string(kBlobIdLength, '.'),
      std::string(kBlobIdLength - 1, 'a') + "\xc3\xa9",
      std::string(kBlobIdLength - 1, 'a') + "-",
      std::string(kBlobIdLength - 1, 'a') + "_",
      std::string(kBlobIdLength - 1, 'a') + "%",
  };
  for (const auto& id : invalid) {
    EXPECT_FALSE(is_valid_blob_id(id)) << id;
    for (const std::string& got :
         {code(store().stat(id)), code(store().read(id, 0, 100)), code(store().remove(id))}) {
      EXPECT_TRUE(got == "kNotFound" || got == "kInvalidRequest") << got << " for " << id;
    }
  }
  if (!sandbox.empty()) {
    EXPECT_EQ(snapshot(sandbox), before);
    EXPECT_EQ(read_file(sandbox / "sentinel"), "keep me");
  }
  EXPECT_TRUE(ok(store().stat(real.id)));
}

TEST_P(BlobStoreContractTest, RejectsContentTypesThatCannotBeAHeader) {
  for (std::string_view bad : {"", "png", "image/png\r\nX-Evil: 1", "image/png\n", " image/png",
                               "image/\x7f", "image/\xff"}) {
    EXPECT_EQ(code(store().put("x", bad)), "kInvalidRequest") << bad;
  }
  EXPECT_EQ(code(store().put("x", "image/" + std::string(kMaxContentTypeLength, 'x'))),
            "kInvalidRequest");
  for (std::string_view good : {"image/png", "image/svg+xml", "text/plain; charset=utf-8"}) {
    auto info = store().put("x", good);
    ASSERT_TRUE(ok(info)) << good;
    EXPECT_EQ(info->content_type, good);
  }
  EXPECT_EQ(backend_->leftover_temp_files(), 0u);
}

TEST_P(BlobStoreContractTest, ConcurrentPutsAndReadsAllLand) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 12;
  std::mutex mu;
  std::vector<std::pair<BlobInfo, std::string>> stored;
  std::vector<std::string> errors;
  std::latch start(kThreads);
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kPerThread; ++i) {
        std::string bytes = "thread " + std::to_string(t) + " blob " + std::to_string(i);
        auto info = store().put(bytes, "text/plain");
        std::string error;
        if (!info) {
          error = info.error().message;
        } else if (auto back = store().read(info->id, 0, bytes.size()); !back) {
          error = back.error().message;
        } else if (*back != bytes) {
          error = "read back different bytes";
        }
        std::lock_guard lock(mu);
        if (!error.empty()) errors.push_back(error);
        if (info) stored.emplace_back(*info, bytes);
      }
    });
  }
  for (auto& worker : workers) worker.join();
  EXPECT_TRUE(errors.empty()) << errors.front();
  ASSERT_EQ(stored.size(), static_cast<std::size_t>(kThreads * kPerThread));
  std::set<std::string> ids;
  for (const auto& [info, bytes] : stored) {
    ids.insert(info.id);
    auto stat = store().stat(info.id);
    ASSERT_TRUE(ok(stat));
    EXPECT_EQ(stat->size, bytes.size());
  }
  EXPECT_EQ(ids.size(), stored.size());
  EXPECT_EQ(backend_->leftover_temp_files(), 0u);
}

// A reader racing put() sees either nothing or the whole blob; racing remove(), the whole
// blob or nothing.
TEST_P(BlobStoreContractTest, ReadersNeverSeeATornBlob) {
  const std::string bytes = binary_bytes(256 * 1024);
  std::atomic<bool> done{false};
  std::mutex mu;
  std::vector<std::string> ids, problems;
  std::thread reader([&] {
    while (!done) {
      std::vector<std::string> snapshot_ids;
      {
        std::lock_guard lock(mu);
        snapshot_ids = ids;
      }
      for (const auto& id : snapshot_ids) {
        auto got = store().read(id, 0, UINT64_MAX);
        if (got ? *got != bytes : got.error().code != ErrorCode::kNotFound) {
          std::lock_guard lock(mu);
          problems.push_back(got ? "torn read of " + id : got.error().message);
        }
      }
    }
  });
  for (int i = 0; i < 20; ++i) {
    auto info = store().put(bytes, "image/png");
    EXPECT_TRUE(ok(info));  // no ASSERT: the reader must be joined
    std::lock_guard lock(mu);
    if (info) ids.push_back(info->id);
  }
  for (std::size_t i = 0; i < ids.size(); i += 2) EXPECT_TRUE(ok(store().remove(ids[i])));
  done = true;
  reader.join();
  EXPECT_TRUE(problems.empty()) << problems.front();
}

INSTANTIATE_TEST_SUITE_P(Backends, BlobStoreContractTest, testing::ValuesIn(backend_cases()),
                         [](const testing::TestParamInfo<BackendCase>& info) {
                           return info.param.name;
                         });

// --- TieredBlobStore routing ---

TEST(TieredBlobStoreTest, PutsBySizeAndFindsBlobsInEitherTier) {
  FakeClock clock;
  SodiumRandom random;
  MemoryBlobStore small(random, clock), large(random, clock);
  TieredBlobStore tiered(small, large, 50);
  auto a = tiered.put(std::string(50, 'a'), "image/png");
  auto b = tiered.put(std::string(51, 'b'), "image/png");
  ASSERT_TRUE(ok(a) && ok(b));
  EXPECT_TRUE(ok(small.stat(a->id)));
  EXPECT_FALSE(ok(large.stat(a->id)));
  EXPECT_TRUE(ok(large.stat(b->id)));
  EXPECT_FALSE(ok(small.stat(b->id)));
  EXPECT_EQ(tiered.read(b->id, 50, 10).value_or(""), "b");
  EXPECT_EQ(tiered.stat(a->id)->size, 50u);
  EXPECT_TRUE(ok(tiered.remove(b->id)));
  EXPECT_EQ(tiered.stat(b->id).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(tiered.remove(b->id).error().code, ErrorCode::kNotFound);
}

// A SqliteStore in a temp dir and the SqliteBlobStore over it.
class SqliteBlobStoreTest : public testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(sqlite_, nullptr); }

  TempDir dir_{"blobs"};
  FakeClock clock_;
  SodiumRandom random_;
  std::unique_ptr<store::SqliteStore> sqlite_ = open_sqlite(dir_.path(), clock_);
  store::SqliteBlobStore rows_{*sqlite_, random_, clock_};
};

TEST_F(SqliteBlobStoreTest, PutsJoinTheStoresBatchAndTheTierSaysWhichPutsCan) {
  MemoryBlobStore memory(random_, clock_);
  TieredBlobStore tiered(rows_, memory, 100);
  EXPECT_TRUE(rows_.put_joins_store_batch(1 << 30));
  EXPECT_TRUE(tiered.put_joins_store_batch(100));
  EXPECT_FALSE(tiered.put_joins_store_batch(101));
  EXPECT_FALSE(memory.put_joins_store_batch(1));

  // Inside batched work the put is part of the batch's transaction (on the writer thread).
  Result<BlobInfo> put = fail(ErrorCode::kInternal, "not run");
  std::promise<store::StoreResult<void>> durable;
  sqlite_->run_batched([&] { put = tiered.put("row bytes", "image/png"); },
                       [&](store::StoreResult<void> r) { durable.set_value(r); },
                       store::Store::Durability::kDurable);
  ASSERT_TRUE(durable.get_future().get().has_value());
  ASSERT_TRUE(ok(put));
  EXPECT_EQ(rows_.read(put->id, 0, 100).value_or(""), "row bytes");
  EXPECT_FALSE(ok(memory.stat(put->id)));
}

TEST_F(SqliteBlobStoreTest, IdsSortByCreationTime) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto put = rows_.put("x", "image/png");
    ASSERT_TRUE(ok(put));
    EXPECT_EQ(put->id.substr(0, kTimePrefixLength), time_prefix(clock_.now_ms()));
    ids.push_back(put->id);
    clock_.advance_ms(1);
  }
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
}

// --- LocalBlobStore on disk ---

class LocalBlobStoreTest : public testing::Test {
 protected:
  fs::path root() const { return dir_.path() / "blobs"; }

  TempDir dir_{"blobs"};
  FakeClock clock_;
  SodiumRandom random_;
};

TEST_F(LocalBlobStoreTest, LaysOutOneFileWithAHeaderUnderATwoCharacterFanOut) {
  LocalBlobStore store(root(), random_, clock_);
  auto info = store.put("PNG bytes", "image/png");
  ASSERT_TRUE(ok(info));
  const fs::path dir = root() / info->id.substr(0, 2);
  const std::string file = read_file(dir / info->id);
  EXPECT_TRUE(file.starts_with("imagegate-blob 2\n")) << file;
  EXPECT_NE(file.find("\ncontent_type=image/png\n"), std::string::npos) << file;
  EXPECT_NE(file.find("\netag=" + info->etag + "\n"), std::string::npos) << file;
  EXPECT_TRUE(file.ends_with("\n\nPNG bytes")) << file;
  std::set<std::string> entries;
  for (const auto& entry : fs::directory_iterator(root())) {
    entries.insert(entry.path().filename().string());
  }
  EXPECT_EQ(entries, (std::set<std::string>{"tmp", info->id.substr(0, 2)}));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  EXPECT_TRUE(fs::is_empty(root() / "tmp"));
}

// Bytes that look like a header inside the data are just data.
TEST_F(LocalBlobStoreTest, DataThatLooksLikeAHeaderIsReadBackVerbatim) {
  LocalBlobStore store(root(), random_, clock_);
  const std::string tricky = "\n\nimagegate-blob 2\nsize=1\n\n\n";
  auto info = store.put(tricky, "image/png");
  ASSERT_TRUE(ok(info));
  auto bytes = store.read(info->id, 0, 1000);
  ASSERT_TRUE(ok(bytes));
  EXPECT_EQ(*bytes, tricky);
  auto tail = store.read(info->id, 2, 3);
  ASSERT_TRUE(ok(tail));
  EXPECT_EQ(*tail, "ima");
}

TEST_F(LocalBlobStoreTest, BlobsSurviveReopening) {
  BlobInfo info;
  {
    LocalBlobStore store(root(), random_, clock_);
    auto put = store.put("persisted", "image/jpeg");
    ASSERT_TRUE(ok(put));
    info = *put;
  }
  clock_.advance_ms(3'600'000);
  LocalBlobStore reopened(root(), random_, clock_);
  auto stat = reopened.stat(info.id);
  ASSERT_TRUE(ok(stat));
  EXPECT_EQ(stat->content_type, "image/jpeg");
  EXPECT_EQ(stat->created_at, info.created_at);
  EXPECT_EQ(stat->etag, info.etag);
  auto bytes = reopened.read(info.id, 0, 100);
  ASSERT_TRUE(ok(bytes));
  EXPECT_EQ(*bytes, "persisted");
}

TEST_F(LocalBlobStoreTest, WorksWithoutTouchingDiskUntilTheFirstPut) {
  LocalBlobStore store(root(), random_, clock_);
  EXPECT_EQ(code(store.stat(std::string(kBlobIdLength, 'a'))), "kNotFound");
  EXPECT_EQ(code(store.read(std::string(kBlobIdLength, 'a'), 0, 1)), "kNotFound");
  auto swept = store.remove_temp_files(std::chrono::seconds(0));
  ASSERT_TRUE(ok(swept));
  EXPECT_EQ(*swept, 0u);
  EXPECT_FALSE(fs::exists(root()));
}

// What a crash can leave behind (half-written temp files, files with non-id names) is never a
// blob, and remove_temp_files() clears the temp files.
TEST_F(LocalBlobStoreTest, CrashLeftoversAreNeverVisibleAsBlobs) {
  LocalBlobStore store(root(), random_, clock_);
  auto real = store.put("real", "image/png");
  ASSERT_TRUE(ok(real));
  const std::string orphan_id(kBlobIdLength, 'Z');
  const fs::path orphan_dir = root() / orphan_id.substr(0, 2);
  fs::create_directories(orphan_dir);
  write_file(orphan_dir / (orphan_id + ".meta"),
             "imagegate-blob 2\ncontent_type=image/png\nsize=3\netag=\"ab\"\ncreated_at=1\n\nabc");
  write_file(root() / "tmp" / "0123456789abcdef.blob", "imagegate-blob 2\nhalf");
  write_file(root() / "tmp" / "0123456789abcdeg.blob", "imagegate-blob 2\n");

  EXPECT_EQ(code(store.stat(orphan_id)), "kNotFound");
  EXPECT_EQ(code(store.read(orphan_id, 0, 3)), "kNotFound");
  EXPECT_EQ(code(store.stat("0123456789abcdef")), "kNotFound");
  EXPECT_EQ(code(store.stat("0123456789abcdef.data")), "kNotFound");

  auto young = store.remove_temp_files(std::chrono::hours(1));
  ASSERT_TRUE(ok(young));
  EXPECT_EQ(*young, 0u);  // could belong to a put in flight
  auto swept = store.remove_temp_files(std::chrono::seconds(0));
  ASSERT_TRUE(ok(swept));
  EXPECT_EQ(*swept, 2u);
  EXPECT_TRUE(fs::is_empty(root() / "tmp"));
  EXPECT_TRUE(ok(store.stat(real->id)));
}

// A put that fails at the last step (the name is taken by a directory) reports an error and
// leaves no temp file behind.
TEST_F(LocalBlobStoreTest, AFailedPutLeavesNothingBehind) {
  SeededRandom twin(42);
  const std::string next_id = twin.base62(kBlobIdLength);
  SeededRandom random(42);
  LocalBlobStore store(root(), random, clock_);
  const fs::path dir = root() / next_id.substr(0, 2);
  fs::create_directories(dir / next_id / "blocker");

  auto put = store.put("doomed", "image/png");
  EXPECT_EQ(code(put), "kInternal");
  EXPECT_TRUE(fs::is_empty(root() / "tmp"));
  EXPECT_FALSE(fs::exists(dir / (next_id + ".meta")));
  EXPECT_EQ(code(store.stat(next_id)), "kNotFound");

  auto next = store.put("fine", "image/png");
  ASSERT_TRUE(ok(next));
  EXPECT_NE(next->id, next_id);
}

TEST_F(LocalBlobStoreTest, CorruptOrMismatchedHeadersAreAnInternalError) {
  LocalBlobStore store(root(), random_, clock_);
  auto info = store.put("twelve bytes", "image/png");
  ASSERT_TRUE(ok(info));
  const fs::path path = root() / info->id.substr(0, 2) / info->id;
  const std::string good = read_file(path);
  write_file(path, good + "more");  // size differs from the header
  EXPECT_EQ(code(store.stat(info->id)), "kInternal");
  EXPECT_EQ(code(store.read(info->id, 0, 1)), "kInternal");
  write_file(path, "garbage");
  EXPECT_EQ(code(store.stat(info->id)), "kInternal");
  write_file(path,
             "imagegate-blob 1\ncontent_type=image/png\nsize=0\netag=\"a\"\ncreated_at=1\n\n");
  EXPECT_EQ(code(store.stat(info->id)), "kInternal");  // another format version
  write_file(path, good);
  EXPECT_TRUE(ok(store.stat(info->id)));
}

TEST_F(LocalBlobStoreTest, SymlinksInTheStoreAreNotFollowed) {
  LocalBlobStore store(root(), random_, clock_);
  auto info = store.put("x", "image/png");
  ASSERT_TRUE(ok(info));
  write_file(dir_.path() / "secret", "outside the store");
  const std::string link_id(kBlobIdLength, 'L');
  fs::create_directories(root() / "LL");
  fs::create_symlink(dir_.path() / "secret", root() / "LL" / link_id);
  EXPECT_EQ(code(store.read(link_id, 0, 100)), "kNotFound");
  EXPECT_EQ(code(store.remove(link_id)), "kNotFound");
  EXPECT_EQ(read_file(dir_.path() / "secret"), "outside the store");
}

}  // namespace
}  // namespace ig::blobs
