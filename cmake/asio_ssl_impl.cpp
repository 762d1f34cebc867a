// Asio's SSL out-of-line implementation (BOOST_ASIO_SEPARATE_COMPILATION), compiled once into
// ringfence_asio_ssl: only the programs that speak TLS link it (and OpenSSL).
#include <boost/asio/ssl/impl/src.hpp>
