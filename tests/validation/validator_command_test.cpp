#include "server/validation/validator_command.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tests/support/process.hpp"

namespace ringfence::server::validation {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

class ValidatorCommandTest : public ::testing::Test {
 protected:
  // Writes an executable /bin/sh script and returns its path.
  std::string script(const std::string& name, const std::string& body, mode_t mode = 0755) {
    std::string path = dir_.path() + "/" + name;
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::string content(const std::string& text = "{\"fields\":21}") {
    std::string path = dir_.path() + "/blob.json";
    std::ofstream(path) << text;
    return path;
  }
  static std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  testing::TempDir dir_;
};

TEST_F(ValidatorCommandTest, ExitZeroPasses) {
  auto r = run_validator({script("ok.sh", "echo fine; exit 0")}, content(), 5s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->passed);
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_FALSE(r->timed_out);
  EXPECT_FALSE(r->signaled);
  EXPECT_EQ(r->output, "fine\n");
}

TEST_F(ValidatorCommandTest, NonZeroExitFailsWithStdoutAndStderrCaptured) {
  auto r = run_validator(
      {script("bad.sh", "echo 'template has 21 fields'; echo 'consumer supplies 20' >&2; exit 1")},
      content(), 5s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_FALSE(r->signaled);
  EXPECT_EQ(r->output, "template has 21 fields\nconsumer supplies 20\n");
}

TEST_F(ValidatorCommandTest, OtherExitCodesAreReported) {
  auto r = run_validator({script("e42.sh", "exit 42")}, content(), 5s);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->exit_code, 42);
}

TEST_F(ValidatorCommandTest, KilledBySignalFails) {
  auto r = run_validator({script("segv.sh", "echo parsing; kill -SEGV $$")}, content(), 5s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->passed);
  EXPECT_TRUE(r->signaled);
  EXPECT_EQ(r->signal, SIGSEGV);
  EXPECT_EQ(r->exit_code, -1);
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(r->output, "parsing\n");
}

TEST_F(ValidatorCommandTest, TimeoutKillsTheWholeProcessGroup) {
  std::string pidfile = dir_.path() + "/child.pid";
  // The script leaves a grandchild that also holds the output pipe open.
  auto start = std::chrono::steady_clock::now();
  auto r = run_validator(
      {script("hang.sh", "sleep 30 & echo $! > " + pidfile + "; echo started; wait"), "{file}"},
      content(), 1s);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->timed_out);
  EXPECT_TRUE(r->signaled);
  EXPECT_EQ(r->signal, SIGKILL);
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->output, "started\n");
  EXPECT_LT(elapsed, 10s);

  // The grandchild died with it (it may linger as a zombie of whoever adopted it).
  pid_t grandchild = std::atoi(read_file(pidfile).c_str());
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(testing::eventually(
      [&] {
        std::ifstream stat("/proc/" + std::to_string(grandchild) + "/stat");
        if (!stat) return true;
        std::string pid_s, comm, state;
        stat >> pid_s >> comm >> state;
        return state == "Z" || comm != "(sleep)";
      },
      5s));
}

