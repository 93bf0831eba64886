#include "net/fake_http_client.h"

namespace ig::net {

HttpResponse FakeHttpClient::response(int status, std::string body,
                                      std::vector<std::pair<std::string, std::string>> headers) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  for (auto& [name, value] : headers) {
    for (char& c : name) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    r.headers.emplace_back(std::move(name), std::move(value));
  }
  return r;
}

void FakeHttpClient::add_response(std::string url, NetResult<HttpResponse> result) {
  std::lock_guard lock(mutex_);
  scripts_[std::move(url)].push_back(std::move(result));
}

void FakeHttpClient::add_response(std::string url, int status, std::string body,
                                  std::vector<std::pair<std::string, std::string>> headers) {
  add_response(std::move(url), response(status, std::move(body), std::move(headers)));
}

void FakeHttpClient::set_handler(Handler handler) {
  std::lock_guard lock(mutex_);
  handler_ = std::move(handler);
}

void FakeHttpClient::set_chunk_size(std::size_t bytes) {
  std::lock_guard lock(mutex_);
  chunk_size_ = bytes;
}

std::vector<HttpRequest> FakeHttpClient::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

std::size_t FakeHttpClient::request_count() const {
  std::lock_guard lock(mutex_);
  return requests_.size();
}

std::optional<HttpRequest> FakeHttpClient::last_request() const {
  std::lock_guard lock(mutex_);
  if (requests_.empty()) return std::nullopt;
  return requests_.back();
}

void FakeHttpClient::clear_requests() {
  std::lock_guard lock(mutex_);
  requests_.clear();
}

NetResult<HttpResponse> FakeHttpClient::answer(const HttpRequest& request) {
  Handler handler;
  {
    std::lock_guard lock(mutex_);
    requests_.push_back(request);
    auto it = scripts_.find(request.url);
    if (it != scripts_.end() && !it->second.empty()) {
      if (it->second.size() == 1) return it->second.front();
      auto result = std::move(it->second.front());
      it->second.pop_front();
      return result;
    }
    handler = handler_;
  }
  if (handler) return handler(request);  // outside the lock: it may call back into the fake
  return std::unexpected(
      NetError{NetErrc::kConnect, "FakeHttpClient: nothing scripted for " + request.url, true});
}

boost::asio::awaitable<NetResult<HttpResponse>> FakeHttpClient::send(HttpRequest request) {
  NetResult<HttpResponse> result = answer(request);
  if (!result) co_return result;
  if (result->body.size() > request.max_response_bytes) {
    co_return std::unexpected(NetError{NetErrc::kTooLarge, "response body too large", false});
  }
  if (request.on_body_chunk) {
    std::size_t chunk;
    {
      std::lock_guard lock(mutex_);
      chunk = chunk_size_ == 0 ? result->body.size() : chunk_size_;
    }
    std::string_view rest = result->body;
    while (!rest.empty()) {
      std::string_view piece = rest.substr(0, chunk);
      rest.remove_prefix(piece.size());
      if (!request.on_body_chunk(piece)) {
        co_return std::unexpected(NetError{NetErrc::kAborted, "aborted by the body sink", false});
      }
    }
    result->body.clear();
  }
  co_return result;
}

}  // namespace ig::net
