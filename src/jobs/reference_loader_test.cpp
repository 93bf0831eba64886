#include "jobs/reference_loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/base64.h"
#include "media/local_renderer.h"
#include "net/fake_http_client.h"

namespace ig::jobs {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using net::FakeHttpClient;
using net::NetErrc;
using net::NetError;
using providers::InputImage;

// A real encoded image from the local renderer.
std::string rendered(int w, int h, media::OutputFormat format) {
  media::RenderSpec spec;
  spec.width = w;
  spec.height = h;
  spec.prompt = "reference";
  spec.model = "local-test";
  spec.job_id = "job_reference_test";
  spec.format = format;
  auto image = media::render_image(spec);
  EXPECT_TRUE(image) << image.error().message;
  return image ? image->bytes : std::string();
}

// Just a PNG signature and IHDR: enough for the header probe, which is all the loader reads.
std::string png_header(std::uint32_t w, std::uint32_t h) {
  std::string b("\x89PNG\r\n\x1a\n", 8);
  b += std::string("\0\0\0\x0d", 4) + "IHDR";
  for (std::uint32_t v : {w, h}) {
    for (int shift = 24; shift >= 0; shift -= 8) b += static_cast<char>((v >> shift) & 0xff);
  }
  b += std::string("\x08\x02\x00\x00\x00", 5) + std::string(4, '\0');
  return b;
}

ImageSource source(ImageSource::Kind kind, std::string value, std::string field) {
  ImageSource s;
  s.kind = kind;
  s.value = std::move(value);
  s.field = std::move(field);
  return s;
}
ImageSource url(std::string value, std::string field = "image_urls") {
  return source(ImageSource::Kind::kUrl, std::move(value), std::move(field));
}

template <class T>
T run(asio::io_context& ioc, asio::awaitable<T> task) {
  auto future = asio::co_spawn(ioc, std::move(task), asio::use_future);
  ioc.restart();
  ioc.run();
  return future.get();
}

void expect_error(const Result<InputImage>& r, std::string_view field, std::string_view fragment) {
  ASSERT_FALSE(r.has_value()) << "loaded a " << r->mime;
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest);
  EXPECT_EQ(http_status(r.error().code), 400);
  EXPECT_EQ(r.error().param, std::optional<std::string>(field));
  EXPECT_NE(r.error().message.find(fragment), std::string::npos) << r.error().message;
}

class ReferenceLoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(media::init_media());
    png_ = new std::string(rendered(40, 24, media::OutputFormat::kPng));
    jpeg_ = new std::string(rendered(33, 17, media::OutputFormat::kJpeg));
    webp_ = new std::string(rendered(20, 30, media::OutputFormat::kWebp));
  }
  static void TearDownTestSuite() {
    delete png_;
    delete jpeg_;
    delete webp_;
  }

  ReferenceLoader loader(ReferenceLoaderSettings settings = {}) {
    return ReferenceLoader(fake_, std::move(settings));
  }
  Result<InputImage> load(const ImageSource& s, ReferenceLoaderSettings settings = {}) {
    ReferenceLoader l = loader(std::move(settings));
    return run(ioc_, l.load(s));
  }

  static inline std::string* png_ = nullptr;
  static inline std::string* jpeg_ = nullptr;
  static inline std::string* webp_ = nullptr;
  asio::io_context ioc_;
  FakeHttpClient fake_;
};

// --- happy paths -------------------------------------------------------------------------------

TEST_F(ReferenceLoaderTest, FetchesPngJpegAndWebpFromUrls) {
  fake_.add_response("https://img.example/a.png", 200, *png_, {{"Content-Type", "image/png"}});
  fake_.add_response("http://img.example/b", 200, *jpeg_);  // no content type: bytes decide
  fake_.add_response("https://img.example/c.webp", 200, *webp_,
                     {{"Content-Type", "application/octet-stream"}});
  auto png = load(url("https://img.example/a.png"));
  ASSERT_TRUE(png) << png.error().message;
  EXPECT_EQ(png->mime, "image/png");
  EXPECT_EQ(png->width, 40);
  EXPECT_EQ(png->height, 24);
  EXPECT_TRUE(png->bytes == *png_);

  auto jpeg = load(url("http://img.example/b"));
  ASSERT_TRUE(jpeg) << jpeg.error().message;
  EXPECT_EQ(jpeg->mime, "image/jpeg");
  EXPECT_EQ(jpeg->width, 33);
  EXPECT_EQ(jpeg->height, 17);

  auto webp = load(url("https://img.example/c.webp"));
  ASSERT_TRUE(webp) << webp.error().message;
  EXPECT_EQ(webp->mime, "image/webp");
  EXPECT_EQ(webp->width, 20);
  EXPECT_EQ(webp->height, 30);
}

