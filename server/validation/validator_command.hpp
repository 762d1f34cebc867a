#pragma once
// A channel's external validator command: the real consumer's parser, run on a release's blob
// before any host sees it. The command is an argv vector run directly with posix_spawn — never
// through a shell — in its own process group, with stdin from /dev/null, stdout and stderr
// captured together up to kMaxOutputBytes, a minimal fixed environment, the working directory
// "/", and a timeout after which the whole process group gets SIGKILL. Whatever the command
// leaves running in its group when it exits is killed too; output is read for at most 0.5 s after
// the exit (a daemon that escaped the group and holds the pipe is not waited for).
//
// Threading: run_validator() blocks the calling thread until the command ends or times out; call
// it from a worker, never from an io thread. It is safe to call from several threads at once.
// It reaps only its own child (waitpid on that pid), so the process must not set SIGCHLD to
// SIG_IGN and no other thread may reap with waitpid(-1).

#include <chrono>
#include <cstddef>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "proto/error.hpp"

namespace ringfence::server::validation {

inline constexpr std::size_t kMaxOutputBytes = 64 * 1024;
inline constexpr std::chrono::milliseconds kDefaultTimeout{10'000};
inline constexpr std::chrono::milliseconds kMaxTimeout{300'000};
inline constexpr std::size_t kMaxArgs = 64;
inline constexpr std::size_t kMaxArgBytes = 4096;
// The token replaced by the blob's path in any argument; without one the path is appended.
inline constexpr std::string_view kFileToken = "{file}";
// The token replaced by a consumer version when a channel names its consumer: the command is run
// once per version in the field (server/core/content.cpp). Not allowed in argv[0].
inline constexpr std::string_view kConsumerVersionToken = "{consumer_version}";

// A validated command as configured on a channel (see parse_command()).
struct ValidatorCommand {
  std::vector<std::string> argv;  // argv[0] is an absolute path
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

struct CommandResult {
  bool passed = false;     // exited on its own with status 0 (and did not time out)
  int exit_code = -1;      // exit status when it exited, else -1
  bool timed_out = false;  // killed by us at the timeout (then also signaled, SIGKILL)
  bool signaled = false;   // ended by a signal
  int signal = 0;          // that signal
  // stdout+stderr interleaved: the first kMaxOutputBytes, then a note of how much was dropped.
  // Always valid UTF-8 (invalid bytes become U+FFFD), so it can go into JSON and logs as is.
  std::string output;
};

// Parses the channel's "validator" field strictly:
//   {"argv": ["/abs/path", "--check", "{file}"], "timeout_s": 10}
// argv: 1..kMaxArgs strings of at most kMaxArgBytes, none containing a NUL byte; argv[0] an
// absolute path without "{file}". timeout_s: optional integer 1..300 (default 10). Any other
// field, type or range is an InvalidArgument error naming the field. Does not look at the file
// system (the executable may live on another machine).
Expected<ValidatorCommand> parse_command(const nlohmann::json& j);

// Whether any argument holds kConsumerVersionToken.
bool takes_consumer_version(const std::vector<std::string>& argv);
// argv with kConsumerVersionToken replaced by `version` in every argument after argv[0]. The
// caller passes a checked version (proto::is_consumer_version: no shell or path metacharacters;
// no shell runs anyway). Pure.
std::vector<std::string> with_consumer_version(std::vector<std::string> argv,
                                               std::string_view version);

// The wire form of a command, accepted by parse_command().
nlohmann::json command_json(const ValidatorCommand& c);

// Runs argv on `file` (which replaces "{file}" in every argument, or is appended when no argument
// has the token; a relative path is made absolute first). Blocks until the command exits or
// `timeout` passes.
// Returns the result of a command that ran, whatever its verdict. Errors, without running
// anything: InvalidArgument when argv is empty, argv[0] is not an absolute path to an executable
// regular file, or timeout is not positive; NotFound when `file` does not exist; Unavailable when
// the process could not be started (pipes, fork limits).
Expected<CommandResult> run_validator(const std::vector<std::string>& argv, const std::string& file,
                                      std::chrono::milliseconds timeout = kDefaultTimeout);

inline Expected<CommandResult> run_validator(const ValidatorCommand& c, const std::string& file) {
  return run_validator(c.argv, file, c.timeout);
}

}  // namespace ringfence::server::validation
