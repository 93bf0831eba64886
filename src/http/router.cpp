#include "http/router.h"

#include "core/text.h"

namespace ig::http {
namespace {

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  while (true) {
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

}  // namespace

void Router::add(std::string method, std::string pattern, Handler handler) {
  Route route{std::move(method), {}, std::move(handler)};
  for (auto seg : split_path(pattern)) route.segments.emplace_back(seg);
  routes_.push_back(std::move(route));
}

bool Router::match_route(const Route& route, const std::vector<std::string_view>& segments,
                         std::vector<std::pair<std::string, std::string>>& params) const {
  if (route.segments.size() != segments.size()) return false;
  params.clear();
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const std::string& want = route.segments[i];
    if (want.size() > 2 && want.front() == '{' && want.back() == '}') {
      if (segments[i].empty()) return false;
      params.emplace_back(want.substr(1, want.size() - 2), std::string(segments[i]));
    } else if (want != segments[i]) {
      return false;
    }
  }
  return true;
}

Router::Match Router::match_exact(std::string_view method, std::string_view path) const {
  Match result;
  auto segments = split_path(path);
  std::vector<std::pair<std::string, std::string>> params;
  for (const auto& route : routes_) {
    if (!match_route(route, segments, params)) continue;
    if (route.method == method || (method == "HEAD" && route.method == "GET")) {
      result.handler = &route.handler;
      result.params = std::move(params);
      result.error.reset();
      return result;
    }
    if (!result.allow.empty()) result.allow += ", ";
    result.allow += route.method;
  }
  if (!result.allow.empty()) {
    result.error = Error{ErrorCode::kMethodNotAllowed,
                         "Method " + printable(method, 16) +
                             " is not allowed here. Allowed: " + result.allow};
  } else {
    result.error = Error{ErrorCode::kNotFound, "Unknown route."};
  }
  return result;
}

Router::Match Router::match(std::string_view method, std::string_view path) const {
  Match result = match_exact(method, path);
  constexpr std::string_view kApiPrefix = "/api/v1/";
  if (result.handler == nullptr && result.allow.empty() && path.starts_with(kApiPrefix)) {
    Match alias = match_exact(method, path.substr(4));
    if (alias.handler != nullptr || !alias.allow.empty()) return alias;
  }
  if (result.error && result.error->code == ErrorCode::kNotFound) {
    result.error->message = "Unknown route: " + printable(path);
  }
  return result;
}

}  // namespace ig::http
