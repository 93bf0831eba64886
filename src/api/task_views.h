#pragma once
// Task dialects: how one Job reads in each async contract of the seeds. Pure functions (no I/O),
// so the exact JSON of every dialect is table-tested in task_views_test.cpp.
//
//   dialect   created by                                   read with
//   "tasks"   seed 003 (`input`), or any async create on   GET /v1/tasks/{id}
//             /v1/images/generations
//   "seed001" an async create on /api/v1/images/...        GET /api/v1/images/generations?task_id=
//   "seed002" a key or deployment with profile seed002     GET /api/v1/images/tasks/{id}
//
// Every dialect can read every job (GET /v1/tasks/{id} is the generic one); the dialect stored
// on the job only decides the create reply and, later, the callback body.

#include <boost/json/object.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jobs/job.h"

namespace ig::api {

inline constexpr std::string_view kDialectTasks = "tasks";
inline constexpr std::string_view kDialectSeed001 = "seed001";
inline constexpr std::string_view kDialectSeed002 = "seed002";

// URLs of a succeeded job's images (`/api/jobs/{id}/image`, with ?index=N when there are
// several), built on `base` (scheme://host, no trailing slash). Empty for other jobs.
std::vector<std::string> job_image_urls(const jobs::Job& job, std::string_view base);

// The reply to the create call of an async job.
boost::json::object render_task_created(const jobs::Job& job, std::string_view dialect);

// The task as the dialect's GET returns it (and as its callback will carry it).
boost::json::object render_task(const jobs::Job& job, std::string_view dialect,
                                const std::vector<std::string>& urls);

// The dialect a job's own replies and callbacks use: its task dialect, or the generic one for
// sync jobs.
std::string_view task_dialect(const jobs::Job& job);

// The callback body of a finished job: exactly what its dialect's GET returns.
std::string render_callback_body(const jobs::Job& job, std::string_view base);

// Status names clients filter by on GET /v1/tasks?status=: seed 003's and seed 002's names, and
// the engine's own (queued, running, ...). nullopt for anything else.
std::optional<jobs::JobStatus> parse_task_status(std::string_view name);

}  // namespace ig::api
