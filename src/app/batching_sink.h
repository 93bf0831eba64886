#pragma once
// BatchingSink: an spdlog sink for hot-path logs (the access log). A log call formats and
// appends to an in-memory buffer under a mutex, nothing more: no thread wake-up and no system
// call per line. A writer thread wakes on its own every `period` and writes the whole batch with
// one write(2). At most `period` of lines is lost if the process is killed with SIGKILL.

#include <spdlog/details/null_mutex.h>
#include <spdlog/sinks/base_sink.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "core/thread_name.h"

namespace ig::app {

class BatchingSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit BatchingSink(int fd, std::chrono::milliseconds period = std::chrono::milliseconds(50))
      : fd_(fd), period_(period), writer_([this] { run(); }) {}
  ~BatchingSink() override {
    {
      std::lock_guard lock(stop_mu_);
      stopping_ = true;
    }
    stop_cv_.notify_one();
    writer_.join();
    write_out();
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    buffer_.append(formatted.data(), formatted.size());
  }
  void flush_() override {}

 private:
  void run() {
    name_this_thread("ig-log-writer");
    std::unique_lock lock(stop_mu_);
    while (!stopping_) {
      stop_cv_.wait_for(lock, period_);
      write_out();
    }
  }
  void write_out() {
    std::string batch;
    {
      std::lock_guard lock(mutex_);  // base_sink's mutex guards buffer_
      batch.swap(buffer_);
    }
    std::size_t off = 0;
    while (off < batch.size()) {
      ssize_t n = ::write(fd_, batch.data() + off, batch.size() - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
  }

  int fd_;
  std::chrono::milliseconds period_;
  std::string buffer_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread writer_;
};

}  // namespace ig::app