TEST_F(ValidatorCommandTest, ExitLeavesNoStragglersHoldingThePipe) {
  // The command exits at once but its background child keeps the pipe: we must not wait for it.
  auto start = std::chrono::steady_clock::now();
  auto r = run_validator({script("bg.sh", "sleep 30 & echo done")}, content(), 10s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->passed);
  EXPECT_EQ(r->output, "done\n");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST_F(ValidatorCommandTest, HugeOutputIsCapped) {
  auto r = run_validator({script("loud.sh", "head -c 1000000 /dev/zero | tr '\\0' x; exit 3")},
                         content(), 10s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 3);
  ASSERT_GE(r->output.size(), kMaxOutputBytes);
  EXPECT_LT(r->output.size(), kMaxOutputBytes + 200);
  EXPECT_EQ(r->output.substr(0, kMaxOutputBytes), std::string(kMaxOutputBytes, 'x'));
  EXPECT_NE(r->output.find(std::to_string(1000000 - kMaxOutputBytes) + " more bytes of output "
                                                                       "dropped"),
            std::string::npos)
      << r->output.substr(kMaxOutputBytes);
}

TEST_F(ValidatorCommandTest, OutputIsMadeValidUtf8) {
  auto r = run_validator({script("bytes.sh", "printf 'bad \\377 \\300\\200 good \\303\\251\\n'")},
                         content(), 5s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->output, "bad \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD good \xC3\xA9\n");
}

TEST_F(ValidatorCommandTest, FileTokenIsReplacedInEveryArgument) {
  std::string blob = content();
  auto r = run_validator({script("args.sh", "for a in \"$@\"; do echo \"[$a]\"; done"), "--check",
                          "--input={file}", "{file}"},
                         blob, 5s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->output, "[--check]\n[--input=" + blob + "]\n[" + blob + "]\n");
}

TEST_F(ValidatorCommandTest, PathIsAppendedWithoutToken) {
  std::string blob = content();
  auto r =
      run_validator({script("args.sh", "for a in \"$@\"; do echo \"[$a]\"; done"), "-q"}, blob, 5s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->output, "[-q]\n[" + blob + "]\n");
}

TEST_F(ValidatorCommandTest, ArgumentsAreNotInterpretedByAShell) {
  std::string marker = dir_.path() + "/pwned";
  auto r = run_validator({script("args.sh", "for a in \"$@\"; do echo \"[$a]\"; done"),
                          "; touch " + marker, "$(touch " + marker + ")"},
                         content(), 5s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->passed);
  EXPECT_NE(::access(marker.c_str(), F_OK), 0);
}

TEST_F(ValidatorCommandTest, ValidatorReadsTheContent) {
  std::string blob = content("{\"fields\":[1,2,3]}");
  auto r = run_validator({"/bin/cat"}, blob, 5s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->passed);
  EXPECT_EQ(r->output, "{\"fields\":[1,2,3]}");
}

TEST_F(ValidatorCommandTest, RelativeContentPathIsMadeAbsolute) {
  std::string blob = content();
  std::string cwd = std::filesystem::current_path().string();
  ASSERT_EQ(::chdir(dir_.path().c_str()), 0);
  auto r = run_validator({"/bin/cat", "{file}"}, "blob.json", 5s);
  ASSERT_EQ(::chdir(cwd.c_str()), 0);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->passed);
  EXPECT_EQ(r->output, "{\"fields\":21}");
}

TEST_F(ValidatorCommandTest, EnvironmentIsMinimalAndStdinIsEmpty) {
  ::setenv("RINGFENCE_TEST_SECRET", "hunter2", 1);
  auto r = run_validator({script("env.sh", "env | sort; cat; pwd")}, content(), 5s);
  ::unsetenv("RINGFENCE_TEST_SECRET");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->passed);
  EXPECT_EQ(r->output.find("hunter2"), std::string::npos) << r->output;
  EXPECT_NE(r->output.find("PATH=/usr/local/bin:/usr/bin:/bin\n"), std::string::npos);
  EXPECT_NE(r->output.find("LC_ALL=C\n"), std::string::npos);
  EXPECT_EQ(r->output.substr(r->output.size() - 2), "/\n");  // working directory "/"
}

TEST_F(ValidatorCommandTest, ServerFileDescriptorsDoNotLeak) {
  int fd = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(fd, 0);
  int high = ::dup2(fd, 97);
  ::close(fd);
  auto r = run_validator({script("fds.sh", "test -e /proc/self/fd/97 && echo leaked; exit 0")},
                         content(), 5s);
  ::close(high);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->output, "");
}

