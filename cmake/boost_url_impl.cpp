// Boost.URL compiled once into ringfence_url (Debian ships it header-only with this source
// header; there is no libboost_url to link).
#include <boost/url/src.hpp>
