#include "jobs/prepared_job_codec.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "blobs/memory_blob_store.h"
#include "core/json.h"

namespace ig::jobs {
namespace {

class PreparedJobCodecTest : public ::testing::Test {
 protected:
  PreparedJobCodecTest() : blobs_(random_, clock_), catalog_({default_model_entry()}) {}

  PreparedImageJob sample() {
    PreparedImageJob p;
    p.model = &catalog_.models().front();
    p.size.size = {1536, 1024};
    p.size.tier = Tier::k2K;
    p.size.label = "1536x1024";
    p.size.ratio = "3:2";
    p.size.quality = "high";
    p.price_input.tier = Tier::k2K;
    p.price_input.quality = "high";
    p.price_input.n = 2;
    p.price_input.reference_images = 1;
    p.price_input.prompt_chars = 9;
    p.price = 4'000'000;
    p.job_id = "img_abc";
    p.user_id = 7;
    p.async = true;
    providers::ImageTask& t = p.task;
    t.job_id = p.job_id;
    t.edit = true;
    t.model = p.model->id;
    t.prompt = "雨夜 city";
    t.n = 2;
    t.width = 1536;
    t.height = 1024;
    t.size_label = "1536x1024";
    t.quality = "high";
    t.background = "transparent";
    t.output_format = "webp";
    t.output_compression = 80;
    t.moderation = "low";
    t.user = "u-1";
    t.deadline_ms = 1'700'000'123'456;
    t.images.push_back({"PNGBYTES", "image/png", 10, 20});
    t.mask = providers::InputImage{"MASKBYTES", "image/png", 10, 20};
    return p;
  }

  Job stored_job(const PreparedImageJob& p) {
    std::vector<StoredInput> inputs;
    for (const auto& img : p.task.images) {
      auto info = blobs_.put(img.bytes, img.mime);
      inputs.push_back({info->id, img.mime, img.width, img.height});
    }
    auto mask_info = blobs_.put(p.task.mask->bytes, p.task.mask->mime);
    std::optional<StoredInput> mask = StoredInput{mask_info->id, "image/png", 10, 20};
    JsonWriter params;
    params.begin_object().str("prompt", p.task.prompt).key("task");
    encode_prepared(params, p, inputs, mask);
    params.end_object();
    Job job;
    job.id = p.job_id;
    job.user_id = p.user_id;
    job.model = p.model->id;
    job.reserved = p.price;
    job.params_json = params.take();
    return job;
  }

  SeededRandom random_{1};
  FakeClock clock_;
  blobs::MemoryBlobStore blobs_;
  Catalog catalog_;
};

TEST_F(PreparedJobCodecTest, RoundTripsEveryField) {
  const PreparedImageJob p = sample();
  const Job job = stored_job(p);
  auto back = decode_prepared(job, catalog_, blobs_);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->model, p.model);
  EXPECT_TRUE(back->async);
  EXPECT_EQ(back->price, p.price);
  EXPECT_EQ(back->job_id, p.job_id);
  EXPECT_EQ(back->user_id, p.user_id);
  EXPECT_EQ(back->size.size.width, 1536);
  EXPECT_EQ(back->size.size.height, 1024);
  EXPECT_EQ(back->size.tier, Tier::k2K);
  EXPECT_EQ(back->size.label, "1536x1024");
  EXPECT_EQ(back->size.ratio, std::optional<std::string>("3:2"));
  EXPECT_EQ(back->size.quality, "high");
  EXPECT_EQ(back->price_input.tier, Tier::k2K);
  EXPECT_EQ(back->price_input.quality, "high");
  EXPECT_EQ(back->price_input.n, 2);
  EXPECT_EQ(back->price_input.reference_images, 1);
  EXPECT_EQ(back->price_input.prompt_chars, 9);
  const auto& t = back->task;
  EXPECT_EQ(t.job_id, "img_abc");
  EXPECT_TRUE(t.edit);
  EXPECT_EQ(t.prompt, "雨夜 city");
  EXPECT_EQ(t.n, 2);
  EXPECT_EQ(t.width, 1536);
  EXPECT_EQ(t.height, 1024);
  EXPECT_EQ(t.size_label, "1536x1024");
  EXPECT_EQ(t.quality, "high");
  EXPECT_EQ(t.background, "transparent");
  EXPECT_EQ(t.output_format, "webp");
  EXPECT_EQ(t.output_compression, std::optional<int>(80));
  EXPECT_EQ(t.moderation, "low");
  EXPECT_EQ(t.user, "u-1");
  EXPECT_EQ(t.deadline_ms, 1'700'000'123'456);
  ASSERT_EQ(t.images.size(), 1u);
  EXPECT_EQ(t.images[0].bytes, "PNGBYTES");
  EXPECT_EQ(t.images[0].width, 10);
  ASSERT_TRUE(t.mask);
  EXPECT_EQ(t.mask->bytes, "MASKBYTES");
  EXPECT_EQ(prepared_input_blobs(job).size(), 2u);
  EXPECT_EQ(back->input_blobs.size(), 1u);
}

TEST_F(PreparedJobCodecTest, JobsWithoutATaskOrWithAGoneInputAreNotRestored) {
  Job sync;
  sync.id = "img_sync";
  sync.model = "gpt-image-2";
  sync.params_json = R"({"prompt":"x"})";
  auto none = decode_prepared(sync, catalog_, blobs_);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kNotFound);
  EXPECT_TRUE(prepared_input_blobs(sync).empty());

  Job damaged = sync;
  damaged.params_json = "{not json";
  EXPECT_FALSE(decode_prepared(damaged, catalog_, blobs_));

  const PreparedImageJob p = sample();
  Job job = stored_job(p);
  for (const auto& id : prepared_input_blobs(job)) ASSERT_TRUE(blobs_.remove(id));
  auto gone = decode_prepared(job, catalog_, blobs_);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ErrorCode::kInternal);

  Job unknown_model = stored_job(p);
  unknown_model.model = "retired-model";
  auto retired = decode_prepared(unknown_model, catalog_, blobs_);
  ASSERT_FALSE(retired);
  EXPECT_EQ(retired.error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace ig::jobs
