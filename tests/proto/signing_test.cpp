#include "proto/signing.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace ringfence::proto {
namespace {

Manifest sample_manifest() {
  Manifest m;
  m.channel = "detections";
  m.version = 42;
  m.sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  m.size = 1234;
  m.created = 1721362140;
  m.expires = 1721966940;
  return m;
}

TEST(Signing, CanonicalBytesAreExact) {
  EXPECT_EQ(canonical_bytes(sample_manifest()),
            R"({"channel":"detections","created":1721362140,"expires":1721966940,)"
            R"("sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",)"
            R"("size":1234,"version":42})");
  Manifest m;
  m.channel = "c";
  m.version = 4;
  m.sha256 = "..";
  m.size = 3;
  m.created = 1;
  m.expires = 2;
  EXPECT_EQ(canonical_bytes(m),
            R"({"channel":"c","created":1,"expires":2,"sha256":"..","size":3,"version":4})");
  m.rollback_from = 9;  // a downgrade authorisation: signed like every other field
  EXPECT_EQ(canonical_bytes(m), R"({"channel":"c","created":1,"expires":2,"rollback_from":9,)"
                                R"("sha256":"..","size":3,"version":4})");
}

TEST(Signing, SignVerifyRoundTrip) {
  auto kp = generate_keypair();
  std::string bytes = canonical_bytes(sample_manifest());
  std::string sig = sign(kp.secret_key, bytes);
  EXPECT_EQ(sig.size(), 88u);  // 64 bytes in padded base64
  EXPECT_TRUE(verify(kp.public_key, bytes, sig));
  EXPECT_EQ(sign(kp.secret_key, bytes), sig);  // Ed25519 is deterministic
  EXPECT_TRUE(verify(kp.public_key, "", sign(kp.secret_key, "")));
}

TEST(Signing, TamperedBytesAreRefused) {
  auto kp = generate_keypair();
  Manifest m = sample_manifest();
  std::string sig = sign(kp.secret_key, canonical_bytes(m));
  m.version = 43;
  EXPECT_FALSE(verify(kp.public_key, canonical_bytes(m), sig));
  std::string bytes = canonical_bytes(sample_manifest());
  bytes.back() = ' ';
  EXPECT_FALSE(verify(kp.public_key, bytes, sig));
  EXPECT_FALSE(verify(kp.public_key, canonical_bytes(sample_manifest()) + " ", sig));
}

TEST(Signing, TamperedSignatureIsRefused) {
  auto kp = generate_keypair();
  std::string bytes = canonical_bytes(sample_manifest());
  std::string sig = sign(kp.secret_key, bytes);
  auto raw = base64_decode(sig);
  ASSERT_TRUE(raw);
  for (std::size_t i : {std::size_t{0}, std::size_t{31}, std::size_t{63}}) {
    std::string bad = *raw;
    bad[i] = static_cast<char>(bad[i] ^ 1);
    EXPECT_FALSE(verify(kp.public_key, bytes, base64_encode(bad))) << i;
  }
  EXPECT_FALSE(verify(kp.public_key, bytes, ""));
  EXPECT_FALSE(verify(kp.public_key, bytes, "not base64!"));
  EXPECT_FALSE(verify(kp.public_key, bytes, base64_encode(raw->substr(0, 63))));
  EXPECT_FALSE(verify(kp.public_key, bytes, base64_encode(*raw + "x")));
  EXPECT_FALSE(verify(kp.public_key, bytes, std::string(10000, 'A')));
}

TEST(Signing, WrongKeyIsRefused) {
  auto signer = generate_keypair();
  auto other = generate_keypair();
  std::string bytes = canonical_bytes(sample_manifest());
  EXPECT_FALSE(verify(other.public_key, bytes, sign(signer.secret_key, bytes)));
  PublicKey zero{};
  EXPECT_FALSE(verify(zero, bytes, sign(signer.secret_key, bytes)));
}

TEST(Signing, Base64Vectors) {  // RFC 4648 section 10
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_decode("Zm9vYmFy"), "foobar");
  EXPECT_EQ(base64_decode("Zg=="), "f");
  EXPECT_EQ(base64_decode(""), "");
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  EXPECT_EQ(base64_decode(base64_encode(all)), all);
}

TEST(Signing, Base64InvalidInputIsRefused) {
  for (const char* bad :
       {"Zg", "Zg=", "Z===", "Zm9v!", "Zm9v\n", " Zm9v", "Zm-_", "Zm9vYmFy=", "====", "Zg==Zg=="}) {
    EXPECT_FALSE(base64_decode(bad)) << bad;
  }
}

TEST(Signing, KeyParsing) {
  auto kp = generate_keypair();
  std::string pub(reinterpret_cast<const char*>(kp.public_key.data()), kp.public_key.size());
  auto parsed = parse_public_key(base64_encode(pub) + "\n");  // key files end with a newline
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, kp.public_key);
  std::string sec(reinterpret_cast<const char*>(kp.secret_key.data()), kp.secret_key.size());
  auto sk = parse_secret_key(base64_encode(sec));
  ASSERT_TRUE(sk);
  EXPECT_EQ(*sk, kp.secret_key);

  EXPECT_FALSE(parse_public_key(""));
  EXPECT_FALSE(parse_public_key(base64_encode(pub.substr(1))));
  EXPECT_FALSE(parse_public_key(base64_encode(sec)));
  EXPECT_FALSE(parse_public_key("not a key"));
  EXPECT_EQ(parse_public_key("x").error().errc, Errc::InvalidArgument);
  EXPECT_FALSE(parse_secret_key(base64_encode(pub)));
}

TEST(Signing, Sha256) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.update("a");
  h.update("");
  h.update("bc");
  EXPECT_EQ(h.final_hex(), sha256_hex("abc"));
  auto raw = sha256_bytes("abc");
  EXPECT_EQ(raw[0], 0xba);
  EXPECT_EQ(raw[31], 0xad);
  std::string hex;
  for (auto b : raw) {
    const char* d = "0123456789abcdef";
    hex += d[b >> 4];
    hex += d[b & 15];
  }
  EXPECT_EQ(hex, sha256_hex("abc"));
}

TEST(Signing, RandomHexAndConstantTimeEqual) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string r = random_hex(16);
    ASSERT_EQ(r.size(), 32u);
    EXPECT_EQ(r.find_first_not_of("0123456789abcdef"), std::string::npos);
    seen.insert(r);
  }
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_EQ(random_hex(0), "");
  EXPECT_TRUE(constant_time_equal("token", "token"));
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_FALSE(constant_time_equal("token", "tokem"));
  EXPECT_FALSE(constant_time_equal("token", "token2"));
  EXPECT_FALSE(constant_time_equal("", "x"));
}

}  // namespace
}  // namespace ringfence::proto
