#!/usr/bin/env python3
"""Crash consistency: a real ringfence-server SIGKILLed at random moments, restarted, checked.

While the server runs, an operator thread writes through the API (tokens, enrollment tokens,
rings, channels, blobs + releases), an event watcher reads /v1/events, and a small fleet of
simulated agents (real agent requests: enroll, desired, heartbeat, reports) runs rollouts of a
channel whose releases are either good or lethal: a host that applies a lethal release reports
`applied` (resending until it is acknowledged, as the agent's spool does) and then goes silent
for a long time, like the hosts of the July 2024 incident. The main loop keeps a rollout of that
channel going, and kills the server with SIGKILL after a random (seeded) time. After each kill,
with the server down, it checks the database file directly:

  - PRAGMA integrity_check is ok; the database is 0600 and the data dir 0700;
  - every write the API acknowledged (2xx) is there: tokens, enrollment tokens, rings, channels,
    releases, agent reports (by their idempotency key), and each host's reported version is the
    last one a heartbeat was acknowledged for (or a newer one whose answer never came);
  - every event a client saw is there with the same kind (none lost), and event ids are strictly
    increasing across restarts (a restarted server never reuses an id);

then restarts the server on the same port and checks that no rollout is stranded: a rollout whose
canary was acknowledged to have applied a lethal release is halted (rolled back) in bounded
time, and at the end every rollout reaches a final state.

  crash_test.py --server-bin build/server/ringfence-server --iterations 12 --seed 7

python3 standard library only; exit status 0 when every check held. Prints one line per kill and
a SUMMARY line.
"""

import argparse
import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

ADMIN = "rf-crash-admin-" + os.urandom(8).hex()
CHANNEL = "detections"
CANARY_HOSTS = 6
REST_HOSTS = 6
SILENT_S = 10.0  # how long a host that applied a lethal release stays silent


class Failed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failed(msg)


def say(msg):
    print(msg, flush=True)


def now_ms():
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- HTTP
class Down(Exception):
    """No answer: connection refused or reset, or a timeout (the server was killed)."""


def call(base, method, path, token=None, body=None, raw=None, timeout=5.0):
    headers = {}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = None
    if raw is not None:
        data = raw
        headers["Content-Type"] = "application/octet-stream"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        raise Down(str(e))
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return status, parsed


# --------------------------------------------------------------------------- the server
class Server:
    def __init__(self, binary, data, log_path):
        self.binary = binary
        self.data = data
        self.log_path = log_path
        self.port = 0
        self.proc = None
        self.base = None

    def start(self):
        log = open(self.log_path, "ab")
        env = dict(os.environ, RINGFENCE_ADMIN_TOKEN=ADMIN)
        argv = [self.binary, "--data-dir", self.data, "--listen", f"127.0.0.1:{self.port}",
                "--no-access-log", "--no-web", "--heartbeat-s", "1", "--exposed-heartbeat-s", "1",
                "--poll-s", "1", "--silence-intervals", "3", "--healthy-after-s", "1",
                "--restart-grace-s", "2", "--evidence-min-age-s", "0"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env)
        log.close()
        deadline = time.time() + 30
        line = b""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line or b"listening on" in line:
                break
        check(b"listening on" in line, f"the server did not start (see {self.log_path})")
        self.port = int(line.decode().strip().rsplit(":", 1)[1])
        self.base = f"http://127.0.0.1:{self.port}"

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def api(self, method, path, body=None, raw=None, timeout=5.0):
        return call(self.base, method, path, ADMIN, body, raw, timeout)


