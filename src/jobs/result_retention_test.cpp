#include "jobs/result_retention.h"

#include <gtest/gtest.h>

#include <set>

#include "blobs/memory_blob_store.h"
#include "core/random.h"
#include "store/memory/memory_store.h"

namespace ig::jobs {
namespace {

constexpr std::int64_t kDay = 24LL * 3600 * 1000;

// A MemoryBlobStore whose remove() fails for the ids in `refuse`.
class RefusingBlobStore final : public blobs::BlobStore {
 public:
  RefusingBlobStore(Random& random, const Clock& clock) : inner_(random, clock) {}
  Result<blobs::BlobInfo> put(std::string_view bytes, std::string_view type) override {
    return inner_.put(bytes, type);
  }
  Result<blobs::BlobInfo> stat(std::string_view id) override { return inner_.stat(id); }
  Result<std::string> read(std::string_view id, std::uint64_t offset,
                           std::uint64_t length) override {
    return inner_.read(id, offset, length);
  }
  Result<void> remove(std::string_view id) override {
    if (refuse.contains(std::string(id))) {
      return std::unexpected(Error{ErrorCode::kInternal, "EIO"});
    }
    return inner_.remove(id);
  }
  std::set<std::string> refuse;

 private:
  blobs::MemoryBlobStore inner_;
};

class ResultRetentionTest : public ::testing::Test {
 protected:
  ResultRetentionTest() : store_(clock_), blobs_(random_, clock_), pool_(1) {
    user_ = store_.create_user({"r@example.com", "x", false})->id;
  }

  // A succeeded job with `images` result files, finished now; returns its blob ids.
  std::vector<std::string> finished_job(const std::string& id, int images) {
    std::string result = R"({"images":[)";
    std::vector<std::string> ids;
    for (int i = 0; i < images; ++i) {
      auto put = blobs_.put("png bytes " + id, "image/png");
      EXPECT_TRUE(put.has_value());
      ids.push_back(put->id);
      result += (i > 0 ? "," : "") + std::string(R"({"blob":")") + put->id +
                R"(","mime":"image/png","width":16,"height":16})";
    }
    result += R"(],"usage":{"total_tokens":3}})";
    EXPECT_TRUE(store_
                    .create_job({.id = id,
                                 .user_id = user_,
                                 .kind = "image.generation",
                                 .model = "m",
                                 .dialect = "openai",
                                 .start_running = true})
                    .has_value());
    EXPECT_TRUE(store_.finish_job(id, {.status = JobStatus::kSucceeded, .result_json = result})
                    .has_value());
    return ids;
  }

  bool exists(const std::string& blob_id) { return blobs_.stat(blob_id).has_value(); }

  FakeClock clock_;
  SeededRandom random_{7};
  store::MemoryStore store_;
  RefusingBlobStore blobs_;
  BlockingPool pool_;
  std::int64_t user_ = 0;
};

