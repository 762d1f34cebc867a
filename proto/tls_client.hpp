#pragma once
// TLS for every client (agent, CLI, fleetsim): one place that turns the --ca-file /
// --client-cert / --client-key flags into an OpenSSL client context, and that sets up each
// connection's server-name indication and host-name (or IP) verification. OpenSSL types are
// only forward-declared here; the Beast translation unit of each program owns the streams.
//
// Policy: TLS 1.2 or newer only; the server's certificate chain must verify against --ca-file,
// or the system store when no file is given; the certificate must name the host of the URL
// (DNS name, or the IP address for an IP literal; no partial wildcards). Thread-safe: the
// functions keep no state.

#include <string>

#include "proto/error.hpp"
#include "proto/url.hpp"

struct ssl_ctx_st;  // SSL_CTX
struct ssl_st;      // SSL

namespace ringfence::proto {

struct TlsClientFiles {
  std::string ca_file;      // PEM CA bundle; empty: the system's default store
  std::string client_cert;  // PEM certificate chain for mTLS; empty: none
  std::string client_key;   // PEM private key of client_cert

  // InvalidArgument when only one of client_cert / client_key is given.
  Status check() const;
};

// Configures a client SSL_CTX: minimum TLS 1.2, peer verification required, trust anchors,
// the client certificate and key (checked to match). InvalidArgument with a one-line message
// naming the file when something cannot be loaded.
Status configure_client_context(ssl_ctx_st* ctx, const TlsClientFiles& files);

// Prepares one connection to `url`: SNI for DNS names, and verification of the certificate
// against the host (DNS name or IP). InvalidArgument if OpenSSL refuses the host.
Status prepare_client_connection(ssl_st* ssl, const ServerUrl& url);

// A one-line reason for a failed handshake, from the verification result when the certificate
// was refused ("certificate verify failed: certificate has expired"), else `transport_message`.
std::string describe_handshake_failure(ssl_st* ssl, const std::string& transport_message);

}  // namespace ringfence::proto
