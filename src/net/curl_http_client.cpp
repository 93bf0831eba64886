#include "net/curl_http_client.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace ig::net {
namespace {

namespace asio = boost::asio;
namespace ip = boost::asio::ip;

using Completion = std::move_only_function<void(NetResult<HttpResponse>)>;

constexpr std::size_t kMaxHeaderBytes = 256 * 1024;

std::unexpected<NetError> net_fail(NetErrc code, std::string message, bool sent_nothing) {
  return std::unexpected(NetError{code, std::move(message), sent_nothing});
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 32 || c >= 127) return false;
    if (std::strchr("()<>@,;:\\\"/[]?={}", c) != nullptr) return false;
  }
  return true;
}

bool is_field_value(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// The bytes of one multipart part, read in place by curl.
struct MimeCursor {
  const std::string* data = nullptr;
  std::size_t pos = 0;
};

// One easy handle and everything it points into; owned by the client while in flight.
struct Transfer {
  ~Transfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    curl_mime_free(mime);
    curl_slist_free_all(headers);
  }

  std::uint64_t id = 0;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  curl_mime* mime = nullptr;
  HttpRequest request;
  AddressPolicy policy;
  HttpResponse response;
  std::vector<MimeCursor> cursors;
  std::size_t body_bytes = 0;
  std::size_t header_bytes = 0;
  std::optional<NetError> local_error;  // why one of our callbacks stopped the transfer
  int sends = 0;                        // requests put on the wire (on_prereq)
  long redirects_at_send = 0;           // CURLINFO_REDIRECT_COUNT at the last one
  std::optional<NetError> blocked;      // the last address the policy refused
  // The client's registry of connection sockets (on_open_socket adds, Impl::close_socket_callback
  // removes) and curl's close-socket callback with its data: set by the client before configure().
  std::unordered_set<curl_socket_t>* connection_sockets = nullptr;
  curl_closesocket_callback close_socket = nullptr;
  void* close_socket_data = nullptr;
  Completion complete;
  char errbuf[CURL_ERROR_SIZE] = {};
};

// --- curl callbacks (never let an exception escape into C) ---

std::size_t on_write(char* data, std::size_t size, std::size_t count, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  const std::size_t n = size * count;
  try {
    if (t->body_bytes + n > t->request.max_response_bytes) {
      t->local_error = NetError{
          NetErrc::kTooLarge,
          "response body exceeds " + std::to_string(t->request.max_response_bytes) + " bytes",
          false};
      return 0;
    }
    t->body_bytes += n;
    if (t->request.on_body_chunk) {
      if (!t->request.on_body_chunk(std::string_view(data, n))) {
        t->local_error = NetError{NetErrc::kAborted, "aborted by the body sink", false};
        return 0;
      }
      return n;
    }
    if (t->response.body.empty()) {
      curl_off_t length = -1;
      curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
      if (length > 0) {
        t->response.body.reserve(
            std::min(static_cast<std::size_t>(length), t->request.max_response_bytes));
      }
    }
    t->response.body.append(data, n);
    return n;
  } catch (...) {
    t->local_error = NetError{NetErrc::kAborted, "body sink failed", false};
    return 0;
  }
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  const std::size_t n = size * count;
  try {
    t->header_bytes += n;
    if (t->header_bytes > kMaxHeaderBytes) {
      t->local_error = NetError{NetErrc::kTooLarge, "response headers are too large", false};
      return 0;
    }
    std::string_view line(data, n);
    auto& headers = t->response.headers;
    if (line.starts_with("HTTP/")) {
      headers.clear();  // a new response (1xx, a followed redirect) starts a new block
      return n;
    }
    if (trim(line).empty()) return n;
    if ((line.front() == ' ' || line.front() == '\t') && !headers.empty()) {
      headers.back().second.append(" ").append(trim(line));  // obsolete line folding
      return n;
    }
    auto colon = line.find(':');
    if (colon == std::string_view::npos) return n;
    headers.emplace_back(lowercase(trim(line.substr(0, colon))),
                         std::string(trim(line.substr(colon + 1))));
    return n;
  } catch (...) {
    t->local_error = NetError{NetErrc::kOther, "out of memory reading headers", false};
    return 0;
  }
}