def until(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Down:
            pass
        time.sleep(0.1)
    raise Failed("timed out waiting for " + what)


# --------------------------------------------------------------------------- what was acknowledged
class Ledger:
    """Everything the server acknowledged, and what a client saw, across kills."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tokens = set()
        self.enroll_tokens = set()
        self.rings = set()
        self.channels = set()
        self.releases = set()  # (channel, version)
        self.reports = set()  # (host_id, boot_id, kind, time)
        self.events = {}  # id -> kind, as GET /v1/events returned them
        self.lethal = set()  # versions of CHANNEL that make hosts go silent
        self.applied = {}  # version -> host ids whose `applied` report was acknowledged
        self.hb = {}  # host_id -> versions a heartbeat may have left in the store (see Host)

    def add(self, kind, key):
        with self.lock:
            getattr(self, kind).add(key)


# --------------------------------------------------------------------------- the fleet
class Host(threading.Thread):
    """One agent: polls its desired state, applies it, heartbeats, reports.

    A lethal release is applied, `applied` is resent until acknowledged, then the host is silent
    for SILENT_S (a boot loop). It then restores the previous version (last-known-good), keeps
    the lethal one out locally, and reports the local rollback.
    """

    def __init__(self, server, ledger, host_id, labels, enroll_token, stop):
        super().__init__(daemon=True)
        self.server, self.ledger, self.id = server, ledger, host_id
        self.labels, self.enroll_token, self.stop_ev = labels, enroll_token, stop
        self.cred = None
        self.boot = uuid.uuid4().hex
        self.started = time.time()
        self.version = 0
        self.refused = set()
        self.last_time = 0
        self.failure = None

    def req(self, method, path, body=None):
        return call(self.server.base, method, path, self.cred, body, timeout=3.0)

    def report_until_acked(self, kind, version):
        t = max(now_ms(), self.last_time + 1)
        self.last_time = t
        rep = {"kind": kind, "time": t, "channel": CHANNEL, "version": version,
               "boot_id": self.boot, "detail": {}}
        while not self.stop_ev.is_set():
            try:
                status, _ = self.req("POST", "/v1/agent/reports", [rep])
            except Down:
                time.sleep(0.2)
                continue
            if status == 202:
                self.ledger.add("reports", (self.id, self.boot, kind, t))
                if kind == "applied":
                    with self.ledger.lock:
                        self.ledger.applied.setdefault(version, set()).add(self.id)
                return True
            if status == 401:
                self.enroll()
            time.sleep(0.2)
        return False

    def enroll(self):
        body = {"enrollment_token": self.enroll_token, "host_id": self.id, "labels": self.labels,
                "agent_version": "crash-test"}
        while not self.stop_ev.is_set():
            try:
                status, r = call(self.server.base, "POST", "/v1/agent/enroll", self.cred, body)
            except Down:
                time.sleep(0.2)
                continue
            if status == 200:
                self.cred = r["credential"]
                return
            time.sleep(0.3)

    def heartbeat(self):
        chans = {CHANNEL: {"version": self.version, "state": "active"}} if self.version else {}
        body = {"boot_id": self.boot, "uptime_s": int(time.time() - self.started) + 300,
                "channels": chans}
        with self.ledger.lock:
            self.ledger.hb.setdefault(self.id, {"acked": None, "since": set()})
            self.ledger.hb[self.id]["since"].add(self.version)
        status, _ = self.req("POST", "/v1/agent/heartbeat", body)
        if status == 204:
            with self.ledger.lock:
                self.ledger.hb[self.id] = {"acked": self.version, "since": set()}
        elif status == 401:
            self.enroll()

    def run(self):
        try:
            self.enroll()
            while not self.stop_ev.is_set():
                try:
                    status, d = self.req("GET", "/v1/agent/desired")
                    if status == 401:
                        self.enroll()
                        continue
                    if status == 200:
                        want = 0
                        for c in d.get("channels", []):
                            if c["channel"] == CHANNEL:
                                want = c["version"]
                        if want and want != self.version and want not in self.refused:
                            self.apply(want)
                    self.heartbeat()
                except Down:
                    time.sleep(0.2)
                self.stop_ev.wait(0.4)
        except Exception as e:  # reported by the main thread
            self.failure = repr(e)

    def apply(self, version):
        previous = self.version
        self.version = version
        with self.ledger.lock:
            lethal = version in self.ledger.lethal
        if not self.report_until_acked("applied", version):
            return
        if not lethal:
            return
        # Boot loop: nothing at all for SILENT_S, then last-known-good by itself.
        self.stop_ev.wait(SILENT_S)
        self.version = previous
        self.refused.add(version)
        self.boot = uuid.uuid4().hex
        self.started = time.time()
        self.report_until_acked("local_rollback", version)


# --------------------------------------------------------------------------- operators
class Operators(threading.Thread):
    """Writes through the operator API; records what was acknowledged."""

    def __init__(self, server, ledger, rng, stop):
        super().__init__(daemon=True)
        self.server, self.ledger, self.rng, self.stop_ev = server, ledger, rng, stop
        self.n = 0
        self.writes = 0
        self.failure = None

    def run(self):
        try:
            while not self.stop_ev.is_set():
                self.n += 1
                try:
                    self.one(self.rng.choice(["token", "enroll", "ring", "channel", "release"]))
                except Down:
                    time.sleep(0.05)
                self.stop_ev.wait(0.02)
        except Exception as e:
            self.failure = repr(e)

    def one(self, kind):
        s, n = self.server, self.n
        if kind == "token":
            st, _ = s.api("POST", "/v1/tokens", {"name": f"tok-{n}", "role": "viewer"})
            if st in (200, 201):
                self.ledger.add("tokens", f"tok-{n}")
        elif kind == "enroll":
            st, _ = s.api("POST", "/v1/enrollment-tokens", {"name": f"enr-{n}"})
            if st in (200, 201):
                self.ledger.add("enroll_tokens", f"enr-{n}")
        elif kind == "ring":
            if len(self.ledger.rings) >= 150:
                return
            # Matches nobody: membership of the fleet's hosts stays as it is.
            st, _ = s.api("POST", "/v1/rings", {"name": f"ring-{n}", "rank": 1000 + n,
                                               "selector": {"labels": "crash=nobody"}})
            if st in (200, 201):
                self.ledger.add("rings", f"ring-{n}")
        elif kind == "channel":
            st, _ = s.api("POST", "/v1/channels", {"name": f"side-{n}"})
            if st in (200, 201):
                self.ledger.add("channels", f"side-{n}")
        elif kind == "release":
            with self.ledger.lock:
                chans = sorted(self.ledger.channels)
            if not chans:
                return
            ch = self.rng.choice(chans)
            st, b = s.api("POST", "/v1/blobs", raw=json.dumps({"side": n}).encode())
            if st not in (200, 201):
                return
            st, r = s.api("POST", f"/v1/channels/{ch}/releases", {"sha256": b["sha256"]})
            if st in (200, 201):
                self.ledger.add("releases", (ch, r["version"]))
        self.writes += 1


class EventWatcher(threading.Thread):
    def __init__(self, server, ledger, stop):
        super().__init__(daemon=True)
        self.server, self.ledger, self.stop_ev = server, ledger, stop
        self.after = 0
        self.failure = None

    def run(self):
        while not self.stop_ev.is_set():
            try:
                st, page = self.server.api("GET", f"/v1/events?after={self.after}&limit=500")
                if st == 200:
                    for e in page["events"]:
                        if e["id"] <= self.after:
                            self.failure = f"event id {e['id']} after {self.after}: not increasing"
                        self.after = max(self.after, e["id"])
                        with self.ledger.lock:
                            old = self.ledger.events.get(e["id"])
                            if old is not None and old != e["kind"]:
                                self.failure = (f"event {e['id']} was {old}, is now {e['kind']}:"
                                                " an id was reused after a restart")
                            self.ledger.events[e["id"]] = e["kind"]
            except Down:
                pass
            self.stop_ev.wait(0.3)


# --------------------------------------------------------------------------- checks
def check_database(data, ledger):
    db = os.path.join(data, "ringfence.db")
    mode = stat.S_IMODE(os.stat(data).st_mode)
    check(mode & 0o077 == 0, f"data dir is {mode:04o}, not private")
    for suffix in ("", "-wal", "-shm"):
        p = db + suffix
        if os.path.exists(p):
            mode = stat.S_IMODE(os.stat(p).st_mode)
            check(mode & 0o077 == 0, f"{p} is {mode:04o}, not 0600")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ic = con.execute("PRAGMA integrity_check").fetchall()
        check(ic == [("ok",)], f"integrity_check: {ic[:5]}")

        def names(sql):
            return {r[0] for r in con.execute(sql)}

        with ledger.lock:
            missing = ledger.tokens - names("SELECT name FROM api_tokens")
            check(not missing, f"acknowledged tokens lost: {sorted(missing)[:5]}")
            missing = ledger.enroll_tokens - names("SELECT name FROM enrollment_tokens")
            check(not missing, f"acknowledged enrollment tokens lost: {sorted(missing)[:5]}")
            missing = ledger.rings - names("SELECT name FROM rings")
            check(not missing, f"acknowledged rings lost: {sorted(missing)[:5]}")
            missing = ledger.channels - names("SELECT name FROM channels")
            check(not missing, f"acknowledged channels lost: {sorted(missing)[:5]}")
            have = {(c, v) for c, v in con.execute("SELECT channel, version FROM releases")}
            missing = ledger.releases - have
            check(not missing, f"acknowledged releases lost: {sorted(missing)[:5]}")
            have = set(con.execute("SELECT host_id, boot_id, kind, time FROM reports"))
            missing = ledger.reports - have
            check(not missing, f"{len(missing)} acknowledged agent reports lost, e.g. "
                               f"{sorted(missing)[:3]}")
            events = con.execute("SELECT id, kind FROM events ORDER BY id").fetchall()
            ids = [i for i, _ in events]
            check(all(a < b for a, b in zip(ids, ids[1:])), "event ids not strictly increasing")
            stored = dict(events)
            lost = [i for i, k in ledger.events.items() if stored.get(i) != k]
            check(not lost, f"events a client saw are gone or changed: {lost[:5]}")
            for host, (chans,) in ((h, r) for h, *r in con.execute(
                    "SELECT host_id, channels FROM hosts")):
                hb = ledger.hb.get(host)
                if not hb or hb["acked"] is None:
                    continue
                v = json.loads(chans).get(CHANNEL, {}).get("version", 0)
                allowed = {hb["acked"]} | hb["since"]
                check(v in allowed, f"host {host[:8]}: stored version {v}, but a heartbeat with "
                                    f"{hb['acked']} was acknowledged (later sent: {hb['since']})")
        return len(events), ids[-1] if ids else 0
    finally:
        con.close()


def rollouts(server):
    st, r = server.api("GET", f"/v1/rollouts?channel={CHANNEL}")
    check(st == 200, f"GET /v1/rollouts -> {st}")
    return r["rollouts"]


FINAL = ("completed", "rolled_back", "aborted")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server-bin", required=True)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--min-run-s", type=float, default=0.3)
    ap.add_argument("--max-run-s", type=float, default=4.0)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="rf-crash-")
    data = os.path.join(work, "data")
    server = Server(args.server_bin, data, os.path.join(work, "server.log"))
    ledger = Ledger()
    stop = threading.Event()
    threads = []
    t0 = time.time()
    kills = halts_checked = 0
    try:
        server.start()
        # Rings: the canary is an explicit list of six hosts, the rest is everyone else.
        canary = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(CANARY_HOSTS)]
        rest = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(REST_HOSTS)]
        st, _ = server.api("POST", "/v1/rings", {"name": "canary", "rank": 0,
                                                 "selector": {"hosts": canary}})
        check(st in (200, 201), f"ring canary -> {st}")
        st, _ = server.api("POST", "/v1/rings", {"name": "rest", "rank": 1,
                                                 "selector": {"buckets": [0, 10000]}})
        check(st in (200, 201), f"ring rest -> {st}")
        st, _ = server.api("POST", "/v1/channels", {"name": CHANNEL})
        check(st in (200, 201), f"channel -> {st}")
        st, tok = server.api("POST", "/v1/enrollment-tokens", {"name": "fleet"})
        check(st in (200, 201), f"enrollment token -> {st}")
        hosts = [Host(server, ledger, h, {"os": "linux"}, tok["token"], stop)
                 for h in canary + rest]
        ops = Operators(server, ledger, random.Random(rng.random()), stop)
        watcher = EventWatcher(server, ledger, stop)
        threads = hosts + [ops, watcher]
        for t in threads:
            t.start()

        serial = [0]

        def start_rollout(lethal):
            serial[0] += 1
            st, b = server.api("POST", "/v1/blobs", raw=json.dumps({"rules": serial[0]}).encode())
            check(st in (200, 201), f"blob -> {st}")
            st, rel = server.api("POST", f"/v1/channels/{CHANNEL}/releases", {"sha256": b["sha256"]})
            check(st in (200, 201), f"release -> {st} {rel}")
            v = rel["version"]
            if lethal:
                with ledger.lock:
                    ledger.lethal.add(v)
            st, r = server.api("POST", "/v1/rollouts", {"channel": CHANNEL, "version": v, "stages": [
                {"ring": "canary", "bake_s": 3, "min_hosts": 3},
                {"ring": "rest", "bake_s": 2, "min_hosts": 3}]})
            check(st in (200, 201), f"rollout -> {st} {r}")
            st, _ = server.api("POST", f"/v1/rollouts/{r['id']}/start", {})
            check(st == 200, f"start -> {st}")
            return r["id"], v

        # A first stable release, healthy, before any kill.
        rid, _ = start_rollout(False)
        until(lambda: server.api("GET", f"/v1/rollouts/{rid}")[1]["state"] == "completed", 60,
              "the first release to complete")
        say(f"[{time.time() - t0:5.1f}s] release 1 stable; {CANARY_HOSTS + REST_HOSTS} hosts, "
            f"operators writing")

        for it in range(args.iterations):
            # Keep a rollout of the channel going: half of them lethal.
            try:
                active = [r for r in rollouts(server) if r["state"] not in FINAL]
                if not active:
                    lethal = rng.random() < 0.5
                    rid, v = start_rollout(lethal)
                    say(f"[{time.time() - t0:5.1f}s] rollout {rid} of version {v} "
                        f"({'lethal' if lethal else 'good'}) started")
            except Down:
                pass
            time.sleep(rng.uniform(args.min_run_s, args.max_run_s))
            server.kill()
            kills += 1
            n_events, last_id = check_database(data, ledger)
            with ledger.lock:
                n_reports, n_writes = len(ledger.reports), ops.writes
            say(f"[{time.time() - t0:5.1f}s] kill {kills}: database ok ({n_events} events, last id "
                f"{last_id}; {n_reports} acknowledged reports and {n_writes} operator writes "
                f"all present)")
            server.start()
            # No rollout stranded: a lethal release acknowledged as applied by a canary host is
            # halted (the hosts are silent; only the stored evidence can tell).
            for r in rollouts(server):
                with ledger.lock:
                    applied = ledger.applied.get(r["version"], set()) & set(canary)
                    lethal = r["version"] in ledger.lethal
                if r["state"] in FINAL or not lethal or not applied:
                    continue
                t1 = time.time()
                until(lambda: server.api("GET", f"/v1/rollouts/{r['id']}")[1]["state"] in
                      ("rolled_back", "aborted"), 40,
                      f"rollout {r['id']} (lethal, applied by {len(applied)} canary hosts) to halt")
                halts_checked += 1
                say(f"[{time.time() - t0:5.1f}s]   rollout {r['id']}: halted {time.time() - t1:.1f} s "
                    f"after the restart ({len(applied)} canary hosts had applied it)")
            for t in threads:
                check(t.failure is None, f"{t.__class__.__name__}: {t.failure}")

        # Every rollout ends: none is left baking forever.
        try:
            until(lambda: all(r["state"] in FINAL for r in rollouts(server)), 90,
                  "every rollout to reach a final state")
        except Failed:
            for r in rollouts(server):  # what the stranded rollout says it waits for
                if r["state"] not in FINAL:
                    say(json.dumps(server.api("GET", f"/v1/rollouts/{r['id']}")[1])[:4000])
            raise
        states = [(r["id"], r["version"], r["state"]) for r in rollouts(server)]
        for rid, v, state in states:
            check(v not in ledger.lethal or state != "completed", f"lethal rollout {rid} completed")
        server.stop()
        check_database(data, ledger)
        say(f"SUMMARY crash: seed {args.seed}, {kills} SIGKILLs in {time.time() - t0:.0f} s, "
            f"{len(states)} rollouts ({sum(1 for s in states if s[2] == 'completed')} completed, "
            f"{sum(1 for s in states if s[2] != 'completed')} halted), {halts_checked} lethal "
            f"canaries halted after a restart, {len(ledger.reports)} acknowledged reports, "
            f"{ops.writes} operator writes, {len(ledger.events)} events seen: nothing lost")
        return 0
    except Failed as e:
        say(f"FAILED: {e} (server log: {server.log_path})")
        args.keep = True
        return 1
    finally:
        stop.set()
        server.kill()
        for t in threads:
            t.join(5)
        if args.keep:
            say(f"kept {work}")
        else:
            import shutil
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
