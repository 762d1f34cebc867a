#include "proto/error.hpp"

namespace ringfence {

std::string_view to_string(Errc e) noexcept {
  switch (e) {
    case Errc::InvalidArgument: return "invalid_argument";
    case Errc::Unauthenticated: return "unauthenticated";
    case Errc::PermissionDenied: return "permission_denied";
    case Errc::NotFound: return "not_found";
    case Errc::MethodNotAllowed: return "method_not_allowed";
    case Errc::Conflict: return "conflict";
    case Errc::PayloadTooLarge: return "payload_too_large";
    case Errc::UnsupportedMedia: return "unsupported_media_type";
    case Errc::Unprocessable: return "unprocessable";
    case Errc::TooManyRequests: return "too_many_requests";
    case Errc::Unavailable: return "unavailable";
    case Errc::Internal: return "internal";
  }
  return "internal";
}

}  // namespace ringfence
