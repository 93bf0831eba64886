#pragma once
// name_this_thread: gives the calling thread a name that top -H, perf and /proc/<pid>/task/*/comm
// show (Linux keeps 15 bytes; longer names are cut). Best effort: a failure changes nothing.

#include <pthread.h>

#include <string>

namespace ig {

inline void name_this_thread(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace ig
