#pragma once
// Release notes as Atom feeds (RFC 4287): /v1/channels/{ch}/releases.atom and /v1/releases.atom.
// One entry per release, newest first: its version, state, notes, digest and dates. An entry's
// <updated> is the release's last change, so a quarantined release ("withdrawn") shows up again
// in feed readers.
//
// Pure functions of the releases' JSON views (Service::list_releases); no I/O, any thread.

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace ringfence::server::api {

struct FeedSource {
  std::string title;      // "Ringfence releases: rules"
  std::string self_path;  // "/v1/channels/rules/releases.atom" (the feed's own link, relative)
  std::string id;         // a permanent id for the feed (a tag: URI)
};

// The Atom document for `releases` (each a release view: channel, version, state, notes, sha256,
// size, created, updated), newest change first, at most `limit` entries.
std::string atom_feed(const FeedSource& feed, std::vector<nlohmann::json> releases,
                      std::size_t limit = 100);

// RFC 3339 UTC ("2026-12-07T23:59:00Z") for unix seconds.
std::string rfc3339(std::int64_t unix_s);

}  // namespace ringfence::server::api
