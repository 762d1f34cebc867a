#pragma once
// `ringfence-server keys ...`: the key ceremony on the data dir's files (server/core/keys.hpp).
// The root secret is read from --root-key only for the command's duration; the running server
// picks the new keyset.json up by itself within seconds (or at POST /v1/keys/reload).

namespace ringfence::server {

// argv[0] is "keys". Returns the process exit code (0 ok, 1 refused, 2 usage).
int keys_command(int argc, char** argv);

}  // namespace ringfence::server
