#pragma once
// Real TLS for integration tests: certificates made with the `openssl` command in a temp dir
// (a throwaway CA and whatever leaf certificates a test needs, good or deliberately bad), and
// `haproxy` terminating TLS in front of a plain ringfence-server on free loopback ports. Nothing
// is mocked: the client under test speaks to a real OpenSSL endpoint.

#include <optional>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace ringfence::testing {

// Runs argv (no shell) to completion; returns the exit status (-1 if it did not exit) and
// appends its stdout and stderr to *output when given.
int run_command(const std::vector<std::string>& argv, std::string* output = nullptr);

// A certificate authority and its leaves, all PEM files under dir.
class Pki {
 public:
  // Creates a CA ("<name> CA") under dir/<name>/. Check ok() before use.
  Pki(const std::string& dir, const std::string& name);
  bool ok() const noexcept { return ok_; }
  const std::string& error() const noexcept { return error_; }
  std::string ca_file() const { return dir_ + "/ca.pem"; }

  struct Leaf {
    std::string cert;      // PEM certificate
    std::string key;       // PEM private key
    std::string combined;  // cert + key in one file (haproxy's crt)
  };
  // A leaf signed by this CA with the given subjectAltName entries ("DNS:localhost",
  // "IP:127.0.0.1"), valid from not_before to not_after (openssl ca's YYYYMMDDHHMMSSZ; empty:
  // from an hour ago for two days). client: extendedKeyUsage clientAuth instead of serverAuth.
  std::optional<Leaf> issue(const std::string& name, const std::vector<std::string>& sans,
                            bool client = false, const std::string& not_before = "",
                            const std::string& not_after = "");
  // A self-signed server certificate with the given SANs (signed by no CA).
  std::optional<Leaf> self_signed(const std::string& name, const std::vector<std::string>& sans);

 private:
  std::string dir_;
  bool ok_ = false;
  std::string error_;
};

// A free TCP port on 127.0.0.1 (bound, read back, released; a small race other tests accept).
int free_port();

// haproxy terminating TLS on 127.0.0.1:port() and forwarding plain HTTP to a backend.
class Haproxy {
 public:
  struct Options {
    std::string crt;          // combined cert+key PEM the endpoint presents
    int backend_port = 0;     // plain HTTP backend on 127.0.0.1
    std::string client_ca;    // non-empty: require a client certificate from this CA
    bool tls10_only = false;  // speak TLS 1.0 and nothing else (SECLEVEL=0)
  };
  // Starts haproxy in the foreground (-db) and waits until it accepts; check ok().
  Haproxy(const std::string& dir, const Options& o);
  ~Haproxy();
  Haproxy(const Haproxy&) = delete;
  Haproxy& operator=(const Haproxy&) = delete;
  bool ok() const noexcept { return ok_; }
  const std::string& error() const noexcept { return error_; }
  int port() const noexcept { return port_; }
  std::string https_url(const std::string& host = "127.0.0.1") const;

 private:
  Process proc_;
  int port_ = 0;
  bool ok_ = false;
  std::string error_;
};

}  // namespace ringfence::testing
