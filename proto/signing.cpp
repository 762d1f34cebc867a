#include "proto/signing.hpp"

#include <sodium.h>

#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>

namespace ringfence::proto {
namespace {
void ensure_sodium() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) {
      std::fputs("fatal: libsodium failed to initialise\n", stderr);
      std::abort();
    }
  });
}
static_assert(sizeof(crypto_hash_sha256_state) <= 128);
}  // namespace

std::string canonical_bytes(const Manifest& m) {
  // nlohmann::json objects keep keys sorted, and dump() without indent writes no white space.
  nlohmann::json j = {{"channel", m.channel}, {"version", m.version}, {"sha256", m.sha256},
                      {"size", m.size},       {"created", m.created}, {"expires", m.expires}};
  if (m.rollback_from) j["rollback_from"] = *m.rollback_from;
  return j.dump();
}

KeyPair generate_keypair() {
  ensure_sodium();
  KeyPair kp;
  crypto_sign_keypair(kp.public_key.data(), kp.secret_key.data());
  return kp;
}

std::string base64_encode(std::string_view bytes) {
  ensure_sodium();
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // drop the terminating NUL
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  ensure_sodium();
  std::string out(text.size() / 4 * 3 + 3, '\0');
  size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

std::string sign(const SecretKey& sk, std::string_view bytes) {
  ensure_sodium();
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(bytes.data()),
                       bytes.size(), sk.data());
  return base64_encode(std::string_view(reinterpret_cast<const char*>(sig), sizeof sig));
}

bool verify(const PublicKey& pk, std::string_view bytes, std::string_view sig_b64) {
  if (sig_b64.size() > 128) return false;
  auto sig = base64_decode(sig_b64);
  if (!sig || sig->size() != crypto_sign_BYTES) return false;
  return crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                     reinterpret_cast<const unsigned char*>(bytes.data()),
                                     bytes.size(), pk.data()) == 0;
}

Expected<PublicKey> parse_public_key(std::string_view base64_text) {
  while (!base64_text.empty() &&
         (base64_text.back() == '\n' || base64_text.back() == '\r' || base64_text.back() == ' ')) {
    base64_text.remove_suffix(1);
  }
  auto raw = base64_decode(base64_text);
  if (!raw || raw->size() != crypto_sign_PUBLICKEYBYTES) {
    return fail(Errc::InvalidArgument, "public key is not 32 bytes of base64");
  }
  PublicKey pk;
  std::copy(raw->begin(), raw->end(), pk.begin());
  return pk;
}

Expected<SecretKey> parse_secret_key(std::string_view base64_text) {
  while (!base64_text.empty() &&
         (base64_text.back() == '\n' || base64_text.back() == '\r' || base64_text.back() == ' ')) {
    base64_text.remove_suffix(1);
  }
  auto raw = base64_decode(base64_text);
  if (!raw || raw->size() != crypto_sign_SECRETKEYBYTES) {
    return fail(Errc::InvalidArgument, "secret key is not 64 bytes of base64");
  }
  SecretKey sk;
  std::copy(raw->begin(), raw->end(), sk.begin());
  sodium_memzero(raw->data(), raw->size());
  return sk;
}

namespace {
std::string to_hex(const unsigned char* p, size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string out(n * 2, '\0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[p[i] >> 4];
    out[2 * i + 1] = kHex[p[i] & 15];
  }
  return out;
}
}  // namespace

std::string sha256_hex(std::string_view bytes) {
  Sha256 h;
  h.update(bytes);
  return h.final_hex();
}

std::array<std::uint8_t, 32> sha256_bytes(std::string_view bytes) {
  static_assert(crypto_hash_sha256_BYTES == 32);
  ensure_sodium();
  std::array<std::uint8_t, 32> out{};
  crypto_hash_sha256(out.data(), reinterpret_cast<const unsigned char*>(bytes.data()),
                     bytes.size());
  return out;
}

Sha256::Sha256() {
  ensure_sodium();
  crypto_hash_sha256_init(reinterpret_cast<crypto_hash_sha256_state*>(state_));
}

void Sha256::update(std::string_view bytes) {
  crypto_hash_sha256_update(reinterpret_cast<crypto_hash_sha256_state*>(state_),
                            reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

std::string Sha256::final_hex() {
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(reinterpret_cast<crypto_hash_sha256_state*>(state_), out);
  return to_hex(out, sizeof out);
}

std::string random_hex(std::size_t n) {
  ensure_sodium();
  std::string raw(n, '\0');
  randombytes_buf(raw.data(), n);
  return to_hex(reinterpret_cast<const unsigned char*>(raw.data()), n);
}

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  ensure_sodium();
  if (a.empty()) return true;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace ringfence::proto
