#pragma once
// Router: maps (method, path pattern) to a handler. Patterns are literal segments and {name}
// captures ("/v1/tasks/{id}"). Every "/v1/..." route also answers under "/api/v1/...".
// An unmatched path is a JSON 404; a matched path with another method is a JSON 405.

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <string>
#include <vector>

#include "http/message.h"

namespace ig::http {

using Handler = std::function<boost::asio::awaitable<Response>(Request&)>;
// Sees a request for an existing route once its header is read, while part of its body is still
// to come and before any `100 Continue`: an error refuses the request there, so nobody can make
// the server buffer a body it would refuse anyway (an upload without a valid key, say).
// `request.body` is empty.
using BodyGate =
    std::function<boost::asio::awaitable<std::optional<Error>>(const Request& request)>;

class Router {
 public:
  void add(std::string method, std::string pattern, Handler handler);

  struct Match {
    const Handler* handler = nullptr;  // null: see `error`
    std::vector<std::pair<std::string, std::string>> params;
    std::optional<Error> error;     // 404 or 405
    std::string allow;              // for 405
  };
  Match match(std::string_view method, std::string_view path) const;

  void set_body_gate(BodyGate gate) { body_gate_ = std::move(gate); }
  const BodyGate& body_gate() const { return body_gate_; }

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    Handler handler;
  };
  bool match_route(const Route& route, const std::vector<std::string_view>& segments,
                   std::vector<std::pair<std::string, std::string>>& params) const;
  Match match_exact(std::string_view method, std::string_view path) const;

  std::vector<Route> routes_;
  BodyGate body_gate_;
};

}  // namespace ig::http