// Runs before each request goes on the wire. When a reused connection closes without any
// answer, curl takes it for a stale keep-alive and sends the request again on a new one; for a
// request that is not idempotent (a POST that may have started a paid render upstream) that
// second copy is refused and the transfer fails as a reset after sending. A followed redirect
// is a new request, not a resend.
int on_prereq(void* clientp, char* /*remote_ip*/, char* /*local_ip*/, int /*remote_port*/,
              int /*local_port*/) {
  auto* t = static_cast<Transfer*>(clientp);
  long redirects = 0;
  curl_easy_getinfo(t->easy, CURLINFO_REDIRECT_COUNT, &redirects);
  if (t->sends > 0 && redirects == t->redirects_at_send) {
    t->local_error = NetError{NetErrc::kReset,
                              "the connection closed without an answer after the request was "
                              "sent (not sent again: it is not idempotent)",
                              false};
    return CURL_PREREQFUNC_ABORT;
  }
  ++t->sends;
  t->redirects_at_send = redirects;
  return CURL_PREREQFUNC_OK;
}

std::optional<ip::address> to_address(const curl_sockaddr* a) {
  sockaddr_storage storage{};
  std::memcpy(&storage, &a->addr, std::min<std::size_t>(a->addrlen, sizeof storage));
  if (a->family == AF_INET && a->addrlen >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&storage);
    return ip::address_v4(ntohl(in->sin_addr.s_addr));
  }
  if (a->family == AF_INET6 && a->addrlen >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    ip::address_v6::bytes_type bytes;
    std::memcpy(bytes.data(), &in6->sin6_addr, bytes.size());
    return ip::address_v6(bytes, in6->sin6_scope_id);
  }
  return std::nullopt;
}

curl_socket_t on_open_socket(void* clientp, curlsocktype purpose, curl_sockaddr* address) {
  auto* t = static_cast<Transfer*>(clientp);
  if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
  try {
    auto ip = to_address(address);
    if (!ip) {
      t->blocked = NetError{NetErrc::kBlockedAddress, "non-IP address family refused", true};
      return CURL_SOCKET_BAD;
    }
    if (!is_allowed(*ip, t->policy)) {
      t->blocked = NetError{NetErrc::kBlockedAddress,
                            "address " + ip->to_string() + " is not allowed (" +
                                std::string(to_string(classify(*ip))) + ")",
                            true};
      return CURL_SOCKET_BAD;
    }
  } catch (...) {
    return CURL_SOCKET_BAD;
  }
  int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  try {
    if (t->connection_sockets != nullptr) t->connection_sockets->insert(fd);
  } catch (...) {
    ::close(fd);
    return CURL_SOCKET_BAD;
  }
  return fd;
}

std::size_t mime_read(char* buffer, std::size_t size, std::size_t count, void* arg) {
  auto* c = static_cast<MimeCursor*>(arg);
  std::size_t n = std::min(size * count, c->data->size() - c->pos);
  std::memcpy(buffer, c->data->data() + c->pos, n);
  c->pos += n;
  return n;
}

int mime_seek(void* arg, curl_off_t offset, int origin) {
  auto* c = static_cast<MimeCursor*>(arg);
  if (origin != SEEK_SET || offset < 0 || static_cast<std::size_t>(offset) > c->data->size()) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  c->pos = static_cast<std::size_t>(offset);
  return CURL_SEEKFUNC_OK;
}

