#include "proto/tls_client.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <unistd.h>

namespace ringfence::proto {
namespace {

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

tl::unexpected<Error> bad_file(const char* flag, const std::string& path, const std::string& why) {
  return fail(Errc::InvalidArgument, std::string(flag) + " " + path + ": " + why);
}

}  // namespace

Status TlsClientFiles::check() const {
  if (client_cert.empty() != client_key.empty()) {
    return fail(Errc::InvalidArgument, "--client-cert and --client-key go together");
  }
  return {};
}

Status configure_client_context(ssl_ctx_st* ctx, const TlsClientFiles& files) {
  if (auto st = files.check(); !st) return st;
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
    return fail(Errc::Internal, "cannot set the minimum TLS version: " + openssl_error());
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  // An idle long poll holds no 16 KiB read/write buffers (the agent's footprint, FOOTPRINT.md).
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (!files.ca_file.empty()) {
    if (::access(files.ca_file.c_str(), R_OK) != 0) {
      return bad_file("--ca-file", files.ca_file, "cannot be read");
    }
    if (SSL_CTX_load_verify_locations(ctx, files.ca_file.c_str(), nullptr) != 1) {
      return bad_file("--ca-file", files.ca_file,
                      "no PEM certificates in it (" + openssl_error() + ")");
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    return fail(Errc::InvalidArgument,
                "cannot load the system's CA store (" + openssl_error() + "); use --ca-file");
  }
  if (!files.client_cert.empty()) {
    if (::access(files.client_cert.c_str(), R_OK) != 0) {
      return bad_file("--client-cert", files.client_cert, "cannot be read");
    }
    if (::access(files.client_key.c_str(), R_OK) != 0) {
      return bad_file("--client-key", files.client_key, "cannot be read");
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, files.client_cert.c_str()) != 1) {
      return bad_file("--client-cert", files.client_cert,
                      "not a PEM certificate (" + openssl_error() + ")");
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, files.client_key.c_str(), SSL_FILETYPE_PEM) != 1) {
      return bad_file("--client-key", files.client_key,
                      "not a PEM private key (" + openssl_error() + ")");
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return bad_file("--client-key", files.client_key, "does not match --client-cert");
    }
  }
  return {};
}

Status prepare_client_connection(ssl_st* ssl, const ServerUrl& url) {
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (url.host_is_ip()) {
    // RFC 6066: no SNI for IP literals; the certificate must carry the address as an IP SAN.
    if (X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str()) != 1) {
      return fail(Errc::InvalidArgument, "cannot verify against IP " + url.host);
    }
    return {};
  }
  if (SSL_set_tlsext_host_name(ssl, url.host.c_str()) != 1) {
    return fail(Errc::InvalidArgument, "cannot send SNI for " + url.host + ": " + openssl_error());
  }
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set1_host(ssl, url.host.c_str()) != 1) {
    return fail(Errc::InvalidArgument, "cannot verify against host " + url.host);
  }
  return {};
}

std::string describe_handshake_failure(ssl_st* ssl, const std::string& transport_message) {
  long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (v != X509_V_OK) {
    return std::string("certificate verify failed: ") + X509_verify_cert_error_string(v);
  }
  // The peer wanted an older protocol than this client speaks: say which floor refused it.
  if (transport_message.find("protocol version") != std::string::npos ||
      transport_message.find("unsupported protocol") != std::string::npos) {
    return transport_message + " (the server offers no TLS 1.2 or newer)";
  }
  return transport_message;
}

}  // namespace ringfence::proto
