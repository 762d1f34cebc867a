#include "fleetsim/accept.hpp"

namespace ringfence::fleetsim {

std::string_view to_string(OfferVerdict v) noexcept {
  switch (v) {
    case OfferVerdict::Accept:
      return "accept";
    case OfferVerdict::Mismatch:
      return "manifest";
    case OfferVerdict::Signature:
      return "signature";
    case OfferVerdict::Expired:
      return "expired";
    case OfferVerdict::Downgrade:
      return "downgrade";
  }
  return "unknown";
}

OfferVerdict check_offer(const proto::DesiredChannel& e, std::int64_t running_version,
                         const proto::PublicKey* key, std::int64_t now_s, SignatureCache& cache) {
  const auto& m = e.manifest;
  if (m.channel != e.channel || m.version != e.version || m.sha256 != e.sha256 ||
      m.size != e.size) {
    return OfferVerdict::Mismatch;
  }
  if (key == nullptr) return OfferVerdict::Signature;
  std::string bytes = proto::canonical_bytes(m);
  std::string cache_key = e.signature + "\n" + bytes;
  if (!cache.count(cache_key)) {
    if (!proto::verify(*key, bytes, e.signature)) return OfferVerdict::Signature;
    if (cache.size() > 4096) cache.clear();  // releases are few; this only bounds a bad server
    cache.insert(std::move(cache_key));
  }
  if (m.expires <= now_s) return OfferVerdict::Expired;
  if (running_version > 0 && e.version < running_version &&
      !(m.rollback_from && running_version <= *m.rollback_from)) {
    return OfferVerdict::Downgrade;
  }
  return OfferVerdict::Accept;
}

}  // namespace ringfence::fleetsim
