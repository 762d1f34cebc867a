#pragma once
// The server's signing keys (DESIGN.md "Key roles"): files in the data dir, read at start and
// re-read when keyset.json changes. The root secret is never needed at run time.
//
//   DIR/signing.key, signing.pub  the first online key (API.md); until a key set exists it signs
//                                 both content manifests and desired states
//   DIR/root.pub                  the root public key the server checks key sets against
//   DIR/keyset.json               the current signed key set (proto/keyset.hpp wire form)
//   DIR/keys/<id>.key             further online keys (0600), made by `ringfence-server keys`
//
// Pure file functions and plain values; thread-compatible.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "proto/error.hpp"
#include "proto/keyset.hpp"
#include "proto/signing.hpp"

namespace ringfence::server::core {

struct ServerKeys {
  std::optional<proto::SignedKeySet> key_set;    // nullopt: none made yet (one key signs all)
  std::string key_set_json;                      // encode(*key_set), or empty
  std::optional<proto::PublicKey> root;          // DIR/root.pub
  std::map<std::string, proto::KeyPair> online;  // the secrets this server holds, by key id
  std::string content_id, desired_id;            // the keys it signs with now

  const proto::KeyPair& content() const { return online.at(content_id); }
  const proto::KeyPair& desired() const { return online.at(desired_id); }
  std::int64_t version() const { return key_set ? key_set->set.version : 0; }
};

// Reads the key files of data_dir around the already-loaded first key `signing`. With a
// keyset.json it must be signed by the root in root.pub (and by a new root it names), and the
// server must hold a secret for a trusted content key and a trusted desired key in it: the
// newest such (last listed) sign. An expired key set loads (agents will freeze; the log says
// so). Errors: InvalidArgument/Unavailable with one clear sentence; nothing is changed.
Expected<ServerKeys> load_server_keys(const std::string& data_dir, const proto::KeyPair& signing,
                                      std::int64_t now_s);

// A key file: the 64-byte libsodium secret key as base64 text (the public key is its tail).
Expected<proto::KeyPair> read_key_pair(const std::string& path);
// Writes path atomically (temp file, fsync, rename) with the given mode.
Status write_private_file(const std::string& path, const std::string& content, unsigned mode);
std::string key_pair_text(const proto::KeyPair& kp);

// (mtime ns, size) of a file, or (0, 0) when it does not exist: cheap change detection.
std::pair<std::int64_t, std::int64_t> file_stamp(const std::string& path);

}  // namespace ringfence::server::core
