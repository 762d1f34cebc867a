#pragma once
// The real agent's acceptance rule for one desired entry (agent/content/verify.cpp,
// verify_entry), restated for simulated hosts so that the simulator proves what the agent does:
// the manifest must match the entry, its Ed25519 signature must verify with the server's key,
// it must not have expired, and a version below the one the host runs is accepted only when the
// *signed* manifest's rollback_from reaches the running version. The desired entry's unsigned
// `rollback` hint authorises nothing. Known-bad and locally refused versions are the caller's
// (they are skipped before this check, as the agent does).
//
// Thread-compatible: a SignatureCache is used from one thread.

#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "proto/messages.hpp"
#include "proto/signing.hpp"

namespace ringfence::fleetsim {

enum class OfferVerdict { Accept, Mismatch, Signature, Expired, Downgrade };

// The snake_case code the agent uses for the same refusal ("manifest", "signature", "expired",
// "downgrade"); "accept" for Accept.
std::string_view to_string(OfferVerdict v) noexcept;

// Signatures already verified, keyed by signature and the exact signed bytes (a signature alone
// would let a changed manifest ride on an earlier good one).
using SignatureCache = std::set<std::string>;

// Checks `entry` for a host that runs `running_version` (0: nothing) at unix time now_s.
// key == nullptr (the server's key not known yet) refuses as Signature.
OfferVerdict check_offer(const proto::DesiredChannel& entry, std::int64_t running_version,
                         const proto::PublicKey* key, std::int64_t now_s, SignatureCache& cache);

}  // namespace ringfence::fleetsim
