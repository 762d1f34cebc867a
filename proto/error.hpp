#pragma once
// Errors are values: every fallible call returns Expected<T>. The one mapping from Errc to an
// HTTP status lives in server/http/status.cpp (http_status()); this header stays transport-free.

#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace ringfence {

enum class Errc {
  InvalidArgument,     // 400: malformed or invalid input
  Unauthenticated,     // 401: no or unknown credential
  PermissionDenied,    // 403: role too low / speaking for someone else
  NotFound,            // 404
  MethodNotAllowed,    // 405
  Conflict,            // 409: exists already, or an invalid state transition
  PayloadTooLarge,     // 413
  UnsupportedMedia,    // 415
  Unprocessable,       // 422: well-formed but refused (content fails validation)
  TooManyRequests,     // 429
  Unavailable,         // 503: storage or a dependency is unavailable
  Internal,            // 500: a broken invariant on our side (never for client input)
};

// The default snake_case code for an Errc ("invalid_argument", "not_found", ...).
std::string_view to_string(Errc e) noexcept;

struct Error {
  Errc errc = Errc::Internal;
  std::string message;        // a human sentence
  std::string code;           // snake_case; empty means to_string(errc)
  std::string details_json;   // optional extra JSON object (e.g. validator findings), raw text

  std::string_view code_or_default() const noexcept {
    return code.empty() ? to_string(errc) : std::string_view(code);
  }
};

template <typename T>
using Expected = tl::expected<T, Error>;
using Status = tl::expected<void, Error>;

inline tl::unexpected<Error> fail(Errc e, std::string message, std::string code = {}) {
  return tl::unexpected<Error>(Error{e, std::move(message), std::move(code), {}});
}

}  // namespace ringfence