TEST(ResultBlobIds, ReadsEachImagesBlobByIndexAndToleratesJunk) {
  EXPECT_EQ(result_blob_ids(R"({"images":[{"blob":"a"},{"blob":"b","mime":"x"}]})"),
            (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(result_blob_ids("").empty());
  EXPECT_TRUE(result_blob_ids("{not json").empty());
  EXPECT_TRUE(result_blob_ids(R"([1,2])").empty());
  EXPECT_TRUE(result_blob_ids(R"({"images":"a"})").empty());
  // Positions are kept (the image URL's ?index=N): an entry without a blob id is "".
  EXPECT_EQ(result_blob_ids(R"({"images":[1,{"blob":7},{"blob":""},{"blob":"c"}]})"),
            (std::vector<std::string>{"", "", "", "c"}));
}

TEST_F(ResultRetentionTest, DisabledKeepsEverything) {
  auto ids = finished_job("job_old", 1);
  clock_.advance_ms(3650 * kDay);
  ResultRetention retention(store_, blobs_, pool_, clock_, {.retention_ms = 0});
  EXPECT_FALSE(retention.enabled());
  EXPECT_EQ(retention.sweep_once(), 0);
  EXPECT_TRUE(exists(ids[0]));
  EXPECT_FALSE(store_.find_job("job_old")->results_expired_at_ms.has_value());
}

TEST_F(ResultRetentionTest, DeletesOnlyResultsOlderThanTheRetentionAndKeepsTheJob) {
  auto old_ids = finished_job("job_old", 2);
  clock_.advance_ms(2 * kDay);
  auto new_ids = finished_job("job_new", 1);
  clock_.advance_ms(kDay + 1);  // job_old finished 3 days + 1 ms ago, job_new 1 day + 1 ms ago
  ResultRetention retention(store_, blobs_, pool_, clock_, {.retention_ms = 3 * kDay});
  EXPECT_EQ(retention.sweep_once(), 1);
  EXPECT_FALSE(exists(old_ids[0]));
  EXPECT_FALSE(exists(old_ids[1]));
  EXPECT_TRUE(exists(new_ids[0]));
  auto job = store_.find_job("job_old");
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->status, JobStatus::kSucceeded);
  EXPECT_EQ(job->results_expired_at_ms, clock_.now_ms());
  EXPECT_FALSE(job->result_json.empty());  // sizes, usage: the history stays
  EXPECT_EQ(retention.sweep_once(), 0);    // nothing left to do
  clock_.advance_ms(2 * kDay);
  EXPECT_EQ(retention.sweep_once(), 1);
  EXPECT_FALSE(exists(new_ids[0]));
}

TEST_F(ResultRetentionTest, AFileThatCannotBeDeletedKeepsItsJobForTheNextPass) {
  auto a = finished_job("job_a", 1);
  auto b = finished_job("job_b", 1);
  clock_.advance_ms(2 * kDay);
  blobs_.refuse.insert(a[0]);
  ResultRetention retention(store_, blobs_, pool_, clock_, {.retention_ms = kDay});
  EXPECT_EQ(retention.sweep_once(), 1);
  EXPECT_TRUE(exists(a[0]));
  EXPECT_FALSE(exists(b[0]));
  EXPECT_FALSE(store_.find_job("job_a")->results_expired_at_ms.has_value());
  blobs_.refuse.clear();
  EXPECT_EQ(retention.sweep_once(), 1);
  EXPECT_FALSE(exists(a[0]));
  EXPECT_TRUE(store_.find_job("job_a")->results_expired_at_ms.has_value());
}

TEST_F(ResultRetentionTest, AFileAlreadyGoneStillExpiresItsJob) {
  auto a = finished_job("job_a", 1);
  ASSERT_TRUE(blobs_.remove(a[0]).has_value());  // a crash after the delete, before the mark
  clock_.advance_ms(2 * kDay);
  ResultRetention retention(store_, blobs_, pool_, clock_, {.retention_ms = kDay});
  EXPECT_EQ(retention.sweep_once(), 1);
  EXPECT_TRUE(store_.find_job("job_a")->results_expired_at_ms.has_value());
}

TEST_F(ResultRetentionTest, OnePassIsBoundedAndTheNextContinues) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto made = finished_job("job_" + std::to_string(i), 1);
    ids.push_back(made[0]);
    clock_.advance_ms(1);
  }
  clock_.advance_ms(kDay);
  ResultRetention retention(store_, blobs_, pool_, clock_,
                            {.retention_ms = 1, .max_jobs_per_pass = 3});
  EXPECT_EQ(retention.sweep_once(), 3);
  EXPECT_FALSE(exists(ids[0]));  // oldest first
  EXPECT_TRUE(exists(ids[4]));
  EXPECT_EQ(retention.sweep_once(), 2);
  EXPECT_FALSE(exists(ids[4]));
}

}  // namespace
}  // namespace ig::jobs
