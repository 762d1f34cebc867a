// ringfence-server keys init|rotate|revoke|renew|rotate-root|show (see keys_command.hpp).
#include "server/keys_command.hpp"

#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "proto/keyset.hpp"
#include "server/core/keys.hpp"

namespace ringfence::server {
namespace {
namespace fs = std::filesystem;
using core::read_key_pair;
using core::write_private_file;

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct Refused {
  std::string why;
};

template <typename T>
T need(Expected<T> v, const std::string& what) {
  if (!v) throw Refused{what + ": " + v.error().message};
  return std::move(*v);
}
void need(Status st, const std::string& what) {
  if (!st) throw Refused{what + ": " + st.error().message};
}

// A key pair file, made (0600, with FILE.pub beside it) when `create` and it does not exist.
proto::KeyPair key_file(const std::string& path, bool create) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (!create) throw Refused{"no key file " + path};
    auto kp = proto::generate_keypair();
    need(write_private_file(path, core::key_pair_text(kp), 0600), "root key");
    need(write_private_file(path + ".pub", proto::encode_public_key(kp.public_key) + "\n", 0644),
         "root public key");
    std::printf("created key %s (id %s); public key in %s.pub\n", path.c_str(),
                proto::key_id(kp.public_key).c_str(), path.c_str());
    return kp;
  }
  return need(read_key_pair(path), "key file");
}

// DIR/signing.key, made as the server would on first start when missing.
proto::KeyPair signing_key(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  auto path = dir + "/signing.key";
  if (!fs::exists(path, ec)) {
    auto kp = proto::generate_keypair();
    need(write_private_file(path, core::key_pair_text(kp), 0600), "signing key");
    need(write_private_file(dir + "/signing.pub", proto::encode_public_key(kp.public_key) + "\n",
                            0644),
         "signing public key");
    return kp;
  }
  return need(read_key_pair(path), "signing key");
}

// The data dir's current key set, checked against root.pub and the root key given.
proto::SignedKeySet current_set(const std::string& dir, const proto::KeyPair& root) {
  auto text = read_all(dir + "/keyset.json");
  if (text.empty()) throw Refused{dir + "/keyset.json is missing: run `keys init` first"};
  auto set = need(proto::decode_key_set(text), dir + "/keyset.json");
  if (set.set.root != root.public_key) {
    throw Refused{"--root-key (id " + proto::key_id(root.public_key) +
                  ") is not the root of the current key set (id " + proto::key_id(set.set.root) +
                  ")"};
  }
  return set;
}

void write_set(const std::string& dir, const proto::SignedKeySet& s) {
  need(write_private_file(dir + "/keyset.json", proto::encode(s) + "\n", 0644), "keyset.json");
}

void print_set(const proto::KeySet& s) {
  std::printf("key set v%lld, expires %lld, root %s\n", static_cast<long long>(s.version),
              static_cast<long long>(s.expires), proto::key_id(s.root).c_str());
  for (const auto& k : s.keys) {
    std::printf("  key %s %-7s not_after %lld\n", k.id.c_str(),
                std::string(proto::to_string(k.role)).c_str(), static_cast<long long>(k.not_after));
  }
  for (const auto& r : s.revoked) std::printf("  revoked %s\n", r.c_str());
}

void add_both_roles(proto::KeySet& s, const proto::PublicKey& pk) {
  auto id = proto::key_id(pk);
  s.keys.push_back({id, pk, proto::KeyRole::Content, 0});
  s.keys.push_back({id, pk, proto::KeyRole::Desired, 0});
}
}  // namespace

