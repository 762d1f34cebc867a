#pragma once
// A small blocking TLS client over OpenSSL's C API for the TLS tests (not Beast, not the
// server's code): pick the protocol versions, the CA, a client certificate; send one raw HTTP
// request and read until the server closes.

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ringfence::testing {

struct TlsClientOptions {
  std::string ca_file;                   // verify the server against it (and "localhost")
  std::string cert_file, key_file;       // client certificate, optional
  int min_version = 0, max_version = 0;  // TLS1_VERSION ... TLS1_3_VERSION; 0 = library default
  bool legacy = false;                   // SECLEVEL=0 so the client even offers TLS 1.0/1.1
};

struct TlsResult {
  bool connected = false;    // handshake completed (and verified when ca_file is set)
  std::string error;         // why not
  int version = 0;           // negotiated protocol version
  std::string alpn;          // negotiated ALPN protocol
  std::string peer_subject;  // the server certificate's subject (one line)
  std::string response;      // everything read after sending the request
};

// Connects to 127.0.0.1:port, handshakes (SNI and host check "localhost"), sends `request`
// (when not empty) and reads until close or a 5 s receive timeout.
TlsResult tls_exchange(int port, const TlsClientOptions& o, const std::string& request);

struct TlsSessionResult : TlsResult {
  std::vector<std::string> responses;  // one per request, each read to its Content-Length
  bool clean_close = false;  // after the last, the server sent close_notify before closing
};

// One connection, `requests` sent one after another (keep-alive; the last should say
// `Connection: close`); `before(i)` runs before request i is sent. After the last response it
// reads on until the server ends the connection, and says whether it did so cleanly.
TlsSessionResult tls_session(int port, const TlsClientOptions& o,
                             const std::vector<std::string>& requests,
                             const std::function<void(std::size_t)>& before = {});

// The HTTP status of a raw response ("HTTP/1.1 403 ..." -> 403), or 0.
int status_of(const std::string& response);

}  // namespace ringfence::testing
