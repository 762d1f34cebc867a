#pragma once
// Early-return helpers for Expected/Status: RF_TRY(x, expr) binds x to the value or returns the
// error; RF_CHECK(expr) returns the error of a failed Status/Expected.

#define RF_CONCAT_INNER(a, b) a##b
#define RF_CONCAT(a, b) RF_CONCAT_INNER(a, b)

#define RF_TRY(var, expr)                                              \
  auto RF_CONCAT(var, _result_) = (expr);                              \
  if (!RF_CONCAT(var, _result_))                                       \
    return ::tl::unexpected(std::move(RF_CONCAT(var, _result_).error())); \
  auto var = std::move(*RF_CONCAT(var, _result_))

#define RF_CHECK(expr) RF_CHECK_IMPL(expr, RF_CONCAT(rf_check_status_, __COUNTER__))
#define RF_CHECK_IMPL(expr, name)                              \
  do {                                                         \
    auto name = (expr);                                        \
    if (!name) return ::tl::unexpected(std::move(name.error())); \
  } while (0)