int keys_command(int argc, char** argv) {
  CLI::App app{"ringfence-server keys: the root-signed key set (see README, keys ceremony)"};
  app.require_subcommand(1);
  std::string dir, root_path, new_root_path, revoke_id;
  int days = 365;
  auto common = [&](CLI::App* sub, bool root) {
    sub->add_option("--data-dir", dir, "the server's data directory")
        ->envname("RINGFENCE_DATA_DIR")
        ->required();
    if (root) {
      sub->add_option("--root-key", root_path, "root secret key file (kept offline)")->required();
      sub->add_option("--expires-days", days, "lifetime of the new key set")
          ->check(CLI::Range(1, 3650))
          ->capture_default_str();
    }
  };
  auto* init = app.add_subcommand(
      "init", "make the first key set (creates --root-key when missing) from signing.key");
  common(init, true);
  auto* rotate = app.add_subcommand(
      "rotate", "add a new online key (content + desired); the server signs with it at once");
  common(rotate, true);
  auto* revoke =
      app.add_subcommand("revoke", "revoke an online key (content it signed is refused)");
  common(revoke, true);
  revoke->add_option("--id", revoke_id, "key id to revoke")->required();
  auto* renew = app.add_subcommand("renew", "the same keys in a new key set with a new expiry");
  common(renew, true);
  auto* rotate_root =
      app.add_subcommand("rotate-root", "a key set signed by the old and the new root");
  common(rotate_root, true);
  rotate_root->add_option("--new-root-key", new_root_path, "new root key (created when missing)")
      ->required();
  auto* show = app.add_subcommand("show", "print the current key set");
  common(show, false);
  CLI11_PARSE(app, argc, argv);

  try {
    auto expires = now_s() + static_cast<std::int64_t>(days) * 86400;
    if (show->parsed()) {
      auto text = read_all(dir + "/keyset.json");
      if (text.empty()) throw Refused{"no key set in " + dir + " (one key signs everything)"};
      print_set(need(proto::decode_key_set(text), "keyset.json").set);
      return 0;
    }
    if (init->parsed()) {
      std::error_code ec;
      if (fs::exists(dir + "/keyset.json", ec)) {
        throw Refused{dir + "/keyset.json exists: use rotate, revoke or renew"};
      }
      auto root = key_file(root_path, true);
      auto signing = signing_key(dir);
      proto::KeySet s;
      s.version = 1;
      s.expires = expires;
      s.root = root.public_key;
      add_both_roles(s, signing.public_key);
      need(write_private_file(dir + "/root.pub", proto::encode_public_key(root.public_key) + "\n",
                              0644),
           "root.pub");
      write_set(dir, proto::sign_key_set(s, {root.secret_key}));
      print_set(s);
      std::printf("agents: --root-key %s.pub (or a copy of %s/root.pub)\n", root_path.c_str(),
                  dir.c_str());
      return 0;
    }
    auto root = key_file(root_path, false);
    auto cur = current_set(dir, root);
    proto::KeySet s = cur.set;
    s.version = cur.set.version + 1;
    s.expires = expires;
    std::vector<proto::SecretKey> signers = {root.secret_key};
    if (rotate->parsed()) {
      auto kp = proto::generate_keypair();
      std::error_code ec;
      fs::create_directories(dir + "/keys", ec);
      ::chmod((dir + "/keys").c_str(), 0700);
      auto id = proto::key_id(kp.public_key);
      need(write_private_file(dir + "/keys/" + id + ".key", core::key_pair_text(kp), 0600),
           "online key");
      add_both_roles(s, kp.public_key);
      std::printf("new online key %s\n", id.c_str());
    } else if (revoke->parsed()) {
      std::erase_if(s.keys, [&](const proto::KeyEntry& k) { return k.id == revoke_id; });
      if (s.keys.size() == cur.set.keys.size())
        throw Refused{"no key " + revoke_id + " in the set"};
      bool content = false, desired = false;
      for (const auto& k : s.keys) {
        content |= k.role == proto::KeyRole::Content;
        desired |= k.role == proto::KeyRole::Desired;
      }
      if (!content || !desired) {
        throw Refused{"revoking " + revoke_id + " leaves no content or desired key: rotate first"};
      }
      s.revoked.push_back(revoke_id);
    } else if (rotate_root->parsed()) {
      auto next = key_file(new_root_path, true);
      s.root = next.public_key;
      signers.push_back(next.secret_key);
    }
    auto signed_set = proto::sign_key_set(s, signers);
    if (rotate_root->parsed()) {
      // root.pub first: a server that reads the new set checks it against the new root.
      need(write_private_file(dir + "/root.pub", proto::encode_public_key(s.root) + "\n", 0644),
           "root.pub");
    }
    write_set(dir, signed_set);
    print_set(s);
    return 0;
  } catch (const Refused& r) {
    std::fprintf(stderr, "ringfence-server keys: %s\n", r.why.c_str());
    return 1;
  }
}

}  // namespace ringfence::server
