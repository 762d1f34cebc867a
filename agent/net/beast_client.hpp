#pragma once
// The real ServerApi: HTTP/1.1 over Beast (the only translation unit of the agent that
// includes Beast). One connection per call; every read and write has a deadline (the long
// poll's is wait + 15 s), bodies are size-limited, downloads stream to disk in 16 KiB chunks
// and resume with Range. http:// only for now; https:// is refused at start.
//
// Threading: use from the io_context's one thread; callbacks are posted there.

#include <memory>
#include <string>

#include "agent/net/server_api.hpp"

namespace boost::asio {
class io_context;
}

namespace ringfence::agent::net {

struct ServerUrl {
  std::string host;
  std::string port;
  std::string prefix;  // path prefix without trailing '/', usually empty
};
// Parses http://host[:port][/prefix]. InvalidArgument for anything else (https included).
Expected<ServerUrl> parse_server_url(const std::string& url);

class BeastClient final : public ServerApi {
 public:
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
