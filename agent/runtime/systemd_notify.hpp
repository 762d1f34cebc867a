#pragma once
// The agent under systemd: readiness and the watchdog (sd_notify(3)'s datagram protocol on
// $NOTIFY_SOCKET). Written here rather than linked from libsystemd: libsystemd.so brings five
// more shared libraries (libcap, libgcrypt, liblz4, liblzma, libzstd) into a process whose
// resident size is budgeted (FOOTPRINT.md), for one sendto().
//
// Threading: any thread; no state.

#include <chrono>
#include <optional>
#include <string_view>

namespace ringfence::agent {

// Sends `state` ("READY=1", "WATCHDOG=1", "STOPPING=1", newline-separated assignments) to the
// service manager. Returns false when not started by systemd (no NOTIFY_SOCKET) or the send
// failed; nothing else happens either way.
bool notify_systemd(std::string_view state);

// The watchdog interval systemd expects pings within (WatchdogSec=), when it is watching this
// process: WATCHDOG_USEC set, and WATCHDOG_PID unset or ours. nullopt otherwise.
std::optional<std::chrono::microseconds> systemd_watchdog_interval();

}  // namespace ringfence::agent
