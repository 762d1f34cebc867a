// Asio's SSL out-of-line implementation, compiled once (BOOST_ASIO_SEPARATE_COMPILATION), for the
// programs that speak TLS. Kept apart from asio_impl.cpp so programs without TLS need no OpenSSL.
#include <boost/asio/ssl/impl/src.hpp>