// Sets up the easy handle; an error means the request was invalid (nothing was sent).
std::optional<NetError> configure(Transfer& t, const CurlClientSettings& settings) {
  auto invalid = [](std::string message) {
    return NetError{NetErrc::kOther, std::move(message), true};
  };
  const HttpRequest& r = t.request;
  if (r.url.empty()) return NetError{NetErrc::kBadUrl, "empty URL", true};
  if (!r.proxy.empty() && !istarts_with(r.proxy, "http://") && !istarts_with(r.proxy, "https://")) {
    return NetError{NetErrc::kBadUrl, "proxy must be an http:// or https:// URL", true};
  }
  if (!is_token(r.method)) return invalid("invalid HTTP method");

  t.easy = curl_easy_init();
  if (t.easy == nullptr) return invalid("curl_easy_init failed");
  CURL* e = t.easy;

  bool has_content_type = false;
  bool has_expect = false;
  for (const auto& [name, value] : r.headers) {
    if (!is_token(name) || !is_field_value(value)) return invalid("invalid header: " + name);
    has_content_type = has_content_type || iequals(name, "content-type");
    has_expect = has_expect || iequals(name, "expect");
    // "Name;" is curl's way of sending a header with an empty value ("Name:" would remove it).
    std::string line = value.empty() ? name + ";" : name + ": " + value;
    curl_slist* next = curl_slist_append(t.headers, line.c_str());
    if (next == nullptr) return invalid("out of memory");
    t.headers = next;
  }
  std::vector<std::string> extra;
  if (!has_expect) extra.push_back("Expect:");  // no 100-continue round trip for big bodies
  const bool sends_body = !r.mime.empty() || !r.body.empty() || r.method == "POST" ||
                          r.method == "PUT" || r.method == "PATCH";
  if (r.mime.empty() && sends_body && !has_content_type) extra.push_back("Content-Type:");
  for (const auto& line : extra) {
    curl_slist* next = curl_slist_append(t.headers, line.c_str());
    if (next == nullptr) return invalid("out of memory");
    t.headers = next;
  }

  CURLcode rc = CURLE_OK;
  auto set = [&](CURLoption option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(e, option, value);
  };
  set(CURLOPT_PRIVATE, static_cast<void*>(&t));
  set(CURLOPT_NOSIGNAL, 1L);
  set(CURLOPT_ERRORBUFFER, static_cast<char*>(t.errbuf));
  set(CURLOPT_URL, r.url.c_str());
  set(CURLOPT_PROTOCOLS_STR, "http,https");
  set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  set(CURLOPT_OPENSOCKETFUNCTION, &on_open_socket);
  set(CURLOPT_OPENSOCKETDATA, static_cast<void*>(&t));
  if (t.close_socket != nullptr) {
    set(CURLOPT_CLOSESOCKETFUNCTION, t.close_socket);
    set(CURLOPT_CLOSESOCKETDATA, t.close_socket_data);
  }
  set(CURLOPT_WRITEFUNCTION, &on_write);
  set(CURLOPT_WRITEDATA, static_cast<void*>(&t));
  set(CURLOPT_HEADERFUNCTION, &on_header);
  set(CURLOPT_HEADERDATA, static_cast<void*>(&t));
  set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::max(r.connect_timeout_ms, 1)));
  set(CURLOPT_TIMEOUT_MS, static_cast<long>(std::max(r.total_timeout_ms, 1)));
  set(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(r.max_response_bytes));
  set(CURLOPT_FOLLOWLOCATION, r.max_redirects > 0 ? 1L : 0L);
  set(CURLOPT_MAXREDIRS, static_cast<long>(std::max(r.max_redirects, 0)));
  set(CURLOPT_PROXY, r.proxy.c_str());  // "" also disables *_proxy environment variables
  set(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  set(CURLOPT_USERAGENT, settings.user_agent.c_str());
  set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  // Over TLS, wait for ALPN to tell whether a connection multiplexes before opening another.
  // Not for cleartext: HTTP/1.1 would only be confirmed by the first response.
  if (istarts_with(r.url, "https://")) set(CURLOPT_PIPEWAIT, 1L);
  set(CURLOPT_TCP_KEEPALIVE, 1L);
  // A transfer that ends while its name is still resolving must not join the resolver thread
  // (that would block the strand until getaddrinfo returns); the thread is detached instead and
  // frees itself. 7.87+: older libcurl ignores this and may block in that case.
  curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
  if (t.policy != settings.address_policy) {
    // Connections are pooled per client: keep a different policy out of that pool.
    set(CURLOPT_FRESH_CONNECT, 1L);
    set(CURLOPT_FORBID_REUSE, 1L);
  }

  if (!r.mime.empty()) {
    t.mime = curl_mime_init(e);
    if (t.mime == nullptr) return invalid("out of memory");
    t.cursors.resize(r.mime.size());
    for (std::size_t i = 0; i < r.mime.size(); ++i) {
      const MimeField& field = r.mime[i];
      if (field.name.empty() || !is_field_value(field.name) ||
          !is_field_value(field.content_type) ||
          (field.filename && !is_field_value(*field.filename))) {
        return invalid("invalid multipart field");
      }
      curl_mimepart* part = curl_mime_addpart(t.mime);
      if (part == nullptr) return invalid("out of memory");
      t.cursors[i].data = &field.value;
      CURLcode mc = curl_mime_name(part, field.name.c_str());
      if (mc == CURLE_OK) {
        mc = curl_mime_data_cb(part, static_cast<curl_off_t>(field.value.size()), &mime_read,
                               &mime_seek, nullptr, &t.cursors[i]);
      }
      if (mc == CURLE_OK && field.filename) mc = curl_mime_filename(part, field.filename->c_str());
      if (mc == CURLE_OK && !field.content_type.empty()) {
        mc = curl_mime_type(part, field.content_type.c_str());
      }
      if (mc != CURLE_OK) return invalid(std::string("multipart: ") + curl_easy_strerror(mc));
    }
  }

  if (r.method == "HEAD") {
    set(CURLOPT_NOBODY, 1L);
  } else if (!sends_body) {
    set(CURLOPT_HTTPGET, 1L);
    if (r.method != "GET") set(CURLOPT_CUSTOMREQUEST, r.method.c_str());
  } else {
    if (t.mime != nullptr) {
      set(CURLOPT_MIMEPOST, t.mime);
    } else {
      set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
      set(CURLOPT_POSTFIELDS, r.body.data());
    }
    if (r.method != "POST") set(CURLOPT_CUSTOMREQUEST, r.method.c_str());
  }
  set(CURLOPT_HTTPHEADER, t.headers);
  if (r.method != "GET" && r.method != "HEAD") {
    set(CURLOPT_PREREQFUNCTION, &on_prereq);
    set(CURLOPT_PREREQDATA, static_cast<void*>(&t));
  }
  if (rc != CURLE_OK) return invalid(std::string("curl setup: ") + curl_easy_strerror(rc));
  return std::nullopt;
}