TEST_F(ReferenceLoaderTest, RequestCarriesTheSettings) {
  fake_.add_response("https://img.example/a.png", 200, *png_);
  ReferenceLoaderSettings settings;
  settings.max_image_bytes = 123'456;
  settings.connect_timeout_ms = 1'111;
  settings.total_timeout_ms = 2'222;
  settings.max_redirects = 2;
  settings.address_policy.allow_loopback = true;
  ASSERT_TRUE(load(url("https://img.example/a.png"), settings));
  auto request = fake_.last_request();
  ASSERT_TRUE(request);
  EXPECT_EQ(request->method, "GET");
  EXPECT_EQ(request->url, "https://img.example/a.png");
  EXPECT_EQ(request->max_response_bytes, 123'456u);
  EXPECT_EQ(request->connect_timeout_ms, 1'111);
  EXPECT_EQ(request->total_timeout_ms, 2'222);
  EXPECT_EQ(request->max_redirects, 2);
  ASSERT_TRUE(request->address_policy);
  EXPECT_EQ(*request->address_policy, settings.address_policy);
  EXPECT_TRUE(request->body.empty());
  EXPECT_TRUE(request->mime.empty());
}

TEST_F(ReferenceLoaderTest, DefaultSettingsRefuseNonPublicAddresses) {
  fake_.add_response("https://img.example/a.png", 200, *png_);
  ReferenceLoaderSettings defaults;
  EXPECT_EQ(defaults.max_image_bytes, 20u << 20);
  EXPECT_EQ(defaults.connect_timeout_ms, 5'000);
  EXPECT_EQ(defaults.total_timeout_ms, 30'000);
  EXPECT_EQ(defaults.max_redirects, 3);
  ASSERT_TRUE(load(url("https://img.example/a.png")));
  auto request = fake_.last_request();
  ASSERT_TRUE(request && request->address_policy);
  EXPECT_FALSE(request->address_policy->allow_loopback);
  EXPECT_FALSE(request->address_policy->allow_private);
  EXPECT_FALSE(request->address_policy->allow_link_local);
}

TEST_F(ReferenceLoaderTest, LoadsDataUrlsBase64AndUploads) {
  const std::string b64 = base64_encode(*webp_);
  for (const std::string& value :
       {"data:image/webp;base64," + b64, "data:;base64," + b64, "DATA:image/png;BASE64," + b64,
        "data:image/webp;name=x.webp;base64," + b64}) {
    auto image = load(source(ImageSource::Kind::kDataUrl, value, "images"));
    ASSERT_TRUE(image) << value.substr(0, 40) << ": " << image.error().message;
    EXPECT_EQ(image->mime, "image/webp");  // the declared type is ignored
    EXPECT_TRUE(image->bytes == *webp_);
  }
  // MIME-style line wrapping and missing padding are tolerated.
  std::string wrapped;
  for (std::size_t i = 0; i < b64.size(); i += 76) wrapped += b64.substr(i, 76) + "\r\n";
  auto image = load(source(ImageSource::Kind::kBase64, wrapped, "image_base64"));
  ASSERT_TRUE(image) << image.error().message;
  EXPECT_EQ(image->width, 20);

  std::string unpadded = base64_encode(*png_);
  while (unpadded.back() == '=') unpadded.pop_back();
  auto png = load(source(ImageSource::Kind::kBase64, unpadded, "image_base64"));
  ASSERT_TRUE(png) << png.error().message;
  EXPECT_EQ(png->mime, "image/png");

  // A data: URL filed as base64 (e.g. built by hand) is still read as a data: URL.
  auto filed = load(source(ImageSource::Kind::kBase64, "data:image/webp;base64," + b64, "image"));
  ASSERT_TRUE(filed) << filed.error().message;
  EXPECT_EQ(filed->mime, "image/webp");

  ImageSource upload = source(ImageSource::Kind::kUpload, *jpeg_, "image");
  upload.filename = "photo.png";  // wrong on purpose: the bytes decide
  upload.content_type = "image/png";
  auto jpeg = load(upload);
  ASSERT_TRUE(jpeg) << jpeg.error().message;
  EXPECT_EQ(jpeg->mime, "image/jpeg");
  EXPECT_EQ(jpeg->width, 33);
  EXPECT_EQ(fake_.request_count(), 0u);  // nothing but URLs touches the network
}

// --- URL failures ------------------------------------------------------------------------------

TEST_F(ReferenceLoaderTest, OnlyHttpAndHttpsAreFetched) {
  for (const char* bad :
       {"ftp://img.example/a.png", "file:///etc/passwd", "gopher://x/", "javascript://alert(1)"}) {
    // The parser files anything it does not recognise as base64; the loader still sees a URL.
    expect_error(load(source(ImageSource::Kind::kBase64, bad, "image_urls")), "image_urls",
                 "must be an http or https URL");
    expect_error(load(url(bad)), "image_urls", "must be an http or https URL");
  }
  expect_error(load(url("https://")), "image_urls", "not a valid URL");
  expect_error(load(url("https://img example/a b.png")), "image_urls", "not a valid URL");
  expect_error(load(url("not a url")), "image_urls", "not a valid URL");
  EXPECT_EQ(fake_.request_count(), 0u);

  // An upper-case scheme is still http.
  fake_.add_response("HTTPS://img.example/a.png", 200, *png_);
  auto image = load(source(ImageSource::Kind::kBase64, "HTTPS://img.example/a.png", "image_url"));
  ASSERT_TRUE(image) << image.error().message;
}

TEST_F(ReferenceLoaderTest, BlockedAddressIsRefused) {
  fake_.add_response(
      "http://127.0.0.1/a.png",
      std::unexpected(NetError{NetErrc::kBlockedAddress, "127.0.0.1 is loopback", true}));
  auto r = load(url("http://127.0.0.1/a.png"));
  expect_error(r, "image_urls", "refused to fetch image_urls: address not allowed");
  EXPECT_EQ(r.error().message.find("loopback"), std::string::npos);  // no transport details
}

TEST_F(ReferenceLoaderTest, TransportFailuresAreClientErrorsNamingTheField) {
  const std::pair<NetErrc, const char*> cases[] = {
      {NetErrc::kConnect, "could not fetch image_url: could not connect to the host"},
      {NetErrc::kTimeout, "could not fetch image_url: timed out"},
      {NetErrc::kReset, "could not fetch image_url: the connection was closed"},
      {NetErrc::kTls, "could not fetch image_url: TLS handshake failed"},
      {NetErrc::kTooManyRedirects, "could not fetch image_url: more than 3 redirects"},
      {NetErrc::kBadUrl, "could not fetch image_url: the URL is not a valid"},
      {NetErrc::kOther, "could not fetch image_url: the request failed"},
  };
  int n = 0;
  for (const auto& [code, message] : cases) {
    const std::string u = "https://img.example/x" + std::to_string(n++);
    fake_.add_response(u, std::unexpected(NetError{code, "curl: secret 10.0.0.7 detail", false}));
    auto r = load(url(u, "image_url"));
    expect_error(r, "image_url", message);
    EXPECT_EQ(r.error().message.find("10.0.0.7"), std::string::npos);
  }
}

TEST_F(ReferenceLoaderTest, NonSuccessStatusIsAClientError) {
  for (int status : {404, 500, 302, 101}) {
    const std::string u = "https://img.example/" + std::to_string(status);
    fake_.add_response(u, status, *png_);
    expect_error(load(url(u)), "image_urls",
                 "could not fetch image_urls: the server returned HTTP " + std::to_string(status));
  }
  fake_.add_response("https://img.example/204", 204, "");
  expect_error(load(url("https://img.example/204")), "image_urls", "is not a PNG, JPEG or WebP");
}

TEST_F(ReferenceLoaderTest, DownloadAboveTheCapIsRefused) {
  ReferenceLoaderSettings settings;
  settings.max_image_bytes = png_->size() - 1;
  fake_.add_response("https://img.example/a.png", 200, *png_);
  expect_error(load(url("https://img.example/a.png"), settings), "image_urls",
               "image_urls is larger than " + std::to_string(png_->size() - 1) + " bytes");
  settings.max_image_bytes = png_->size();
  EXPECT_TRUE(load(url("https://img.example/a.png"), settings));
}

// --- content checks ----------------------------------------------------------------------------

TEST_F(ReferenceLoaderTest, BytesThatAreNotAnImageAreRefused) {
  ImageSource text = source(ImageSource::Kind::kUpload, "hello, I am a text file\n", "image");
  text.filename = "x.png";
  text.content_type = "image/png";
  expect_error(load(text), "image", "image is not a PNG, JPEG or WebP image");

  fake_.add_response("https://img.example/page.png", 200, "<html>not found</html>",
                     {{"Content-Type", "image/png"}});
  expect_error(load(url("https://img.example/page.png")), "image_urls",
               "image_urls is not a PNG, JPEG or WebP image");

  const std::string gif = "GIF89a" + std::string(20, '\x01');
  expect_error(load(source(ImageSource::Kind::kBase64, base64_encode(gif), "image_base64")),
               "image_base64", "is not a PNG, JPEG or WebP image");
  expect_error(load(source(ImageSource::Kind::kUpload, "", "mask")), "mask",
               "mask is not a PNG, JPEG or WebP image");
  // Right magic, broken header.
  expect_error(load(source(ImageSource::Kind::kUpload, png_->substr(0, 12), "image")), "image",
               "image: truncated PNG header");
}

TEST_F(ReferenceLoaderTest, DimensionsAreCheckedFromTheHeader) {
  expect_error(load(source(ImageSource::Kind::kUpload, png_header(100'000, 100'000), "image")),
               "image", "100000x100000");
  ReferenceLoaderSettings settings;
  settings.probe_limits.max_width = 39;
  expect_error(load(source(ImageSource::Kind::kUpload, *png_, "mask"), settings), "mask", "40x24");
  // The header alone passes: nothing is decoded here.
  auto header_only = load(source(ImageSource::Kind::kUpload, png_header(3000, 2000), "image"));
  ASSERT_TRUE(header_only) << header_only.error().message;
  EXPECT_EQ(header_only->width, 3000);
  EXPECT_EQ(header_only->height, 2000);
}

// --- data URLs and base64 ----------------------------------------------------------------------

TEST_F(ReferenceLoaderTest, DataUrlMustBeBase64AndWellFormed) {
  expect_error(load(source(ImageSource::Kind::kDataUrl, "data:image/png,%89PNG", "images")),
               "images", "must be a base64 data: URL");
  expect_error(load(source(ImageSource::Kind::kDataUrl, "data:image/png;base64", "images")),
               "images", "not a valid data: URL");
  expect_error(load(source(ImageSource::Kind::kDataUrl, "data:text/plain;base64x,QQ==", "images")),
               "images", "must be a base64 data: URL");
  expect_error(
      load(source(ImageSource::Kind::kDataUrl, "data:image/png;base64,iVBOR*w0", "images")),
      "images", "images: invalid base64: unexpected character '*' at offset 5");
  expect_error(load(source(ImageSource::Kind::kDataUrl, "data:image/png;base64,", "images")),
               "images", "not a PNG, JPEG or WebP image");
}

TEST_F(ReferenceLoaderTest, Base64MustBeValid) {
  expect_error(load(source(ImageSource::Kind::kBase64, "iVBORw0KGgo=AAAA", "image_base64")),
               "image_base64", "image_base64: invalid base64");
  expect_error(load(source(ImageSource::Kind::kBase64, "iVBORw0K-_", "image_base64")),
               "image_base64", "invalid base64: unexpected character '-'");
  // A URL field holding neither a URL nor base64 says what it expected.
  expect_error(load(source(ImageSource::Kind::kBase64, "127.0.0.1/a.png", "image_urls")),
               "image_urls", "is not an http(s) URL, a data: URL or base64 image bytes");
}

TEST_F(ReferenceLoaderTest, SizeCapAppliesToEveryKind) {
  ReferenceLoaderSettings settings;
  settings.max_image_bytes = 1000;
  const std::string big = png_header(10, 10) + std::string(1001 - png_header(10, 10).size(), 'x');
  const std::string fits = big.substr(0, 1000);
  const std::string cap = "larger than 1000 bytes";

  expect_error(load(source(ImageSource::Kind::kUpload, big, "image"), settings), "image", cap);
  EXPECT_TRUE(load(source(ImageSource::Kind::kUpload, fits, "image"), settings));

  expect_error(
      load(source(ImageSource::Kind::kBase64, base64_encode(big), "image_base64"), settings),
      "image_base64", cap);
  EXPECT_TRUE(
      load(source(ImageSource::Kind::kBase64, base64_encode(fits), "image_base64"), settings));

  expect_error(load(source(ImageSource::Kind::kDataUrl,
                           "data:image/png;base64," + base64_encode(big), "images"),
                    settings),
               "images", cap);

  // A huge text is refused by its length alone, before any decoding (even if it is garbage).
  const std::string huge(50'000, '!');
  expect_error(load(source(ImageSource::Kind::kBase64, huge, "image_base64"), settings),
               "image_base64", cap);
  expect_error(load(source(ImageSource::Kind::kDataUrl, "data:image/png;base64," + huge, "images"),
                    settings),
               "images", cap);
}

// --- load_all ----------------------------------------------------------------------------------

TEST_F(ReferenceLoaderTest, LoadAllKeepsOrderAcrossKinds) {
  fake_.add_response("https://img.example/0.png", 200, png_header(100, 1));
  fake_.add_response("https://img.example/3.png", 200, png_header(103, 1));
  std::vector<ImageSource> sources = {
      url("https://img.example/0.png"),
      source(ImageSource::Kind::kDataUrl,
             "data:image/png;base64," + base64_encode(png_header(101, 1)), "image_urls"),
      source(ImageSource::Kind::kUpload, png_header(102, 1), "image"),
      url("https://img.example/3.png"),
      source(ImageSource::Kind::kBase64, base64_encode(*jpeg_), "image_base64"),
  };
  ReferenceLoader l = loader();
  auto images = run(ioc_, l.load_all(sources));
  ASSERT_TRUE(images) << images.error().message;
  ASSERT_EQ(images->size(), 5u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ((*images)[i].width, 100 + i);
  EXPECT_EQ((*images)[4].mime, "image/jpeg");

  std::vector<ImageSource> none;
  auto empty = run(ioc_, l.load_all(none));
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());

  std::vector<ImageSource> one = {source(ImageSource::Kind::kUpload, *webp_, "image")};
  auto single = run(ioc_, l.load_all(one));
  ASSERT_TRUE(single) << single.error().message;
  ASSERT_EQ(single->size(), 1u);
  EXPECT_EQ((*single)[0].mime, "image/webp");
}

TEST_F(ReferenceLoaderTest, LoadAllIndexesRepeatedFieldsInMessages) {
  fake_.add_response("https://img.example/ok.png", 200, *png_);
  fake_.add_response("https://img.example/missing.png", 404, "");
  std::vector<ImageSource> sources = {url("https://img.example/ok.png"),
                                      url("https://img.example/missing.png"),
                                      source(ImageSource::Kind::kUpload, *png_, "mask")};
  ReferenceLoader l = loader();
  auto r = run(ioc_, l.load_all(sources));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest);
  EXPECT_EQ(r.error().param, std::optional<std::string>("image_urls"));
  EXPECT_NE(r.error().message.find("could not fetch image_urls[1]: the server returned HTTP 404"),
            std::string::npos)
      << r.error().message;

  // Multipart "image[]" parts read as image[0], image[1], ...
  std::vector<ImageSource> parts = {source(ImageSource::Kind::kUpload, *png_, "image[]"),
                                    source(ImageSource::Kind::kUpload, "nope", "image[]")};
  auto p = run(ioc_, l.load_all(parts));
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().param, std::optional<std::string>("image[]"));
  EXPECT_NE(p.error().message.find("image[1] is not a PNG"), std::string::npos)
      << p.error().message;
}

// An HttpClient that answers after a per-URL delay on a timer (so sends really overlap), counts
// how many are in flight, and honours cancellation like CurlHttpClient (kAborted).
class SlowHttpClient final : public net::HttpClient {
 public:
  void add(std::string u, std::chrono::milliseconds delay, int status, std::string body) {
    std::lock_guard lock(mutex_);
    script_[std::move(u)] = Entry{delay, status, std::move(body)};
  }
  int max_in_flight() const { return max_in_flight_; }
  int cancelled() const { return cancelled_; }
  std::vector<std::string> started() const {
    std::lock_guard lock(mutex_);
    return started_;
  }

  asio::awaitable<net::NetResult<net::HttpResponse>> send(net::HttpRequest request) override {
    Entry entry;
    {
      std::lock_guard lock(mutex_);
      started_.push_back(request.url);
      entry = script_.at(request.url);
    }
    const int now = ++in_flight_;
    int seen = max_in_flight_.load();
    while (now > seen && !max_in_flight_.compare_exchange_weak(seen, now)) {
    }
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(entry.delay);
    boost::system::error_code ec;
    auto token = asio::redirect_error(asio::use_awaitable, ec);
    co_await timer.async_wait(token);
    --in_flight_;
    if (ec) {
      ++cancelled_;
      co_return std::unexpected(NetError{NetErrc::kAborted, "cancelled by the caller", false});
    }
    net::HttpResponse response;
    response.status = entry.status;
    response.body = entry.body;
    co_return response;
  }

 private:
  struct Entry {
    std::chrono::milliseconds delay{0};
    int status = 200;
    std::string body;
  };
  mutable std::mutex mutex_;
  std::map<std::string, Entry> script_;
  std::vector<std::string> started_;
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};
  std::atomic<int> cancelled_{0};
};

TEST_F(ReferenceLoaderTest, LoadAllRunsBoundedConcurrencyAndPreservesOrder) {
  SlowHttpClient slow;
  std::vector<ImageSource> sources;
  for (int i = 0; i < 10; ++i) {
    const std::string u = "https://img.example/" + std::to_string(i) + ".png";
    // Later entries finish first, so completion order is the reverse of the request order.
    slow.add(u, std::chrono::milliseconds(10 + 8 * (10 - i)), 200, png_header(200 + i, 1));
    sources.push_back(url(u));
  }
  ReferenceLoaderSettings settings;
  settings.max_parallel = 4;
  ReferenceLoader l(slow, settings);
  auto start = std::chrono::steady_clock::now();
  auto images = run(ioc_, l.load_all(sources));
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(images) << images.error().message;
  ASSERT_EQ(images->size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ((*images)[i].width, 200 + i) << i;
  EXPECT_EQ(slow.max_in_flight(), 4);
  EXPECT_EQ(slow.cancelled(), 0);
  // Serially this would take ~0.54 s; four at a time takes well under that.
  EXPECT_LT(elapsed, 450ms);
}

TEST_F(ReferenceLoaderTest, LoadAllStopsAndCancelsOnTheFirstFailure) {
  SlowHttpClient slow;
  std::vector<ImageSource> sources;
  slow.add("https://img.example/slow.png", 10s, 200, png_header(1, 1));
  sources.push_back(url("https://img.example/slow.png"));
  slow.add("https://img.example/gone.png", 5ms, 410, "");
  sources.push_back(url("https://img.example/gone.png"));
  for (int i = 0; i < 6; ++i) {
    const std::string u = "https://img.example/later" + std::to_string(i) + ".png";
    slow.add(u, 10s, 200, png_header(1, 1));
    sources.push_back(url(u));
  }
  ReferenceLoaderSettings settings;
  settings.max_parallel = 2;
  ReferenceLoader l(slow, settings);
  auto start = std::chrono::steady_clock::now();
  auto r = run(ioc_, l.load_all(sources));
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("image_urls[1]: the server returned HTTP 410"),
            std::string::npos)
      << r.error().message;
  EXPECT_LT(elapsed, 2s);          // the 10 s download was cancelled, not awaited
  EXPECT_EQ(slow.cancelled(), 1);  // ... and it was the only other one started
  EXPECT_EQ(slow.started().size(), 2u);
}

TEST_F(ReferenceLoaderTest, LoadAllFailsFastOnLocalErrorsToo) {
  SlowHttpClient slow;
  slow.add("https://img.example/slow.png", 10s, 200, png_header(1, 1));
  std::vector<ImageSource> sources = {url("https://img.example/slow.png"),
                                      source(ImageSource::Kind::kBase64, "@@@", "image_base64")};
  ReferenceLoader l(slow, {});
  auto start = std::chrono::steady_clock::now();
  auto r = run(ioc_, l.load_all(sources));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, std::optional<std::string>("image_base64"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_EQ(slow.cancelled(), 1);
}

TEST_F(ReferenceLoaderTest, LoadAllWorksOnAMultiThreadedExecutor) {
  SlowHttpClient slow;
  std::vector<ImageSource> sources;
  for (int i = 0; i < 16; ++i) {
    const std::string u = "https://img.example/m" + std::to_string(i) + ".png";
    slow.add(u, std::chrono::milliseconds(1 + (i * 7) % 5), 200, png_header(300 + i, 2));
    sources.push_back(url(u));
  }
  ReferenceLoader l(slow, {});
  asio::io_context ioc(4);
  for (int round = 0; round < 20; ++round) {
    auto future = asio::co_spawn(ioc, l.load_all(sources), asio::use_future);
    ioc.restart();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) threads.emplace_back([&ioc] { ioc.run(); });
    for (auto& t : threads) t.join();
    auto images = future.get();
    ASSERT_TRUE(images) << images.error().message;
    ASSERT_EQ(images->size(), 16u);
    for (int i = 0; i < 16; ++i) ASSERT_EQ((*images)[i].width, 300 + i);
  }
}

TEST_F(ReferenceLoaderTest, LoadAllFailuresOnAMultiThreadedExecutorAreValues) {
  // Failures at every position, mixing suspending fetches and immediate local errors, on four
  // threads: the first failure comes back as a value and nothing escapes as an exception.
  SlowHttpClient slow;
  asio::io_context ioc(4);
  for (int round = 0; round < 40; ++round) {
    std::vector<ImageSource> sources;
    const int bad = round % 9;
    for (int i = 0; i < 9; ++i) {
      const std::string u =
          "https://img.example/r" + std::to_string(round) + "-" + std::to_string(i) + ".png";
      if (i == bad && round % 2 == 0) {
        sources.push_back(source(ImageSource::Kind::kUpload, "not an image", "image"));
        continue;
      }
      const bool fails = i == bad;
      slow.add(u, std::chrono::milliseconds(fails ? 1 : 1 + (i * 5 + round) % 7), fails ? 404 : 200,
               png_header(10, 10));
      sources.push_back(url(u));
    }
    ReferenceLoaderSettings settings;
    settings.max_parallel = 1 + round % 5;
    ReferenceLoader l(slow, settings);
    auto future = asio::co_spawn(ioc, l.load_all(sources), asio::use_future);
    ioc.restart();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) threads.emplace_back([&ioc] { ioc.run(); });
    for (auto& t : threads) t.join();
    auto r = future.get();
    ASSERT_FALSE(r) << "round " << round;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest);
    if (round % 2 == 0) {
      EXPECT_EQ(r.error().message, "image is not a PNG, JPEG or WebP image");
    } else {
      EXPECT_NE(r.error().message.find("image_urls[" + std::to_string(bad) + "]"),
                std::string::npos)
          << r.error().message;
    }
  }
}

TEST_F(ReferenceLoaderTest, CallerCancellationLeavesNothingRunning) {
  SlowHttpClient slow;
  std::vector<ImageSource> sources;
  for (int i = 0; i < 3; ++i) {
    const std::string u = "https://img.example/c" + std::to_string(i) + ".png";
    slow.add(u, 30ms, 200, png_header(400 + i, 1));
    sources.push_back(url(u));
  }
  ReferenceLoader l(slow, {});
  for (auto delay : {0ms, 10ms}) {
    asio::cancellation_signal cancel;
    auto future = asio::co_spawn(ioc_, l.load_all(sources),
                                 asio::bind_cancellation_slot(cancel.slot(), asio::use_future));
    asio::steady_timer timer(ioc_, delay);
    timer.async_wait(
        [&cancel](boost::system::error_code) { cancel.emit(asio::cancellation_type::terminal); });
    ioc_.restart();
    ioc_.run();  // returns only when nothing is left running: no worker outlives load_all
    try {
      auto images = future.get();  // the loads in flight were not cut short
      ASSERT_TRUE(images) << images.error().message;
      EXPECT_EQ(images->size(), 3u);
    } catch (const boost::system::system_error& e) {  // cancelled before it started anything
      EXPECT_EQ(e.code(), asio::error::operation_aborted);
    }
  }
}

}  // namespace
}  // namespace ig::jobs
