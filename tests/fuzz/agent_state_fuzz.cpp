// The agent's state-file loader (agent/state/store.*): identity.json and state.json as a disk
// left them after a crash, a full disk or tampering, read through the Fs seam exactly as the
// agent does at start. Properties: no crash; a document that loads re-encodes to one that loads
// and encodes the same (the agent writes back what it loaded).
#include <string>

#include "agent/state/store.hpp"
#include "tests/fuzz/fuzz.hpp"

using namespace ringfence;

namespace {
// An Fs holding one file in memory: only read() is used by the loaders.
class OneFileFs final : public agent::Fs {
 public:
  explicit OneFileFs(std::string_view bytes) : bytes_(bytes) {}
  Expected<std::string> read(const std::string&) override { return bytes_; }
  Status write_atomic(const std::string&, std::string_view, unsigned) override { return no(); }
  std::optional<std::int64_t> file_size(const std::string&) override {
    return static_cast<std::int64_t>(bytes_.size());
  }
  bool exists(const std::string&) override { return true; }
  Status make_dirs(const std::string&, unsigned) override { return no(); }
  Status remove(const std::string&) override { return no(); }
  Status install(const std::string&, const std::string&) override { return no(); }
  Status symlink_atomic(const std::string&, const std::string&) override { return no(); }
  std::optional<std::string> read_link(const std::string&) override { return std::nullopt; }

 private:
  static Status no() { return fail(Errc::Unavailable, "read-only fuzz fs"); }
  std::string bytes_;
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  OneFileFs fs(text);
  if (auto st = agent::state::load_state(fs, "state.json"); st && *st) {
    std::string encoded = agent::state::encode(**st);
    auto again = agent::state::decode_state(encoded);
    RF_FUZZ_CHECK(again.has_value());
    RF_FUZZ_CHECK(agent::state::encode(*again) == encoded);
  }
  if (auto id = agent::state::load_identity(fs, "identity.json"); id && *id) {
    std::string encoded = agent::state::encode(**id);
    auto again = agent::state::decode_identity(encoded);
    RF_FUZZ_CHECK(again.has_value());
    RF_FUZZ_CHECK(agent::state::encode(*again) == encoded);
  }
  return 0;
}
