// Manifest verification as the agent does it (agent/content/verify.*): a desired-state answer
// from a hostile or broken server is decoded, and each channel entry is checked against the
// pinned key, the clock, the known-bad list and quarantine, the active version and the size
// limit; then a "downloaded" blob (the input's tail) is checked against the manifest.
//
// Input: 1 byte of mode, 8 bytes of clock, 8 of active version, 4 of size limit, then the
// desired-state JSON, then optionally "\n--\n" and the blob. Mode bit 0 re-signs each manifest
// with the harness's key so the checks after the signature are reached too (a fuzzer cannot
// forge Ed25519); bit 1 sets the blob's manifest sha256/size to the real ones.
// Properties: no crash; an entry with a signature the pinned key did not make is never accepted.
#include <sodium.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "agent/content/verify.hpp"
#include "proto/keyset.hpp"
#include "proto/messages.hpp"
#include "proto/signing.hpp"
#include "tests/fuzz/fuzz.hpp"

using namespace ringfence;

namespace {
struct Keys {
  proto::KeyPair trusted, other;
  proto::KeySet trusted_set, other_set;  // the implicit key sets of --public-key
  std::string blob_path;
  Keys() {
    if (sodium_init() < 0) std::abort();
    unsigned char seed[crypto_sign_SEEDBYTES] = {1};
    crypto_sign_seed_keypair(trusted.public_key.data(), trusted.secret_key.data(), seed);
    seed[0] = 2;
    crypto_sign_seed_keypair(other.public_key.data(), other.secret_key.data(), seed);
    trusted_set = proto::implicit_key_set(trusted.public_key);
    other_set = proto::implicit_key_set(other.public_key);
    blob_path = fuzz::scratch_dir() + "/ringfence-fuzz-blob-" + std::to_string(::getpid());
  }
  ~Keys() { ::unlink(blob_path.c_str()); }
};
Keys& keys() {
  static Keys k;
  return k;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& k = keys();
  fuzz::Bytes in(data, size);
  auto mode = in.take(1);
  auto now_s = static_cast<std::int64_t>(in.take(8));
  auto active = static_cast<std::int64_t>(in.take(8));
  auto max_size = static_cast<std::int64_t>(in.take(4));
  auto [body, blob] = fuzz::split(in.rest(), "\n--\n");

  auto desired = proto::decode_desired_state(body);
  if (!desired) return 0;
  agent::content::VersionSet known_bad, quarantined;
  for (const auto& kb : desired->known_bad) known_bad.insert({kb.channel, kb.version});
  if (!desired->channels.empty()) quarantined.insert({desired->channels.front().channel, active});

  bool blob_written = false;
  for (auto entry : desired->channels) {
    bool signed_by_us = mode & 1;
    if (signed_by_us) {
      entry.signature = proto::sign(k.trusted.secret_key, proto::canonical_bytes(entry.manifest));
    }
    agent::content::VerifyContext ctx;
    ctx.keys = &k.trusted_set;
    ctx.now_s = now_s;
    ctx.known_bad = &known_bad;
    ctx.quarantined = (mode & 4) ? &quarantined : nullptr;
    if (active != 0) ctx.active_version = active;
    ctx.max_size = max_size;
    auto verdict = agent::content::verify_entry(entry, ctx);
    if (verdict) {
      RF_FUZZ_CHECK(proto::verify(k.trusted.public_key, proto::canonical_bytes(entry.manifest),
                                  entry.signature));
    } else {
      RF_FUZZ_CHECK(!verdict.error().message.empty());
    }
    // The same entry under another key is refused whatever else holds.
    ctx.keys = &k.other_set;
    RF_FUZZ_CHECK(!agent::content::verify_entry(entry, ctx));

    if (!blob_written) {  // the same bytes for every entry: one write per input
      std::ofstream out(k.blob_path, std::ios::binary | std::ios::trunc);
      out.write(blob.data(), static_cast<std::streamsize>(blob.size()));
      blob_written = true;
    }
    proto::Manifest m = entry.manifest;
    if (mode & 2) {
      m.sha256 = proto::sha256_hex(blob);
      m.size = static_cast<std::int64_t>(blob.size());
      RF_FUZZ_CHECK(agent::content::verify_blob(k.blob_path, m).has_value());
    } else if (auto st = agent::content::verify_blob(k.blob_path, m); st) {
      RF_FUZZ_CHECK(m.sha256 == proto::sha256_hex(blob));
    }
  }
  return 0;
}