// Conservative: any sign that a request byte may have left (or was about to) means "maybe sent".
// With redirects these cover the whole chain, so a hop that was sent counts.
bool certainly_unsent(CURL* easy) {
  long request_bytes = 0;
  curl_off_t uploaded = 0;
  curl_off_t pretransfer_us = 0;
  curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &request_bytes);
  curl_easy_getinfo(easy, CURLINFO_SIZE_UPLOAD_T, &uploaded);
  curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_us);
  return request_bytes == 0 && uploaded == 0 && pretransfer_us == 0;
}

// Turns a finished transfer into the caller's result.
NetResult<HttpResponse> outcome(Transfer& t, CURLcode rc) {
  if (rc == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &status);
    t.response.status = static_cast<int>(status);
    return std::move(t.response);
  }
  const bool unsent = certainly_unsent(t.easy);
  if (t.local_error) {
    NetError error = std::move(*t.local_error);
    error.sent_nothing = unsent;
    return std::unexpected(std::move(error));
  }
  if (t.blocked && rc == CURLE_COULDNT_CONNECT) {
    t.blocked->sent_nothing = unsent;  // false when an earlier redirect hop was sent
    return std::unexpected(std::move(*t.blocked));
  }

  std::string detail = t.errbuf[0] != '\0' ? std::string(t.errbuf) : curl_easy_strerror(rc);
  switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return net_fail(NetErrc::kBadUrl, detail, unsent);
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_PROXY:
      return net_fail(NetErrc::kConnect, detail, unsent);
    case CURLE_OPERATION_TIMEDOUT:
      return net_fail(NetErrc::kTimeout, detail, unsent);
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
      return net_fail(NetErrc::kTls, detail, unsent);
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_SEND_FAIL_REWIND:
      return net_fail(NetErrc::kReset, detail, unsent);
    case CURLE_FILESIZE_EXCEEDED:
      return net_fail(NetErrc::kTooLarge, detail, unsent);
    case CURLE_TOO_MANY_REDIRECTS:
      return net_fail(NetErrc::kTooManyRedirects, detail, unsent);
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
      return net_fail(NetErrc::kAborted, detail, unsent);
    default:
      return net_fail(NetErrc::kOther, detail, unsent);
  }
}

}  // namespace

