#pragma once
// The real ServerApi: HTTP/1.1 over Beast, plain or TLS (the only translation unit of the agent
// that includes Beast and Asio's SSL). One connection per call; every step (connect, TLS
// handshake, write, read) has a deadline (the long poll's read is wait + 15 s), bodies are
// size-limited, downloads stream to disk in 16 KiB chunks and resume with Range.
//
// TLS (https:// URLs): proto/tls_client.hpp's policy: TLS >= 1.2, the chain verified against
// --ca-file or the system store, the certificate must name the URL's host (SNI sent for names),
// optional client certificate. A refused handshake fails the call as Unavailable with
// code "tls" and a one-line reason ("certificate verify failed: certificate has expired").
//
// Every header value and request target is checked before it is sent: a value holding a
// control character (CR/LF would inject headers) fails the call as InvalidArgument, code
// "header", and nothing is sent.
//
// Threading: use from the io_context's one thread; callbacks are posted there.

#include <memory>
#include <string>

#include "agent/net/server_api.hpp"
#include "proto/tls_client.hpp"
#include "proto/url.hpp"

namespace boost::asio {
class io_context;
}

namespace ringfence::agent::net {

using proto::ServerUrl;

// True when `s` may go into an HTTP header value: printable ASCII (and tab) only.
bool header_safe(std::string_view s) noexcept;

class BeastClient final : public ServerApi {
 public:
  // A client for `url`. For https:// URLs, `tls` names the trust anchors and client
  // certificate; InvalidArgument (one line, naming the file) when they cannot be loaded.
  static Expected<std::unique_ptr<BeastClient>> create(boost::asio::io_context& io, ServerUrl url,
                                                       const proto::TlsClientFiles& tls = {});
  // Plain http:// only (tests); an https:// url here uses the system store.
  BeastClient(boost::asio::io_context& io, ServerUrl url);
  ~BeastClient() override;
  BeastClient(const BeastClient&) = delete;
  BeastClient& operator=(const BeastClient&) = delete;

  void enroll(const proto::EnrollRequest& req, Callback<proto::EnrollResponse> cb) override;
  void desired(const std::string& credential, const std::string& etag, int wait_s,
               Callback<DesiredAnswer> cb) override;
  void heartbeat(const std::string& credential, const proto::Heartbeat& hb,
                 Callback<bool> cb) override;
  void reports(const std::string& credential, const std::vector<proto::Report>& batch,
               Callback<bool> cb) override;
  void download(const std::string& credential, const std::string& url, const std::string& path,
                const std::string& sha256, std::int64_t max_size,
                std::function<void(std::int64_t)> on_progress, Callback<DownloadDone> cb) override;
  void cancel_all() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringfence::agent::net
