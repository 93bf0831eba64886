// The task dialects against the seeds' JSON: every key, every status name.
#include "api/task_views.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "core/json.h"

namespace ig::api {
namespace {

namespace json = boost::json;
using jobs::JobStatus;

jobs::Job job_in(JobStatus status) {
  jobs::Job job;
  job.id = "job_abc";
  job.model = "gpt-image-2";
  job.kind = "image.generation";
  job.status = status;
  job.reserved = 10'000'000;  // 10 credits
  job.created_at_ms = 1714000000'123;
  if (status != JobStatus::kQueued) job.started_at_ms = 1714000001'000;
  if (jobs::is_final(status)) job.finished_at_ms = 1714000070'500;
  if (status == JobStatus::kSucceeded) {
    job.charged = 10'000'000;
    job.result_json = R"({"images":[{"blob":"b1"},{"blob":"b2"}]})";
  }
  if (status == JobStatus::kFailed) {
    job.error_code = "upstream_error";
    job.error_message = "Generation failed";
  }
  return job;
}

json::value parsed(const json::object& o) { return json::parse(to_json_text(o)); }

TEST(TaskViewsTest, Seed003CreatedReply) {
  EXPECT_EQ(parsed(render_task_created(job_in(JobStatus::kQueued), kDialectTasks)),
            json::parse(R"({"code":200,"msg":"success","data":{"taskId":"job_abc"}})"));
}

TEST(TaskViewsTest, Seed001CreatedReply) {
  EXPECT_EQ(parsed(render_task_created(job_in(JobStatus::kQueued), kDialectSeed001)),
            json::parse(R"({"code":200,"data":{"taskId":"job_abc"}})"));
}

TEST(TaskViewsTest, Seed002CreatedReplyIsThePendingTaskObject) {
  EXPECT_EQ(parsed(render_task_created(job_in(JobStatus::kQueued), kDialectSeed002)),
            json::parse(R"({"id":"job_abc","object":"image.generation","created":1714000000,
                            "model":"gpt-image-2","status":"pending","credits":10,"data":[]})"));
}

TEST(TaskViewsTest, Seed003Completed) {
  const jobs::Job job = job_in(JobStatus::kSucceeded);
  auto urls = job_image_urls(job, "https://img.example");
  ASSERT_EQ(urls.size(), 2u);
  EXPECT_EQ(urls[1], "https://img.example/api/jobs/job_abc/image?index=1");
  EXPECT_EQ(parsed(render_task(job, kDialectTasks, urls)), json::parse(R"({
      "id":"job_abc","status":"completed","model":"gpt-image-2",
      "created_at":1714000000,"completed_at":1714000070,
      "output":{"urls":["https://img.example/api/jobs/job_abc/image?index=0",
                        "https://img.example/api/jobs/job_abc/image?index=1"],
                "metadata":{"model":"gpt-image-2","costTime":70}}})"));
}

TEST(TaskViewsTest, Seed003FailedAndCanceled) {
  EXPECT_EQ(parsed(render_task(job_in(JobStatus::kFailed), kDialectTasks, {})), json::parse(R"({
      "id":"job_abc","status":"failed","model":"gpt-image-2",
      "created_at":1714000000,"completed_at":1714000070,
      "error":{"code":"upstream_error","message":"Generation failed"}})"));
  auto canceled = parsed(render_task(job_in(JobStatus::kCanceled), kDialectTasks, {}));
  EXPECT_EQ(canceled.at("status"), "failed");
  EXPECT_EQ(canceled.at("error").at("code"), "canceled");
}

TEST(TaskViewsTest, StatusNamesPerDialect) {
  const std::pair<JobStatus, std::pair<const char*, const char*>> table[] = {
      {JobStatus::kQueued, {"pending", "pending"}},
      {JobStatus::kRunning, {"processing", "processing"}},
      {JobStatus::kSucceeded, {"completed", "succeeded"}},
      {JobStatus::kFailed, {"failed", "failed"}},
      {JobStatus::kCanceled, {"failed", "canceled"}},
      {JobStatus::kExpired, {"failed", "failed"}},
  };
  for (const auto& [status, names] : table) {
    const jobs::Job job = job_in(status);
    EXPECT_EQ(parsed(render_task(job, kDialectTasks, {})).at("status"), names.first);
    EXPECT_EQ(parsed(render_task(job, kDialectSeed002, {})).at("status"), names.second);
    EXPECT_EQ(parsed(render_task(job, kDialectSeed001, {})).at("data").at("status"), names.first);
  }
}

TEST(TaskViewsTest, Seed002SucceededShowsUrlsAndTheCharge) {
  jobs::Job job = job_in(JobStatus::kSucceeded);
  job.charged = 4'700'000;
  EXPECT_EQ(parsed(render_task(job, kDialectSeed002, job_image_urls(job, "http://h"))),
            json::parse(R"({"id":"job_abc","object":"image.generation","created":1714000000,
                            "model":"gpt-image-2","status":"succeeded","credits":4.7,
                            "data":[{"url":"http://h/api/jobs/job_abc/image?index=0"},
                                    {"url":"http://h/api/jobs/job_abc/image?index=1"}]})"));
}

TEST(TaskViewsTest, OnlySucceededJobsHaveUrls) {
  EXPECT_TRUE(job_image_urls(job_in(JobStatus::kRunning), "http://h").empty());
  jobs::Job broken = job_in(JobStatus::kSucceeded);
  broken.result_json = "not json";
  EXPECT_TRUE(job_image_urls(broken, "http://h").empty());
}

TEST(TaskViewsTest, ParsesTheStatusNamesOfEveryDialect) {
  EXPECT_EQ(parse_task_status("pending"), JobStatus::kQueued);
  EXPECT_EQ(parse_task_status("processing"), JobStatus::kRunning);
  EXPECT_EQ(parse_task_status("completed"), JobStatus::kSucceeded);
  EXPECT_EQ(parse_task_status("succeeded"), JobStatus::kSucceeded);
  EXPECT_EQ(parse_task_status("canceled"), JobStatus::kCanceled);
  EXPECT_EQ(parse_task_status("failed"), JobStatus::kFailed);
  EXPECT_EQ(parse_task_status("Completed"), std::nullopt);
  EXPECT_EQ(parse_task_status(""), std::nullopt);
}

}  // namespace
}  // namespace ig::api
