#pragma once
// JSON text rendering. Boost.JSON prints doubles as "4.7E0"; clients and humans expect "4.7",
// so replies are serialized here with the shortest round-trip form of every number.

#include <boost/json/value.hpp>
#include <string>

namespace ig {

std::string to_json_text(const boost::json::value& value);

}  // namespace ig
