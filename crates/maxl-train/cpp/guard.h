// How the C functions of the shims report errors: none lets a C++ exception cross into Rust;
// each returns 1 and copies the exception's message into the caller's buffer.
#pragma once

#include <cstring>
#include <exception>

namespace maxl {
inline void copy_message(const char* what, char* err, size_t len) {
  if (len == 0) return;
  std::strncpy(err, what, len - 1);
  err[len - 1] = '\0';
}

// Runs `body`; 0 on success, 1 with the exception's message in `err` otherwise.
template <typename Body>
int guarded(char* err, size_t len, Body body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
  } catch (...) {
    copy_message("unknown C++ exception", err, len);
  }
  return 1;
}
}  // namespace maxl
