#pragma once
// OpenAI Images dialect: POST /v1/images/generations and /v1/images/edits (JSON or multipart;
// also under /api/v1), replies in OpenAI's shape (b64_json and/or url per response_format),
// streamed replies as server-sent events, and the result files: GET /api/jobs/{id}/image
// (seed 000), signed URLs GET /v1/files/{blob}?exp=&sig=, and GET /api/jobs/{id} for the owner.

#include <string>
#include <vector>

#include "accounts/authenticator.h"
#include "blobs/blob_store.h"
#include "blobs/signed_url.h"
#include "http/blocking_pool.h"
#include "http/router.h"
#include "jobs/image_pipeline.h"
#include "jobs/job_runner.h"
#include "net/address_policy.h"
#include "store/store.h"

namespace ig::api {

struct ImagesApiSettings {
  // Which fields a reply carries when the request has no response_format: "b64_json", "url",
  // or "both" (seed 000 returns both).
  std::string default_response_format = "both";
  // "job": /api/jobs/{id}/image?index=N (random, unguessable ids); "signed": /v1/files/{blob}
  // with an HMAC signature that expires after signed_url_ttl_s.
  std::string url_style = "job";
  int signed_url_ttl_s = 7 * 24 * 3600;
  // Remote addresses whose X-Forwarded-Proto / X-Forwarded-Host are believed (see
  // api/public_url.h for how they build reply URLs).
  std::vector<std::string> trusted_proxies;
  // False when public_base_url came from the listen address: a trusted proxy's Host may then
  // stand in for the missing X-Forwarded-Host.
  bool public_base_url_configured = false;
  // Deployment compatibility profile for POST /api/v1/images/generations: "seed001" (sync
  // unless the request asks for a task) or "seed002" (always a pending task).
  std::string task_profile = "seed001";
  // Which addresses a callback_url may name (the reference-image rules).
  net::AddressPolicy callback_policy;
};

class ImagesApi {
 public:
  ImagesApi(store::Store& store, BlockingPool& pool, accounts::Authenticator& auth,
            jobs::ImagePipeline& pipeline, jobs::JobRunner& runner, blobs::BlobStore& blobs,
            blobs::UrlSigner& signer,
            const Clock& clock, const std::string& public_base_url, ImagesApiSettings settings);
  void register_routes(http::Router& router);
  // scheme://host of this deployment as the client sees it (X-Forwarded-* from trusted proxies).
  std::string base_url(const http::Request& req) const;

 private:
  boost::asio::awaitable<http::Response> create(http::Request& req, bool edit_endpoint);
  boost::asio::awaitable<http::Response> create_for(http::Request& req, bool edit_endpoint,
                                                    const accounts::Principal& principal);
  boost::asio::awaitable<http::Response> job_image(http::Request& req);
  boost::asio::awaitable<http::Response> signed_file(http::Request& req);
  boost::asio::awaitable<http::Response> job_status(http::Request& req);
  boost::asio::awaitable<http::Response> serve_blob(http::Request& req, const std::string& blob_id,
                                                    const std::string& cache_control);

  // Whether a create call becomes an async task, and the dialect its reply is rendered in.
  struct TaskMode {
    bool async = false;
    std::string dialect;
  };
  TaskMode task_mode(const http::Request& req, const jobs::ImageRequest& request,
                     bool edit_endpoint, const std::string& key_profile) const;

 public:
  // Exposed for the streaming producer.
  struct StreamState;
  boost::asio::awaitable<void> stream_images(std::shared_ptr<StreamState> state,
                                             http::BodyWriter& writer);

 private:
  std::string render_reply(const jobs::ImageJobOutcome& outcome, const std::string& format,
                           const std::string& output_format, const std::string& background,
                           const std::string& base) const;

  store::Store& store_;
  BlockingPool& pool_;
  accounts::Authenticator& auth_;
  jobs::ImagePipeline& pipeline_;
  jobs::JobRunner& runner_;
  blobs::BlobStore& blobs_;
  blobs::UrlSigner& signer_;
  const Clock& clock_;
  const std::string& public_base_url_;
  ImagesApiSettings settings_;
};

}  // namespace ig::api