struct CurlHttpClient::Impl : std::enable_shared_from_this<Impl> {
  // A socket curl asked us to watch. Asio watches a dup of curl's descriptor, so closing ours
  // never touches curl's (or, after curl closed it, whoever reused the number).
  struct Watch {
    explicit Watch(asio::io_context& ioc) : descriptor(ioc) {}
    ~Watch() { release(); }
    void release() {
      if (!descriptor.is_open()) return;
      int fd = descriptor.release();  // deregisters from epoll, aborts pending waits
      ::close(fd);
    }

    curl_socket_t fd = CURL_SOCKET_BAD;  // curl's descriptor
    dev_t dev = 0;                       // identity of the socket behind it
    ino_t ino = 0;
    asio::posix::stream_descriptor descriptor;
    int what = 0;  // CURL_POLL_IN / OUT / INOUT
    bool reading = false;
    bool writing = false;
    bool dead = false;
    bool was_read = false;  // curl asked to read it: the connection was established
  };

  // Cancellation slot handler: aborts the transfer on the strand.
  struct CancelOnSignal {
    std::weak_ptr<Impl> impl;
    std::uint64_t id;
    void operator()(asio::cancellation_type type) const {
      if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial)) ==
          asio::cancellation_type::none) {
        return;
      }
      if (auto self = impl.lock()) {
        asio::post(self->strand_, [self, id = id] { self->cancel(id); });
      }
    }
  };

  // The async_initiate initiation of send(): trivially destructible on purpose (it is a
  // temporary of the co_await expression; see the GCC 12 pitfall in docs/architecture.md).
  struct SendInitiation {
    Impl* impl;
    HttpRequest* request;

    template <class Handler>
    void operator()(Handler&& handler) const {
      std::uint64_t id = impl->next_id_.fetch_add(1, std::memory_order_relaxed);
      auto slot = asio::get_associated_cancellation_slot(handler);
      if (slot.is_connected()) slot.assign(CancelOnSignal{impl->weak_from_this(), id});
      auto work = asio::make_work_guard(asio::get_associated_executor(handler));
      Completion done = [h = std::forward<Handler>(handler),
                         work = std::move(work)](NetResult<HttpResponse> result) mutable {
        auto home = work.get_executor();
        work.reset();
        asio::post(home, [h = std::move(h), result = std::move(result)]() mutable {
          std::move(h)(std::move(result));
        });
      };
      impl->start(std::move(*request), std::move(done), id);
    }
  };

  static asio::awaitable<NetResult<HttpResponse>> send(std::shared_ptr<Impl> self,
                                                       HttpRequest request) {
    SendInitiation initiation{self.get(), &request};
    auto result = co_await asio::async_initiate<const asio::use_awaitable_t<>&,
                                                void(NetResult<HttpResponse>)>(initiation,
                                                                               asio::use_awaitable);
    co_return result;
  }

  Impl(asio::io_context& ioc, CurlClientSettings settings)
      : ioc_(ioc), strand_(asio::make_strand(ioc)), timer_(ioc), settings_(std::move(settings)) {
    multi_ = curl_multi_init();
    if (multi_ == nullptr) return;
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Impl::socket_callback);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, static_cast<void*>(this));
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Impl::timer_callback);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, static_cast<void*>(this));
    curl_multi_setopt(multi_, CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_MULTIPLEX));
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS,
                      static_cast<long>(settings_.max_connections_per_host));
    curl_multi_setopt(multi_, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      static_cast<long>(settings_.max_total_connections));
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS,
                      static_cast<long>(settings_.max_total_connections));
  }

  // Runs only when nothing else references the Impl: no handler can run concurrently.
  ~Impl() { close_multi(); }

  // --- caller's thread ---

  void start(HttpRequest request, Completion done, std::uint64_t id) {
    auto t = std::make_unique<Transfer>();
    t->id = id;
    t->policy = request.address_policy.value_or(settings_.address_policy);
    t->request = std::move(request);
    t->complete = std::move(done);
    t->connection_sockets = &connection_sockets_;
    t->close_socket = &Impl::close_socket_callback;
    t->close_socket_data = static_cast<void*>(this);
    if (auto error = configure(*t, settings_)) {
      Completion complete = std::move(t->complete);
      t.reset();
      complete(std::unexpected(std::move(*error)));
      return;
    }
    asio::post(strand_, [self = shared_from_this(), t = std::move(t)]() mutable {
      self->add(std::move(t));
    });
  }

  // --- strand ---

  void add(std::unique_ptr<Transfer> t) {
    if (stopped_ || multi_ == nullptr) {
      Completion complete = std::move(t->complete);
      t.reset();
      complete(net_fail(NetErrc::kAborted, "http client is shut down", true));
      return;
    }
    CURLMcode mc = curl_multi_add_handle(multi_, t->easy);
    if (mc != CURLM_OK) {
      Completion complete = std::move(t->complete);
      t.reset();
      complete(net_fail(NetErrc::kOther, curl_multi_strerror(mc), true));
      return;
    }
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    transfers_.emplace(t->id, std::move(t));
  }

  void finish(std::uint64_t id, std::optional<NetError> abort_reason, CURLcode rc) {
    auto it = transfers_.find(id);
    if (it == transfers_.end()) return;
    std::unique_ptr<Transfer> t = std::move(it->second);
    transfers_.erase(it);
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    curl_multi_remove_handle(multi_, t->easy);
    NetResult<HttpResponse> result;
    if (abort_reason) {
      abort_reason->sent_nothing = certainly_unsent(t->easy);
      result = std::unexpected(std::move(*abort_reason));
    } else {
      result = outcome(*t, rc);
    }
    if (!result) {
      long status = 0;
      curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
      result.error().status = static_cast<int>(status);
    }
    Completion complete = std::move(t->complete);
    t.reset();
    complete(std::move(result));
  }

  void cancel(std::uint64_t id) {
    finish(id, NetError{NetErrc::kAborted, "cancelled by the caller", false}, CURLE_OK);
  }

  void abort_all() {
    if (stopped_) return;
    stopped_ = true;
    std::vector<std::uint64_t> ids;
    for (const auto& [id, t] : transfers_) ids.push_back(id);
    for (auto id : ids) {
      finish(id, NetError{NetErrc::kAborted, "http client shut down", false}, CURLE_OK);
    }
    close_multi();
  }

  void close_multi() {
    if (multi_ != nullptr) {
      curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, nullptr);
      curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, nullptr);
      // Transfers left here were never aborted on the strand (the io_context stopped running):
      // their callers' coroutines are being destroyed with it, so there is nobody to complete.
      for (auto& [id, t] : transfers_) curl_multi_remove_handle(multi_, t->easy);
      transfers_.clear();
      curl_multi_cleanup(multi_);  // closes the idle connections
      multi_ = nullptr;
    }
    for (auto& [fd, w] : watches_) {
      w->dead = true;
      w->release();
    }
    watches_.clear();
    timer_.cancel();
  }

  // Called by curl (C): no exception may escape. -1 makes curl fail the transfers.
  static int socket_callback(CURL*, curl_socket_t s, int what, void* userp, void*) {
    try {
      static_cast<Impl*>(userp)->on_socket(s, what);
      return 0;
    } catch (...) {
      return -1;
    }
  }

  static int timer_callback(CURLM*, long timeout_ms, void* userp) {
    try {
      static_cast<Impl*>(userp)->on_timer_change(timeout_ms);
      return 0;
    } catch (...) {
      return -1;
    }
  }

  void drop_watch(curl_socket_t s) {
    auto it = watches_.find(s);
    if (it == watches_.end()) return;
    it->second->dead = true;
    it->second->release();
    watches_.erase(it);
  }

  // Called by curl (C) on the strand, instead of close(), for the connection sockets it opened
  // through on_open_socket: the one moment such a socket's watch must go.
  static int close_socket_callback(void* clientp, curl_socket_t s) {
    auto* self = static_cast<Impl*>(clientp);
    try {
      self->connection_sockets_.erase(s);
      self->drop_watch(s);
    } catch (...) {
    }
    return ::close(s);
  }

  void on_socket(curl_socket_t s, int what) {
    const bool connection = connection_sockets_.contains(s);
    if (what == CURL_POLL_REMOVE) {
      // A kept-alive connection between two transfers: its watch stays registered, idle,
      // until curl closes the socket (close_socket_callback). Re-creating it per transfer cost
      // an fstat, a dup, a close and two epoll_ctl calls per upstream request. Only an
      // established connection is kept (curl reads only from those; a connecting socket is
      // only ever watched for writing): curl closes a connect attempt it gives up on (a
      // connect timeout) without the close-socket callback, and a watch kept for it would hold
      // that socket open through our dup and be found again when the number is reused.
      auto it = watches_.find(s);
      if (connection && it != watches_.end() && it->second->was_read) {
        it->second->what = 0;
      } else {
        drop_watch(s);
      }
      return;
    }
    auto it = watches_.find(s);
    struct stat st {};
    bool open = true;
    if (!connection || it == watches_.end() || it->second->what == 0) {
      // Not one of ours (curl's own pipes), or an idle kept-alive watch being taken up again:
      // curl may have closed the descriptor without telling us and the number come back as
      // another socket. One fstat per transfer, against the identity recorded at creation.
      open = ::fstat(s, &st) == 0;
      if (it != watches_.end() &&
          (!open || it->second->dev != st.st_dev || it->second->ino != st.st_ino)) {
        drop_watch(s);
        it = watches_.end();
      }
    }
    if (it == watches_.end()) {
      if (!open) return;  // the transfer's own timeout ends it
      int copy = ::fcntl(s, F_DUPFD_CLOEXEC, 0);
      if (copy < 0) return;
      auto w = std::make_shared<Watch>(ioc_);
      boost::system::error_code ec;
      w->descriptor.assign(copy, ec);
      if (ec) {
        ::close(copy);
        return;
      }
      w->fd = s;
      w->dev = st.st_dev;
      w->ino = st.st_ino;
      it = watches_.emplace(s, std::move(w)).first;
    }
    it->second->what = what;
    if ((what & CURL_POLL_IN) != 0) it->second->was_read = true;
    arm(it->second);
  }

  auto ready_handler(const std::shared_ptr<Watch>& w, int direction) {
    return asio::bind_executor(
        strand_, [self = shared_from_this(), w, direction](boost::system::error_code ec) {
          self->on_ready(w, direction, ec);
        });
  }

  void arm(const std::shared_ptr<Watch>& w) {
    if (w->dead) return;
    if ((w->what & CURL_POLL_IN) != 0 && !w->reading) {
      w->reading = true;
      w->descriptor.async_wait(asio::posix::stream_descriptor::wait_read,
                               ready_handler(w, CURL_CSELECT_IN));
    }
    if ((w->what & CURL_POLL_OUT) != 0 && !w->writing) {
      w->writing = true;
      w->descriptor.async_wait(asio::posix::stream_descriptor::wait_write,
                               ready_handler(w, CURL_CSELECT_OUT));
    }
  }

  void on_ready(const std::shared_ptr<Watch>& w, int direction, boost::system::error_code ec) {
    (direction == CURL_CSELECT_IN ? w->reading : w->writing) = false;
    if (w->dead || ec == asio::error::operation_aborted || multi_ == nullptr) return;
    const int wanted = direction == CURL_CSELECT_IN ? CURL_POLL_IN : CURL_POLL_OUT;
    if ((w->what & wanted) == 0) return;  // curl no longer cares; a later arm() re-waits
    int running = 0;
    curl_multi_socket_action(multi_, w->fd, ec ? CURL_CSELECT_ERR : direction, &running);
    drain();
    if (!ec) arm(w);  // after an error curl decides (usually REMOVE); avoid a busy loop
  }

  // curl moves its timer on nearly every call (0 ms after each new transfer), and each re-arm of
  // an asio timer is a timerfd_settime system call: expensive in a VM, and it was a fifth of an
  // IO thread's time under load. So "now" is a post, not a timer, and a deadline later than the
  // armed one keeps the armed one: when it fires early it re-arms for what curl last asked
  // (curl only calls back when its deadline changes, so that is remembered in wanted_).
  void on_timer_change(long timeout_ms) {
    if (timeout_ms < 0) {
      wanted_.reset();  // an armed wait stays; when it fires there is nothing to do
      return;
    }
    if (timeout_ms == 0) {
      wanted_.reset();
      asio::post(strand_, [self = shared_from_this()] { self->on_timeout(); });
      return;
    }
    wanted_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    arm_timer();
  }

  void arm_timer() {
    if (!wanted_ || (timer_armed_ && timer_.expiry() <= *wanted_)) return;
    timer_armed_ = true;
    timer_.expires_at(*wanted_);
    timer_.async_wait(
        asio::bind_executor(strand_, [self = shared_from_this()](boost::system::error_code ec) {
          if (ec) return;  // re-armed or shut down
          self->timer_armed_ = false;
          self->on_timer_fired();
        }));
  }

  void on_timer_fired() {
    if (!wanted_) return;
    if (*wanted_ > std::chrono::steady_clock::now()) {
      arm_timer();  // fired for an earlier deadline curl has since moved
      return;
    }
    wanted_.reset();
    on_timeout();
  }

  void on_timeout() {
    if (multi_ == nullptr) return;
    int running = 0;
    curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
    drain();
  }

  void drain() {
    int left = 0;
    while (multi_ != nullptr) {
      CURLMsg* msg = curl_multi_info_read(multi_, &left);
      if (msg == nullptr) break;
      if (msg->msg != CURLMSG_DONE) continue;
      CURLcode rc = msg->data.result;
      char* priv = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
      finish(reinterpret_cast<Transfer*>(priv)->id, std::nullopt, rc);
    }
  }

  asio::io_context& ioc_;
  asio::strand<asio::io_context::executor_type> strand_;
  asio::steady_timer timer_;
  bool timer_armed_ = false;  // a wait is pending on timer_ (strand only)
  std::optional<std::chrono::steady_clock::time_point> wanted_;  // curl's deadline (strand only)
  CurlClientSettings settings_;
  CURLM* multi_ = nullptr;
  std::unordered_map<std::uint64_t, std::unique_ptr<Transfer>> transfers_;  // strand
  std::unordered_map<curl_socket_t, std::shared_ptr<Watch>> watches_;       // strand
  std::unordered_set<curl_socket_t> connection_sockets_;                    // strand
  bool stopped_ = false;                                                    // strand
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<std::size_t> in_flight_{0};
};

