#include "tests/tls/tls_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
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

TlsResult tls_exchange(int port, const TlsClientOptions& o, const std::string& request) {
  TlsResult r;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        SSL_CTX_free);
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
      return r;
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
    return r;
  }
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  SSL_set_fd(ssl.get(), fd);
  SSL_set_tlsext_host_name(ssl.get(), "localhost");
  SSL_set1_host(ssl.get(), "localhost");
  if (SSL_connect(ssl.get()) != 1) {
    r.error = "handshake: " + last_error();
    ::close(fd);
    return r;
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
  ::close(fd);
  return r;
}

int status_of(const std::string& response) {
  if (response.size() < 12 || response.compare(0, 5, "HTTP/") != 0) return 0;
  return std::atoi(response.c_str() + 9);
}

}  // namespace ringfence::testing
