#pragma once
// FakeHttpClient: an HttpClient for other modules' unit tests; it never touches the network.
// Every send is recorded, then answered from a script: results queued per exact URL (used in
// order, the last one repeats), else the handler, else kConnect with sent_nothing (nothing
// scripted). It behaves like the real client where callers can tell: a request with
// on_body_chunk receives the body through it (in chunk_size pieces, in order; false aborts with
// kAborted) and gets an empty body; a body above max_response_bytes fails with kTooLarge.
// Thread-safe; completes without suspending.

#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "net/http_client.h"

namespace ig::net {

class FakeHttpClient final : public HttpClient {
 public:
  using Handler = std::function<NetResult<HttpResponse>(const HttpRequest&)>;

  // A response value; header names are lower-cased like the real client's.
  static HttpResponse response(int status, std::string body,
                               std::vector<std::pair<std::string, std::string>> headers = {});

  // Queues a result for requests to exactly this URL.
  void add_response(std::string url, NetResult<HttpResponse> result);
  void add_response(std::string url, int status, std::string body,
                    std::vector<std::pair<std::string, std::string>> headers = {});
  // Answers requests whose URL has no script.
  void set_handler(Handler handler);
  // Piece size for on_body_chunk delivery (default 4096; 0 = the whole body at once).
  void set_chunk_size(std::size_t bytes);

  std::vector<HttpRequest> requests() const;
  std::size_t request_count() const;
  std::optional<HttpRequest> last_request() const;
  void clear_requests();

  boost::asio::awaitable<NetResult<HttpResponse>> send(HttpRequest request) override;

 private:
  NetResult<HttpResponse> answer(const HttpRequest& request);

  mutable std::mutex mutex_;
  std::map<std::string, std::deque<NetResult<HttpResponse>>> scripts_;
  Handler handler_;
  std::size_t chunk_size_ = 4096;
  std::vector<HttpRequest> requests_;
};

}  // namespace ig::net
