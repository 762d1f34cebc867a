#include "tests/tls/tls_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>

namespace ringfence::testing {
namespace {
std::string last_error() {
  char buf[256] = "";
  unsigned long e = ERR_get_error();
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}
}  // namespace

using CtxPtr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;
using SslPtr = std::unique_ptr<SSL, decltype(&SSL_free)>;

// Connects and handshakes; fills r's connection fields. On failure ssl is null and r.error set.
// The socket is owned by the SSL (BIO_CLOSE).
SslPtr open_tls(int port, const TlsClientOptions& o, CtxPtr& ctx, TlsResult& r);

TlsResult tls_exchange(int port, const TlsClientOptions& o, const std::string& request) {
  TlsResult r;
  CtxPtr ctx(nullptr, SSL_CTX_free);
  auto ssl = open_tls(port, o, ctx, r);
  if (!ssl) return r;
  if (!request.empty()) {
    SSL_write(ssl.get(), request.data(), static_cast<int>(request.size()));
    char buf[16384];
    while (true) {
      int n = SSL_read(ssl.get(), buf, sizeof buf);
      if (n <= 0) break;
      r.response.append(buf, static_cast<std::size_t>(n));
    }
  }
  SSL_shutdown(ssl.get());
  return r;
}

TlsSessionResult tls_session(int port, const TlsClientOptions& o,
                             const std::vector<std::string>& requests,
                             const std::function<void(std::size_t)>& before) {
  TlsSessionResult r;
  CtxPtr ctx(nullptr, SSL_CTX_free);
  auto ssl = open_tls(port, o, ctx, r);
  if (!ssl) return r;
  std::string pending;  // bytes read past the previous response
  char buf[16384];
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (before) before(i);
    if (SSL_write(ssl.get(), requests[i].data(), static_cast<int>(requests[i].size())) <= 0) {
      r.error = "write of request " + std::to_string(i) + ": " + last_error();
      return r;
    }
    std::size_t need = std::string::npos;  // the whole response's size, once the head is in
    while (need == std::string::npos || pending.size() < need) {
      if (need == std::string::npos) {
        auto end = pending.find("\r\n\r\n");
        if (end != std::string::npos) {
          std::size_t length = 0;
          auto cl = pending.find("Content-Length: ");
          if (cl == std::string::npos) cl = pending.find("content-length: ");
          if (cl != std::string::npos && cl < end)
            length = std::strtoul(pending.c_str() + cl + 16, nullptr, 10);
          need = end + 4 + length;
          continue;
        }
      }
      int n = SSL_read(ssl.get(), buf, sizeof buf);
      if (n <= 0) {
        r.error = "connection ended during response " + std::to_string(i);
        return r;
      }
      pending.append(buf, static_cast<std::size_t>(n));
    }
    r.responses.push_back(pending.substr(0, need));
    pending.erase(0, need);
  }
  while (true) {
    int n = SSL_read(ssl.get(), buf, sizeof buf);
    if (n > 0) continue;
    r.clean_close = SSL_get_error(ssl.get(), n) == SSL_ERROR_ZERO_RETURN;
    break;
  }
  SSL_shutdown(ssl.get());
  return r;
}

SslPtr open_tls(int port, const TlsClientOptions& o, CtxPtr& ctx, TlsResult& r) {
  ctx.reset(SSL_CTX_new(TLS_client_method()));
  if (o.legacy) SSL_CTX_set_cipher_list(ctx.get(), "DEFAULT:@SECLEVEL=0");
  if (o.min_version) SSL_CTX_set_min_proto_version(ctx.get(), o.min_version);
  if (o.max_version) SSL_CTX_set_max_proto_version(ctx.get(), o.max_version);
  if (!o.ca_file.empty()) {
    SSL_CTX_load_verify_locations(ctx.get(), o.ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  }
  if (!o.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), o.cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx.get(), o.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      r.error = "client cert: " + last_error();
      return SslPtr(nullptr, SSL_free);
    }
  }
  static const unsigned char kAlpn[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(ctx.get(), kAlpn, sizeof kAlpn);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    r.error = "connect failed";
    return SslPtr(nullptr, SSL_free);
  }
  SslPtr ssl(SSL_new(ctx.get()), SSL_free);
  BIO* bio = BIO_new_socket(fd, BIO_CLOSE);
  SSL_set_bio(ssl.get(), bio, bio);
  SSL_set_tlsext_host_name(ssl.get(), "localhost");
  SSL_set1_host(ssl.get(), "localhost");
  if (SSL_connect(ssl.get()) != 1) {
    r.error = "handshake: " + last_error();
    return SslPtr(nullptr, SSL_free);
  }
  r.connected = true;
  r.version = SSL_version(ssl.get());
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl.get(), &alpn, &alpn_len);
  r.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
  if (X509* peer = SSL_get1_peer_certificate(ssl.get())) {
    char line[512];
    X509_NAME_oneline(X509_get_subject_name(peer), line, sizeof line);
    r.peer_subject = line;
    X509_free(peer);
  }
  return ssl;
}

int status_of(const std::string& response) {
  if (response.size() < 12 || response.compare(0, 5, "HTTP/") != 0) return 0;
  return std::atoi(response.c_str() + 9);
}

}  // namespace ringfence::testing
