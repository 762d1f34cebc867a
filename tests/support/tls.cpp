#include "tests/support/tls.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "tests/support/process.hpp"

namespace ringfence::testing {
namespace {
using namespace std::chrono_literals;

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  return static_cast<bool>(out);
}

std::string join_sans(const std::vector<std::string>& sans) {
  std::string out;
  for (const auto& s : sans) out += (out.empty() ? "" : ",") + s;
  return out;
}

bool accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

int run_command(const std::vector<std::string>& argv, std::string* output) {
  char tmpl[] = "/tmp/rf-cmd-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd >= 0) ::close(fd);
  std::string err_path = tmpl;
  // Process::start takes a path: look a bare program name up on PATH.
  auto resolved = argv;
  if (!resolved.empty() && resolved[0].find('/') == std::string::npos) {
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "/usr/bin:/bin");
    for (std::string d; std::getline(dirs, d, ':');) {
      if (::access((d + "/" + resolved[0]).c_str(), X_OK) == 0) {
        resolved[0] = d + "/" + resolved[0];
        break;
      }
    }
  }
  auto p = Process::start(resolved, {}, err_path);
  auto st = p.wait(60s);
  p.drain();
  if (output) *output += p.output() + read_file(err_path);
  ::unlink(err_path.c_str());
  return st && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
}

Pki::Pki(const std::string& dir, const std::string& name) : dir_(dir + "/" + name) {
  ::mkdir(dir_.c_str(), 0700);
  write_file(dir_ + "/index.txt", "");
  write_file(dir_ + "/serial", "1000\n");
  write_file(dir_ + "/ca.cnf",
             "[ca]\ndefault_ca = CA_default\n"
             "[CA_default]\ndatabase = " +
                 dir_ + "/index.txt\nnew_certs_dir = " + dir_ + "\nserial = " + dir_ +
                 "/serial\ndefault_md = sha256\npolicy = any\n"
                 "unique_subject = no\ncopy_extensions = none\n"
                 "[any]\ncommonName = supplied\n");
  std::string out;
  int rc = run_command({"openssl",
                        "req",
                        "-x509",
                        "-newkey",
                        "ec",
                        "-pkeyopt",
                        "ec_paramgen_curve:prime256v1",
                        "-nodes",
                        "-keyout",
                        dir_ + "/ca.key",
                        "-out",
                        dir_ + "/ca.pem",
                        "-days",
                        "3",
                        "-subj",
                        "/CN=" + name + " CA",
                        "-addext",
                        "basicConstraints=critical,CA:TRUE",
                        "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign"},
                       &out);
  ok_ = rc == 0;
  if (!ok_) error_ = "openssl req (CA) failed: " + out;
}

std::optional<Pki::Leaf> Pki::issue(const std::string& name, const std::vector<std::string>& sans,
                                    bool client, const std::string& not_before,
                                    const std::string& not_after) {
  Leaf leaf{dir_ + "/" + name + ".pem", dir_ + "/" + name + ".key",
            dir_ + "/" + name + "-combined.pem"};
  std::string csr = dir_ + "/" + name + ".csr", ext = dir_ + "/" + name + ".ext";
  write_file(ext,
             "[leaf]\nbasicConstraints = critical,CA:FALSE\n"
             "keyUsage = critical,digitalSignature\nextendedKeyUsage = " +
                 std::string(client ? "clientAuth" : "serverAuth") + "\n" +
                 (sans.empty() ? "" : "subjectAltName = " + join_sans(sans) + "\n"));
  std::string out;
  if (run_command(
          {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", leaf.key, "-out", csr, "-subj", "/CN=" + name},
          &out) != 0) {
    error_ = "openssl req failed: " + out;
    return std::nullopt;
  }
  std::vector<std::string> argv = {"openssl",        "ca",       "-batch",  "-config",
                                   dir_ + "/ca.cnf", "-cert",    ca_file(), "-keyfile",
                                   dir_ + "/ca.key", "-in",      csr,       "-out",
                                   leaf.cert,        "-extfile", ext,       "-extensions",
                                   "leaf",           "-notext"};
  if (!not_before.empty()) {
    argv.insert(argv.end(), {"-startdate", not_before, "-enddate", not_after});
  } else {
    argv.insert(argv.end(), {"-days", "2"});
  }
  if (run_command(argv, &out) != 0) {
    error_ = "openssl ca failed: " + out;
    return std::nullopt;
  }
  write_file(leaf.combined, read_file(leaf.cert) + read_file(leaf.key));
  return leaf;
}

std::optional<Pki::Leaf> Pki::self_signed(const std::string& name,
                                          const std::vector<std::string>& sans) {
  Leaf leaf{dir_ + "/" + name + ".pem", dir_ + "/" + name + ".key",
            dir_ + "/" + name + "-combined.pem"};
  std::string out;
  if (run_command(
          {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", leaf.key, "-out", leaf.cert, "-days", "2", "-subj", "/CN=" + name,
           "-addext", "subjectAltName=" + join_sans(sans)},
          &out) != 0) {
    error_ = "openssl req -x509 failed: " + out;
    return std::nullopt;
  }
  write_file(leaf.combined, read_file(leaf.cert) + read_file(leaf.key));
  return leaf;
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

Haproxy::Haproxy(const std::string& dir, const Options& o) {
  // free_port() can race another test taking the same port: then haproxy exits at once and
  // the next free port is tried.
  for (int attempt = 0; attempt < 5 && !ok_; ++attempt) {
    if (proc_.running()) {
      proc_.signal(SIGKILL);
      proc_.wait(10s);
    }
    port_ = free_port();
    std::string bind = "  bind 127.0.0.1:" + std::to_string(port_) + " ssl crt " + o.crt;
    if (!o.client_ca.empty()) bind += " ca-file " + o.client_ca + " verify required";
    if (o.tls10_only) {
      bind += " ssl-min-ver TLSv1.0 ssl-max-ver TLSv1.0 ciphers DEFAULT:@SECLEVEL=0";
    } else {
      bind += " ssl-min-ver TLSv1.2";
    }
    std::string base = dir + "/haproxy-" + std::to_string(port_);
    write_file(base + ".cfg",
               "global\n  maxconn 256\n"
               "defaults\n  mode http\n  timeout connect 5s\n  timeout client 120s\n"
               "  timeout server 120s\n"
               "frontend tls\n" +
                   bind + "\n  default_backend ringfence\n" +
                   "backend ringfence\n  server s1 127.0.0.1:" + std::to_string(o.backend_port) +
                   "\n");
    // TLS 1.0 needs an OpenSSL configuration without Debian's system-wide MinProtocol.
    std::map<std::string, std::string> env;
    if (o.tls10_only) {
      std::string conf = dir + "/openssl-legacy.cnf";
      write_file(conf, "# empty: OpenSSL's built-in defaults\n");
      env["OPENSSL_CONF"] = conf;
    }
    proc_ = Process::start({"/usr/sbin/haproxy", "-db", "-f", base + ".cfg"}, env, base + ".log");
    ok_ = eventually([&] { return !proc_.running() || accepts(port_); }, 20s) && proc_.running();
    if (!ok_) error_ = "haproxy did not start: " + read_file(base + ".log");
  }
}

Haproxy::~Haproxy() {
  if (proc_.running()) {
    proc_.signal(SIGTERM);
    proc_.wait(10s);
  }
}

std::string Haproxy::https_url(const std::string& host) const {
  return "https://" + host + ":" + std::to_string(port_);
}

}  // namespace ringfence::testing