TEST_F(ValidatorCommandTest, BadCommandsAreRefusedWithoutRunning) {
  std::string blob = content();
  auto empty = run_validator({}, blob, 5s);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().errc, Errc::InvalidArgument);

  auto relative = run_validator({"sh", "-c", "exit 0"}, blob, 5s);
  ASSERT_FALSE(relative);
  EXPECT_EQ(relative.error().errc, Errc::InvalidArgument);
  EXPECT_NE(relative.error().message.find("absolute"), std::string::npos);

  auto dotted = run_validator({"./ok.sh"}, blob, 5s);
  ASSERT_FALSE(dotted);
  EXPECT_EQ(dotted.error().errc, Errc::InvalidArgument);

  auto not_exec = run_validator({script("plain.sh", "exit 0", 0644)}, blob, 5s);
  ASSERT_FALSE(not_exec);
  EXPECT_EQ(not_exec.error().errc, Errc::InvalidArgument);

  auto dir = run_validator({dir_.path()}, blob, 5s);
  ASSERT_FALSE(dir);
  EXPECT_EQ(dir.error().errc, Errc::InvalidArgument);

  auto missing = run_validator({dir_.path() + "/nope"}, blob, 5s);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().errc, Errc::InvalidArgument);

  auto no_timeout = run_validator({"/bin/true"}, blob, 0ms);
  ASSERT_FALSE(no_timeout);
  EXPECT_EQ(no_timeout.error().errc, Errc::InvalidArgument);

  auto nul = run_validator({"/bin/true", std::string("a\0b", 3)}, blob, 5s);
  ASSERT_FALSE(nul);
  EXPECT_EQ(nul.error().errc, Errc::InvalidArgument);

  auto no_file = run_validator({"/bin/true"}, dir_.path() + "/absent.json", 5s);
  ASSERT_FALSE(no_file);
  EXPECT_EQ(no_file.error().errc, Errc::NotFound);
}

TEST_F(ValidatorCommandTest, ScriptWithoutInterpreterIsRefused) {
  std::string path = dir_.path() + "/garbage";
  std::ofstream(path) << "\x7f"
                      << "not an executable";
  ::chmod(path.c_str(), 0755);
  auto r = run_validator({path}, content(), 5s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errc, Errc::InvalidArgument);
}

TEST(ParseCommand, AcceptsTheDocumentedForm) {
  auto c = parse_command(json::parse(R"({"argv":["/abs/path","--check","{file}"],"timeout_s":7})"));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->argv, (std::vector<std::string>{"/abs/path", "--check", "{file}"}));
  EXPECT_EQ(c->timeout, 7s);
  auto back = parse_command(command_json(*c));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->argv, c->argv);
  EXPECT_EQ(back->timeout, c->timeout);
}

TEST(ParseCommand, DefaultTimeoutIsTenSeconds) {
  auto c = parse_command(json::parse(R"({"argv":["/usr/bin/validate"]})"));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->timeout, 10s);
}

TEST(ParseCommand, RefusesAnythingElse) {
  const char* bad[] = {
      R"([])",
      R"("/bin/true")",
      R"({})",
      R"({"argv":[]})",
      R"({"argv":"/bin/true"})",
      R"({"argv":["bin/true"]})",
      R"({"argv":["true"]})",
      R"({"argv":["/"]})",
      R"({"argv":["/x/{file}"]})",
      R"({"argv":["/bin/true", 3]})",
      R"({"argv":["/bin/true", null]})",
      R"({"argv":["/bin/true"],"timeout_s":0})",
      R"({"argv":["/bin/true"],"timeout_s":301})",
      R"({"argv":["/bin/true"],"timeout_s":1.5})",
      R"({"argv":["/bin/true"],"timeout_s":"10"})",
      R"({"argv":["/bin/true"],"shell":true})",
      R"({"argv":["/bin/true"],"env":{"A":"b"}})",
  };
  for (const char* text : bad) {
    auto c = parse_command(json::parse(text));
    EXPECT_FALSE(c) << text;
    if (!c) {
      EXPECT_EQ(c.error().errc, Errc::InvalidArgument) << text;
    }
  }
  json many = {{"argv", json::array()}};
  many["argv"].push_back("/bin/true");
  for (int i = 0; i < 64; ++i) many["argv"].push_back("x");
  EXPECT_FALSE(parse_command(many));
  json huge = {{"argv", {"/bin/true", std::string(kMaxArgBytes + 1, 'a')}}};
  EXPECT_FALSE(parse_command(huge));
  json nul = {{"argv", {"/bin/true", std::string("a\0b", 3)}}};
  EXPECT_FALSE(parse_command(nul));
}

TEST_F(ValidatorCommandTest, RunsAParsedCommand) {
  auto c = parse_command(json{{"argv", {script("ok.sh", "exit 0"), "{file}"}}, {"timeout_s", 2}});
  ASSERT_TRUE(c) << c.error().message;
  auto r = run_validator(*c, content());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->passed);
}

}  // namespace
}  // namespace ringfence::server::validation
