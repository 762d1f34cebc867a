// agent_load: the benchmark's own agent-API client (plain Asio, one thread, hand-written HTTP/1.1).
//
//   agent_load prime    --port P --creds FILE --out TSV [--conns 64]
//       GETs /v1/agent/desired once for every credential (which also exposes the host to a
//       rollout in progress) and writes one line "<credential>\t<etag>" per host for wrk's
//       script (a data file, not Lua source: LuaJIT allows 65 536 constants per chunk).
//   agent_load longpoll --port P --creds FILE --hosts N --token ADMIN --abort PATH [--wait S]
//       Holds N long polls (one connection each: GET /v1/agent/desired?wait=S with the host's
//       current ETag), waits until the server reports them all parked (ringfence_long_polls),
//       then POSTs PATH (the rollout's abort) and records when each long poll is answered.
//       Prints one JSON line: answered counts and milliseconds from the abort to 50/99/100 %.
//
// Every phase has a deadline; the program exits non-zero when one passes or a request fails.
#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "agent_load: %s\n", what.c_str());
  std::exit(1);
}

struct Response {
  int status = 0;
  std::string etag;
  std::string body;
};

// One keep-alive connection; one request at a time.
class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(net::io_context& io, tcp::endpoint ep) : sock_(io), ep_(ep) {}

  void connect(std::function<void()> done) {
    sock_.async_connect(ep_, [self = shared_from_this(), done](boost::system::error_code ec) {
      if (ec) die("connect: " + ec.message());
      done();
    });
  }

  void request(std::string req, std::function<void(Response)> done) {
    out_ = std::move(req);
    done_ = std::move(done);
    net::async_write(sock_, net::buffer(out_), [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
      if (ec) die("write: " + ec.message());
      self->read_head();
    });
  }

 private:
  void read_head() {
    net::async_read_until(sock_, net::dynamic_buffer(in_), "\r\n\r\n",
                          [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                            if (ec) die("read: " + ec.message());
                            self->on_head(n);
                          });
  }

  static std::string header(const std::string& head, const std::string& lname) {
    std::string lower = head;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    auto at = lower.find("\r\n" + lname + ":");
    if (at == std::string::npos) return {};
    at += 3 + lname.size();
    auto end = head.find("\r\n", at);
    auto v = head.substr(at, end - at);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    return v;
  }

  void on_head(std::size_t n) {
    std::string head = in_.substr(0, n);
    in_.erase(0, n);
    Response r;
    if (head.size() < 12) die("short status line");
    r.status = std::atoi(head.c_str() + 9);
    r.etag = header(head, "etag");
    auto cl = header(head, "content-length");
    std::size_t len = cl.empty() ? 0 : static_cast<std::size_t>(std::atoll(cl.c_str()));
    if (in_.size() >= len) {
      r.body = in_.substr(0, len);
      in_.erase(0, len);
      finish(std::move(r));
      return;
    }
    resp_ = std::move(r);
    need_ = len;
    net::async_read(sock_, net::dynamic_buffer(in_), net::transfer_at_least(len - in_.size()),
                    [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                      if (ec) die("read body: " + ec.message());
                      self->resp_.body = self->in_.substr(0, self->need_);
                      self->in_.erase(0, self->need_);
                      self->finish(std::move(self->resp_));
                    });
  }

  void finish(Response r) {
    auto d = std::move(done_);
    d(std::move(r));
  }

  tcp::socket sock_;
  tcp::endpoint ep_;
  std::string out_, in_;
  Response resp_;
  std::size_t need_ = 0;
  std::function<void(Response)> done_;
};

std::string get_desired(const std::string& cred, const std::string& etag, int wait_s) {
  std::string r = "GET /v1/agent/desired";
  if (wait_s > 0) r += "?wait=" + std::to_string(wait_s);
  r += " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + cred + "\r\n";
  if (!etag.empty()) r += "If-None-Match: " + etag + "\r\n";
  return r + "\r\n";
}

