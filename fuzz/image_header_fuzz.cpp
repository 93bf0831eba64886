// Fuzzes image type sniffing and header-only size probing: untrusted bytes from every upload,
// data: URL and fetched reference image, read before any decoder runs.
#include <cstdint>
#include <string_view>

#include "media/image_probe.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto sniffed = ig::media::sniff_image_type(bytes);
  auto info = ig::media::probe_image(bytes);
  if (info) {
    if (info->type == ig::media::ImageType::kUnsupported || info->type != sniffed) __builtin_trap();
    if (info->width < 1 || info->height < 1) __builtin_trap();
    (void)ig::media::check_dimensions(*info);
    (void)ig::media::mime_type(info->type);
  } else {
    if (info.error().code != ig::ErrorCode::kInvalidRequest || info.error().param) __builtin_trap();
    if (info.error().message.empty()) __builtin_trap();
  }
  return 0;
}