CurlHttpClient::CurlHttpClient(asio::io_context& ioc, CurlClientSettings settings)
    : impl_(std::make_shared<Impl>(ioc, std::move(settings))) {}

CurlHttpClient::~CurlHttpClient() { shutdown(); }

void CurlHttpClient::shutdown() {
  // Posted, never run inline: this may be called from a body sink, i.e. inside a curl callback.
  asio::post(impl_->strand_, [impl = impl_] { impl->abort_all(); });
}

std::size_t CurlHttpClient::in_flight() const {
  return impl_->in_flight_.load(std::memory_order_relaxed);
}

// Not a coroutine itself: the awaitable owns the Impl, so one that outlives the client (created,
// not yet awaited) fails with kAborted instead of touching a destroyed object.
asio::awaitable<NetResult<HttpResponse>> CurlHttpClient::send(HttpRequest request) {
  return Impl::send(impl_, std::move(request));
}

Result<void> init_curl() {
  const curl_version_info_data* info = curl_version_info(CURLVERSION_NOW);
  if (info == nullptr || info->version_num < 0x075500) {
    return fail(ErrorCode::kInternal, std::string("libcurl >= 7.85 is required, found ") +
                                          (info != nullptr ? info->version : "unknown"));
  }
  if ((info->features & CURL_VERSION_ASYNCHDNS) == 0) {
    return fail(ErrorCode::kInternal, "libcurl without asynchronous DNS would block IO threads");
  }
  CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) {
    return fail(ErrorCode::kInternal, std::string("curl_global_init: ") + curl_easy_strerror(rc));
  }
  return {};
}

void cleanup_curl() { curl_global_cleanup(); }

}  // namespace ig::net