std::vector<std::string> read_lines(const std::string& path, std::size_t max) {
  std::ifstream f(path);
  if (!f) die("cannot read " + path);
  std::vector<std::string> out;
  std::string line;
  while (out.size() < max && std::getline(f, line)) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// GETs the desired state of every credential over `conns` connections; etags[i] = the answer's.
void prime(net::io_context& io, tcp::endpoint ep, const std::vector<std::string>& creds,
           std::vector<std::string>& etags, int conns) {
  etags.assign(creds.size(), {});
  std::size_t next = 0, done = 0;
  std::function<void(std::shared_ptr<Conn>)> step = [&](std::shared_ptr<Conn> c) {
    if (next >= creds.size()) return;
    auto i = next++;
    c->request(get_desired(creds[i], "", 0), [&, c, i](Response r) {
      if (r.status != 200 || r.etag.empty()) die("prime: GET desired answered " + std::to_string(r.status));
      etags[i] = r.etag;
      ++done;
      step(c);
    });
  };
  for (int k = 0; k < conns; ++k) {
    auto c = std::make_shared<Conn>(io, ep);
    c->connect([&, c] { step(c); });
  }
  io.restart();
  io.run();
  if (done != creds.size()) die("prime: not every host answered");
}

double percentile_ms(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  auto k = static_cast<std::size_t>(std::max(0.0, std::ceil(p / 100.0 * static_cast<double>(v.size())) - 1));
  return v[std::min(k, v.size() - 1)];
}

std::int64_t metric(net::io_context& io, tcp::endpoint ep, const std::string& name) {
  std::int64_t value = -1;
  auto c = std::make_shared<Conn>(io, ep);
  c->connect([&, c] {
    c->request("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", [&](Response r) {
      auto at = r.body.find("\n" + name + " ");
      if (at != std::string::npos) value = std::atoll(r.body.c_str() + at + name.size() + 2);
    });
  });
  io.restart();
  io.run();
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) die("usage: agent_load prime|longpoll --port P --creds FILE ...");
  std::string mode = argv[1];
  std::map<std::string, std::string> flag;
  for (int a = 2; a + 1 < argc; a += 2) flag[argv[a]] = argv[a + 1];
  auto get = [&](const std::string& k, const std::string& def = {}) {
    auto it = flag.find(k);
    if (it == flag.end()) {
      if (def.empty()) die("missing " + k);
      return def;
    }
    return it->second;
  };
  net::io_context io;
  tcp::endpoint ep(net::ip::make_address("127.0.0.1"),
                   static_cast<unsigned short>(std::atoi(get("--port").c_str())));

  if (mode == "prime") {
    auto creds = read_lines(get("--creds"), SIZE_MAX);
    std::vector<std::string> etags;
    auto t0 = Clock::now();
    prime(io, ep, creds, etags, std::atoi(get("--conns", "64").c_str()));
    std::ofstream out(get("--out"));
    for (std::size_t i = 0; i < creds.size(); ++i) out << creds[i] << '\t' << etags[i] << '\n';
    std::printf("{\"primed\": %zu, \"seconds\": %.3f}\n", creds.size(),
                std::chrono::duration<double>(Clock::now() - t0).count());
    return 0;
  }
  if (mode != "longpoll") die("unknown mode " + mode);

  auto n = static_cast<std::size_t>(std::atoll(get("--hosts").c_str()));
  auto creds = read_lines(get("--creds"), n);
  if (creds.size() < n) die("fewer credentials than --hosts");
  int wait_s = std::atoi(get("--wait", "60").c_str());
  std::vector<std::string> etags;
  prime(io, ep, creds, etags, 64);

  // Park one long poll per host, each on its own connection.
  std::vector<std::shared_ptr<Conn>> conns(n);
  std::vector<double> answered_ms;
  answered_ms.reserve(n);
  std::size_t connected = 0, early = 0, bad = 0;
  Clock::time_point t_abort{};
  bool aborted = false;
  int abort_status = 0;
  for (std::size_t i = 0; i < n; ++i) {
    conns[i] = std::make_shared<Conn>(io, ep);
    conns[i]->connect([&, i] {
      ++connected;
      conns[i]->request(get_desired(creds[i], etags[i], wait_s), [&](Response r) {
        if (!aborted) ++early;
        else if (r.status != 200) ++bad;
        else answered_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t_abort).count());
        if (answered_ms.size() + bad + early == n && abort_status != 0) io.stop();
      });
    });
  }
  // Drive the connects and writes, then wait (bounded) until the server holds every poll.
  auto deadline = Clock::now() + std::chrono::seconds(std::min(wait_s - 5, 30));
  std::int64_t parked = 0;
  net::io_context side;
  while (Clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(100));
    if (connected < n) continue;
    parked = metric(side, ep, "ringfence_long_polls");
    if (parked >= static_cast<std::int64_t>(n)) break;
  }
  if (parked < static_cast<std::int64_t>(n)) die("only " + std::to_string(parked) + " long polls parked");

  // The halt: POST the abort on a side connection; the clock starts as it is written.
  auto admin = std::make_shared<Conn>(io, ep);
  admin->connect([&] {
    std::string body = "{\"reason\":\"bench: rollback propagation\"}";
    t_abort = Clock::now();
    aborted = true;
    admin->request("POST " + get("--abort") + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                       get("--token") + "\r\nContent-Type: application/json\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body,
                   [&](Response r) {
                     abort_status = r.status;
                     if (answered_ms.size() + bad + early == n) io.stop();
                   });
  });
  io.restart();
  io.run_for(std::chrono::seconds(20));
  if (abort_status != 200) die("abort answered " + std::to_string(abort_status));
  std::vector<double> sorted = answered_ms;
  std::printf("{\"hosts\": %zu, \"answered\": %zu, \"early\": %zu, \"bad\": %zu, "
              "\"p50_ms\": %.1f, \"p99_ms\": %.1f, \"p100_ms\": %.1f}\n",
              n, answered_ms.size(), early, bad, percentile_ms(sorted, 50), percentile_ms(sorted, 99),
              percentile_ms(sorted, 100));
  return (answered_ms.size() == n) ? 0 : 1;
}
