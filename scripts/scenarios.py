#!/usr/bin/env python3
"""Ringfence end-to-end scenarios: a real ringfence-server, a real fleetsim, real rollouts.

Each scenario starts a server on a fresh data dir (SQLite, 127.0.0.1:0), creates the rings
(canary = buckets [0,100) = 1%, early = [100,1100) = 10%, broad = the rest), starts a simulated
fleet, makes release 1 stable through a quick bootstrap rollout, then plays its release and
asserts the outcome, printing the timeline (from /v1/events and /v1/rollouts/{id}) as it goes:

  good       a good release goes through every ring to completed
  silent     a release that silently boot-loops every host that loads it is halted in the first
             stage; every exposed live host ends on stable
  crash      a release that crashes hosts (with crash reports) is halted within seconds
  rise5x     a 5x crash-rate rise over the background is caught before it leaves the first rings
  noise      rise5x's control: the same background and policy, a healthy release completes
  bgrise     a healthy release while the whole fleet's background crash rate rises 5x (fleetsim
             --background-rise, switched on by SIGUSR1 a few seconds into the rollout): nothing
             the release did; the outcome (completed, or halted and why) is reported
  bgnormal   bgrise's control: the same fleet, background and policy without the rise; a healthy
             release must complete (a halt is a false halt)
  incident   the 21-field release is refused (422) by sample-sensor's check (and by the pinned
             schema); with the validator off it is caught by the canary
  demo       (for scripts/demo.sh) one fleet: a good rollout, then the 21-field release
  scale      (not in all) a large fleet at the server's real intervals, a good release: the
             heartbeat rate fleetsim keeps, false silences, CPU and RSS (bench/RESULTS.md)

  scripts/scenarios.py --build-dir build --hosts 300 --scenario good,silent   (or all)
  scripts/scenarios.py --build-dir build --hosts 3000 --scenario noise --runs 20
      (each scenario --runs times, seeds --seed, --seed+1, ...; a RESULT table at the end:
      halted / completed, hosts exposed at the halt, first apply -> halt)

Every scenario ends with a SUMMARY line: hosts exposed (count, % of fleet), time from first
apply to halt, time from the halt until all live exposed hosts were back on stable, and the same
from the first apply.

python3 standard library only. Exit status 0 when every assertion held.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "fleetsim", "samples")
ADMIN_TOKEN = "rf-scenario-admin-" + os.urandom(8).hex()
CHANNEL = "detections"


class ScenarioFailed(Exception):
    pass


class Stopped(BaseException):
    """SIGTERM or SIGHUP: unwinds through every finally (like KeyboardInterrupt for SIGINT)."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def on_stop_signal(signum, frame):
    # Once: a second signal must not interrupt the cleanup the first one started.
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)
    raise Stopped(signum)


# Every server and fleet started and not yet stopped: whatever a scenario's own cleanup missed
# (a failure or a signal while it was still being set up) is stopped by stop_all().
RUNNING = []


def stop_all():
    while RUNNING:
        RUNNING[-1].stop()  # newest first: the fleet before its server


def check(cond, message):
    if not cond:
        raise ScenarioFailed(message)


def say(msg=""):
    print(msg, flush=True)


# --------------------------------------------------------------------------- HTTP
class Api:
    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, raw=None, ok=(200, 201, 202, 204)):
        data = None
        headers = {"Authorization": "Bearer " + self.token}
        if raw is not None:
            data = raw
            headers["Content-Type"] = "application/octet-stream"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        parsed = json.loads(text) if text else None
        if ok is not None and status not in ok:
            raise ScenarioFailed(f"{method} {path} -> {status}: {text[:400]!r}")
        return status, parsed

    def get(self, path):
        return self.call("GET", path)[1]

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body if body is not None else {}, **kw)[1]


# --------------------------------------------------------------------------- processes
class Server:
    def __init__(self, binary, workdir, extra_flags):
        self.data = os.path.join(workdir, "server-data")
        self.log = open(os.path.join(workdir, "server.log"), "wb")
        env = dict(os.environ, RINGFENCE_ADMIN_TOKEN=ADMIN_TOKEN)
        self.proc = subprocess.Popen(
            [binary, "--data-dir", self.data, "--listen", "127.0.0.1:0", "--no-access-log"] + extra_flags,
            stdout=subprocess.PIPE, stderr=self.log, env=env)
        RUNNING.append(self)
        deadline = time.time() + 30
        line = b""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if b"listening on" in line:
                break
        check(b"listening on" in line, f"the server did not start (see {self.log.name})")
        self.url = "http://" + line.decode().strip().split("listening on ", 1)[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self in RUNNING:
            RUNNING.remove(self)


class Fleet:
    def __init__(self, binary, workdir, server_url, token, hosts, models=(), from_content=False,
                 background=0.0, seed=1, extra=(), status_every=0.25):
        self.status_file = os.path.join(workdir, "fleet-status.json")
        self.report_file = os.path.join(workdir, "fleet-report.json")
        self.log = open(os.path.join(workdir, "fleetsim.log"), "wb")
        argv = [binary, "--server", server_url, "--enroll-token", token, "--hosts", str(hosts),
                "--status-file", self.status_file, "--status-every", str(status_every), "--report", self.report_file,
                "--seed", str(seed), "--long-poll-wait", "20"]
        for m in models:
            argv += ["--model", m]
        if from_content:
            argv.append("--model-from-content")
        if background:
            argv += ["--background-crash-rate", str(background)]
        argv += list(extra)
        self.hosts = hosts
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        RUNNING.append(self)

    def status(self):
        try:
            with open(self.status_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def live_on(self, channel, s=None):
        """{version: live hosts} from the given status, else the latest."""
        if s is None:
            s = self.status() or {}
        return {int(v): c["live"] for v, c in s.get("channels", {}).get(channel, {}).items()}

    def wait_enrolled(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            check(self.proc.poll() is None, "fleetsim exited early (see fleetsim.log)")
            s = self.status()
            if s and s["enrolled"] >= self.hosts:
                return s
            time.sleep(0.5)
        raise ScenarioFailed("the fleet did not enroll in time")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self in RUNNING:
            RUNNING.remove(self)
        try:
            with open(self.report_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


# --------------------------------------------------------------------------- setup helpers
def content(sample, serial):
    """A sample file made unique (a release is content-addressed), as bytes."""
    with open(os.path.join(SAMPLES, sample)) as f:
        doc = json.load(f)
    doc["serial"] = serial
    return json.dumps(doc, indent=1).encode()


def schema(name):
    with open(os.path.join(SAMPLES, name)) as f:
        return json.load(f)


def make_rings(api):
    for name, rank, lo, hi, desc in [
            ("canary", 0, 0, 100, "1% of the fleet by bucket"),
            ("early", 1, 100, 1100, "the next 10%"),
            ("broad", 2, 1100, 10000, "everyone else")]:
        api.post("/v1/rings", {"name": name, "rank": rank, "selector": {"buckets": [lo, hi]},
                               "description": desc})


def fit_rings(api, fleet_hosts):
    """Cuts the bucket ranges at the enrolled fleet's own buckets so that each ring holds its share.

    The bucket is a keyed hash under a per-installation secret made at the server's first start
    (README, "Bucket"), so a small fleet lands differently on every run: a 1 % canary of 300 hosts
    holds no host in ~5 % of runs and fewer than 2 in ~20 %. The scenarios need a canary of known
    size; large fleets (above 5 000 hosts) keep the fixed 1 % / 10 % ranges."""
    if fleet_hosts > 5000:
        return
    buckets, after = [], ""
    while True:
        page = api.get("/v1/hosts?limit=1000" + (f"&after={after}" if after else ""))
        buckets += [h["bucket"] for h in page["hosts"]]
        after = page.get("next", "")
        if not after:
            break
    buckets.sort()
    n = len(buckets)
    canary_n = min(n, max(2, fleet_hosts // 200, round(n * 0.01)))
    early_n = min(n - canary_n, max(5, fleet_hosts // 40, round(n * 0.10)))
    if canary_n < 1 or early_n < 1 or canary_n + early_n >= n:
        return
    c_hi = buckets[canary_n - 1] + 1
    e_hi = max(c_hi + 1, buckets[canary_n + early_n - 1] + 1)
    for name, rank, lo, hi, desc in [
            ("canary", 0, 0, c_hi, f"~1% of the fleet by bucket ({canary_n} hosts)"),
            ("early", 1, c_hi, e_hi, f"the next ~10% ({early_n} hosts)"),
            ("broad", 2, e_hi, 10000, "everyone else")]:
        api.call("PUT", f"/v1/rings/{name}", {"name": name, "rank": rank,
                                              "selector": {"buckets": [lo, hi]},
                                              "description": desc})


def make_policies(api, fleet_hosts, bake=(6, 6, 4)):
    # min_hosts scaled to the fleet: the canary holds ~1% of it.
    canary_min = max(2, fleet_hosts // 200)
    early_min = max(5, fleet_hosts // 40)
    broad_min = max(10, fleet_hosts // 10)
    # Installs the baseline release everywhere; its gate is lenient on purpose (with every stage at
    # 100% of its ring there is no control cohort, and a simulated background crash rate above
    # the gate's 1% prior would otherwise halt even the baseline).
    # Not paced (one wave per stage, "initial" above any ring here): the baseline is test set-up,
    # and under rise5x's compressed background a slow bootstrap collects enough background
    # crashes on its hosts to be halted against an empty control cohort.
    api.post("/v1/policies", {"name": "bootstrap", "stages": [
        # Its baseline floor (0.49) keeps the sequential test from ever failing it either: every
        # host is exposed until the last stage has offered it to all (the server's coverage
        # rule), and a large simulated fleet on a loaded box misses a few compressed heartbeats.
        {"ring": r, "percent": 100, "bake_s": 1, "min_hosts": 1, "pacing": {"initial": 10000000},
         "gate": {"alpha": 1e-9, "max_failure_rate": 1.0, "baseline_floor": 0.49}}
        for r in ("canary", "early", "broad")]})
    api.post("/v1/policies", {"name": "staged", "stages": [
        {"ring": "canary", "percent": 100, "bake_s": bake[0], "min_hosts": canary_min},
        {"ring": "early", "percent": 100, "bake_s": bake[1], "min_hosts": early_min},
        {"ring": "broad", "percent": 100, "bake_s": bake[2], "min_hosts": broad_min}]})
    # rise5x: judged by the sequential test alone against the control cohort (every host not on
    # the release). The absolute floor is off (max_failure_rate 1.0): with a compressed, high
    # background one crash among the 4 canary hosts would otherwise halt a good release too.
    # The first stage is the early ring (10%): a canary of 1-4 hosts cannot tell a 5x rise from
    # noise, and one whose only host crashed never becomes healthy, so it would wait forever.
    # The early ring bakes long enough for the test to see the rise.
    # The baseline ceiling (the highest control-cohort failure rate a gate accepts as background,
    # default 5 % per window) is raised to its maximum for the same reason: this compressed
    # background (~26 % of hosts crash within 30 s) stands for 0.5 %/h, and a gate capped at 5 %
    # would halt the healthy release of the noise scenario.
    lenient = {"max_failure_rate": 1.0, "baseline_ceiling": 0.49}
    api.post("/v1/policies", {"name": "rise5x", "stages": [
        {"ring": "early", "percent": 100, "bake_s": 45, "min_hosts": 5, "gate": lenient},
        # Half of broad only: a stage that takes the rest of the fleet leaves no control cohort,
        # and the server then judges against its 1% prior, which this compressed background
        # exceeds (a healthy release would be halted there: see the noise scenario).
        {"ring": "broad", "percent": 50, "bake_s": 5, "min_hosts": broad_min // 2, "gate": lenient}]})


def release(api, channel, data, notes):
    blob = api.post("/v1/blobs", raw=data)
    return api.post(f"/v1/channels/{channel}/releases", {"sha256": blob["sha256"], "notes": notes})


class Timeline:
    """Prints rollout events and exposure changes as they happen."""

    def __init__(self, api, rollout_id, t0):
        self.api = api
        self.id = rollout_id
        self.t0 = t0
        self.after = 0
        self.last_counts = None
        self.boot_loops = 0

    def stamp(self):
        return f"[{time.time() - self.t0:6.1f}s]"

    def poll(self):
        while True:
            events = self.api.get(f"/v1/events?rollout={self.id}&after={self.after}&limit=500")
            items = events.get("events", events) if isinstance(events, dict) else events
            if not items:
                break
            for e in items:
                self.after = max(self.after, e["id"])
                self.show(e)
            if len(items) < 500:
                break
        r = self.api.get(f"/v1/rollouts/{self.id}")
        counts = [(s["exposed"], s["applied"], s["healthy"], s["failed"], s["silent"]) for s in r["stages"]]
        if counts != self.last_counts:
            self.last_counts = counts
            parts = []
            for i, s in enumerate(r["stages"]):
                if s["state"] in ("waiting", "pending") and s["exposed"] == 0:
                    continue
                parts.append(f"{s['ring']}@{s['percent']:g}% {s['state']}: exposed {s['exposed']} "
                             f"applied {s['applied']} healthy {s['healthy']} failed {s['failed']} "
                             f"(silent {s['silent']})")
            say(f"  {self.stamp()} {r['state']:<11} stage {r['stage']} | " + " | ".join(parts))
        return r

    def show(self, e):
        kind = e["kind"]
        d = e.get("data") or {}
        if kind == "boot_loop_suspected":
            self.boot_loops += 1
            if self.boot_loops <= 3:
                say(f"  {self.stamp()} host {d.get('host_id', '?')[:8]} rebooted {d.get('uptime_s')} s ago "
                    "after applying: boot loop suspected")
            elif self.boot_loops == 4:
                say(f"  {self.stamp()} (more boot-loop events not shown)")
            return
        gate = d.get("gate") or {}
        figures = ""
        if gate:
            figures = (f" verdict={gate.get('verdict')} statistic={gate.get('statistic', 0):.2f}"
                       f" upper={gate.get('upper', 0):.2f} baseline={gate.get('baseline', 0):.4f}"
                       f" failure_rate={gate.get('failure_rate', 0):.3f}")
        c = d.get("counts") or {}
        if c:
            figures += (f" counts: applied {c.get('applied')} healthy {c.get('healthy')}"
                        f" failed {c.get('failed')} silent {c.get('silent')}")
        if "control_hosts" in d:
            figures += f" control {d.get('control_failed')}/{d.get('control_hosts')}"
        extra = ""
        if d.get("reason"):
            extra = f" — {d['reason']}"
        elif gate.get("reason"):
            extra = f" — {gate['reason']}"
        transition = f" {d['from']} -> {d['to']}" if "from" in d and "to" in d else ""
        say(f"  {self.stamp()} EVENT {kind}{transition} (by {e.get('actor')}){figures}{extra}")


def run_rollout(api, fleet, channel, version, policy, until, timeout, label):
    """Creates and starts a rollout, prints its timeline until `until(r)` holds; returns (r, t0)."""
    r = api.post("/v1/rollouts", {"channel": channel, "version": version, "policy": policy})
    t0 = time.time()
    say(f"--- {label}: rollout {r['id']} of {channel} v{version} with policy '{policy}'")
    api.post(f"/v1/rollouts/{r['id']}/start")
    tl = Timeline(api, r["id"], t0)
    deadline = t0 + timeout
    last_fleet = 0
    while True:
        r = tl.poll()
        if until(r):
            return r, t0
        if time.time() > deadline:
            raise ScenarioFailed(f"{label}: rollout {r['id']} still {r['state']} after {timeout} s")
        if time.time() - last_fleet > 5:
            last_fleet = time.time()
            s = fleet.status() or {}
            on = fleet.live_on(channel)
            say(f"  {tl.stamp()} fleet: {s.get('live', '?')} live, {s.get('silent_hosts', 0)} silent, "
                f"{s.get('crashes', 0)} crashes; on {channel}: "
                + ", ".join(f"v{v}={n}" for v, n in sorted(on.items())))
        time.sleep(0.5)


def finished(r):
    return r["state"] in ("completed", "rolled_back", "aborted", "halted")


def halted(r):
    return r["state"] in ("rolled_back", "aborted")


def wait_back_on_stable(fleet, channel, bad_version, since_ms, timeout=60):
    """Unix time (s) of the first fleet snapshot taken at or after since_ms (the halt, server
    time in ms) in which no live host runs bad_version; None at the deadline. fleetsim stamps
    each snapshot (time_ms) and writes one every 0.25 s, so the figure is that fine."""
    t = time.time()
    while time.time() - t < timeout:
        s = fleet.status() or {}
        at_ms = s.get("time_ms")
        if at_ms is not None and at_ms >= since_ms and fleet.live_on(channel, s).get(bad_version, 0) == 0:
            return at_ms / 1000
        time.sleep(0.1)
    return None


def summary(name, r, fleet_hosts, back_at, fleet):
    """Prints and returns the SUMMARY line: fields separated by '; ', each 'what value', times in
    s or 'n/a'. 'halt -> ... back on stable' is the rollback's reach (from the server's halt to
    the fleet snapshot in which no live host runs the release); 'first apply -> ...' adds the
    time the gate needed to halt."""
    exposed = r.get("exposed", sum(s["exposed"] for s in r["stages"]))
    pct = 100.0 * exposed / fleet_hosts
    first = r.get("first_apply")
    halt = r.get("halted")
    s = fleet.status() or {}
    to_halt = f"{(halt - first) / 1000:.1f} s" if first and halt else "n/a (not halted)"
    from_halt = from_first = "n/a"
    if halt and back_at is not None:
        from_halt = f"{max(0.0, back_at - halt / 1000):.2f} s"
        if first:
            from_first = f"{max(0.0, back_at - first / 1000):.1f} s"
    line = (f"SUMMARY {name}: state {r['state']} at stage {r['stage']} ({r['stages'][r['stage']]['ring']}); "
            f"hosts exposed {exposed} ({pct:.2f}% of {fleet_hosts}); first apply -> halt {to_halt}; "
            f"halt -> all live exposed hosts back on stable {from_halt}; "
            f"first apply -> all live exposed hosts back on stable {from_first}; "
            f"silent hosts {s.get('silent_hosts', 0)}, crashes {s.get('crashes', 0)}")
    say(line)
    RESULTS.append({"name": name, "state": r["state"], "stage": r["stage"],
                    "ring": r["stages"][r["stage"]]["ring"], "exposed": exposed,
                    "to_halt_s": (halt - first) / 1000 if first and halt else None,
                    "halt_reason": r.get("halt_reason", "")})
    return line


# Every SUMMARY of this invocation, for the --runs table.
RESULTS = []


# --------------------------------------------------------------------------- the scenarios
class Env:
    """One server + one fleet + rings, policies and a stable release 1."""

    # Compressed time: 2 s heartbeats while exposed (silence = 3 missed = ~7 s), healthy 3 s
    # after applying.
    # A host's evidence counts once it has been in contact 2 s before a rollout starts (the
    # server's default track record is an hour; Env waits out the 2 s after enrolling).
    COMPRESSED = ["--exposed-heartbeat-s", "2", "--healthy-after-s", "3", "--silence-intervals", "3",
                  "--poll-s", "10", "--heartbeat-s", "30", "--evidence-min-age-s", "2"]

    def __init__(self, args, workdir, models=(), from_content=False, background=0.0,
                 channels=(CHANNEL,), bake=(6, 6, 4), server_flags=(), timing=COMPRESSED,
                 fleet_extra=(), status_every=0.25, patience=1.0):
        self.args = args
        self.patience = patience  # multiplies the set-up timeouts (a large fleet, real intervals)
        self.server = Server(args.server_bin, workdir, list(timing) + list(server_flags))
        say(f"server at {self.server.url} (data in {self.server.data})")
        self.api = Api(self.server.url, ADMIN_TOKEN)
        make_rings(self.api)
        make_policies(self.api, args.hosts, bake)
        for ch in channels:
            self.api.post("/v1/channels", {"name": ch, "schema": schema("schema-weak.json")})
        # The whole simulated fleet enrolls at once: its token gets a rate of its own (the
        # server's default, --enroll-rate-per-min 1200, would spread 3 000 hosts over minutes).
        token = self.api.post("/v1/enrollment-tokens",
                              {"name": "fleetsim", "rate_per_min": 1000000})["token"]
        self.fleet = Fleet(args.fleetsim_bin, workdir, self.server.url, token, args.hosts, models,
                           from_content, background, seed=args.seed, extra=fleet_extra,
                           status_every=status_every)
        t = time.time()
        s = self.fleet.wait_enrolled(timeout=120 * patience)
        self.enroll_s = time.time() - t
        say(f"fleet: {s['enrolled']} hosts enrolled in {self.enroll_s:.1f} s")
        flags = list(timing) + list(server_flags)
        if "--evidence-min-age-s" in flags:
            # Every host polls at once after enrolling: past the track record, all of them count.
            time.sleep(float(flags[flags.index("--evidence-min-age-s") + 1]) + 1.0)
        fit_rings(self.api, args.hosts)
        rings = self.api.get("/v1/rings")
        rings = rings.get("rings", rings) if isinstance(rings, dict) else rings
        say("rings: " + ", ".join(f"{x['name']}={x.get('hosts', '?')} hosts" for x in rings))
        for ch in channels:
            rel = release(self.api, ch, content("v1-good.json", f"{ch}-1"), "baseline")
            r, _ = run_rollout(self.api, self.fleet, ch, rel["version"], "bootstrap", finished,
                               120 * patience, f"bootstrap {ch}")
            check(r["state"] == "completed", f"bootstrap of {ch} ended {r['state']}")
            self.wait_all_on(ch, rel["version"])

    def wait_all_on(self, channel, version, timeout=60):
        timeout *= self.patience
        t = time.time()
        while time.time() - t < timeout:
            s = self.fleet.status() or {}
            if self.fleet.live_on(channel).get(version, 0) >= s.get("live", 1 << 30):
                return
            time.sleep(0.25)
        raise ScenarioFailed(f"not every live host reached {channel} v{version}: {self.fleet.live_on(channel)}")

    def close(self):
        report = self.fleet.stop()
        self.server.stop()
        if report:
            say("fleetsim report: requests " + json.dumps(report.get("requests", {}))
                + " errors " + json.dumps(report.get("errors", {})))
        return report


def scenario_good(args, workdir):
    env = Env(args, workdir)
    try:
        rel = release(env.api, CHANNEL, content("v2-good.json", "good-2"), "twelve rules")
        r, _ = run_rollout(env.api, env.fleet, CHANNEL, rel["version"], "staged", finished, 150, "good release")
        check(r["state"] == "completed", f"the good release ended {r['state']}, not completed")
        check(all(s["state"] == "passed" for s in r["stages"]), "not every stage passed")
        env.wait_all_on(CHANNEL, rel["version"])
        summary("good", r, args.hosts, None, env.fleet)
        ch = env.api.get(f"/v1/channels/{CHANNEL}")
        check(ch.get("stable_version") == rel["version"], "the good release did not become stable")
    finally:
        env.close()


def halting_scenario(args, workdir, name, model, max_stage, halt_within_s=None, bake=(6, 6, 4),
                     policy="staged", background=0.0, from_content=False, sample="v2-good.json"):
    os.makedirs(workdir, exist_ok=True)
    env = Env(args, workdir, models=[f"{CHANNEL}@2={model}"] if model else [], background=background,
              from_content=from_content, bake=bake)
    try:
        rel = release(env.api, CHANNEL, content(sample, f"{name}-2"), f"the {name} release")
        check(rel["version"] == 2, "expected release 2")
        r, _ = run_rollout(env.api, env.fleet, CHANNEL, 2, policy, halted, 150, f"{name} release")
        back = wait_back_on_stable(env.fleet, CHANNEL, 2, r.get("halted") or 0)
        line = summary(name, r, args.hosts, back, env.fleet)
        check(r["stage"] <= max_stage,
              f"halted at stage {r['stage']} ({r['stages'][r['stage']]['ring']}), expected <= {max_stage}")
        check(back is not None, "live exposed hosts did not all return to stable")
        if halt_within_s is not None:
            check(r.get("first_apply") and r.get("halted"), "no first_apply/halted times")
            took = (r["halted"] - r["first_apply"]) / 1000
            check(took <= halt_within_s, f"halt took {took:.1f} s, expected <= {halt_within_s}")
        ch = env.api.get(f"/v1/channels/{CHANNEL}")
        check(ch.get("stable_version") == 1, "stable moved off release 1")
        rel2 = env.api.get(f"/v1/channels/{CHANNEL}/releases/2")
        check(rel2["state"] == "quarantined", f"release 2 is {rel2['state']}, not quarantined")
        return line
    finally:
        env.close()


def scenario_silent(args, workdir):
    halting_scenario(args, workdir, "silent", "silent:1", max_stage=0, halt_within_s=30)


def scenario_crash(args, workdir):
    halting_scenario(args, workdir, "crash", "crash:1", max_stage=0, halt_within_s=15)


def scenario_rise5x(args, workdir):
    # Background: B crashes per host per hour; the release adds 4B (5x in all). Compressed time:
    # a real background of 0.5%/h is scaled up (default 36/h, i.e. ~26% of hosts crash at least
    # once in 30 s) so that a stage of seconds sees what a real stage sees over days. The release
    # must be halted in its first ring (early, ~10% of the fleet), before it reaches broad.
    b = args.background_rate
    halting_scenario(args, workdir, "rise5x", f"crash-rate:{4 * b:g}", max_stage=0, background=b,
                     policy="rise5x")


def scenario_noise(args, workdir):
    """rise5x's control experiment: the same background, the same policy, a healthy release.
    It must complete, or rise5x's halt would prove nothing."""
    b = args.background_rate
    env = Env(args, workdir, background=b)
    try:
        rel = release(env.api, CHANNEL, content("v2-good.json", "noise-2"), "healthy, under noise")
        r, _ = run_rollout(env.api, env.fleet, CHANNEL, rel["version"], "rise5x", finished, 150,
                           "healthy release under background crashes")
        summary("noise", r, args.hosts, None, env.fleet)
        check(r["state"] == "completed", f"the healthy release ended {r['state']}, not completed")
    finally:
        env.close()


def background_rate_per_s(fleet, seconds):
    """Background crashes per second the fleet reports over the next `seconds` (its status file)."""
    a = fleet.status() or {}
    t = time.time()
    time.sleep(seconds)
    b = fleet.status() or {}
    return (b.get("background_crashes", 0) - a.get("background_crashes", 0)) / (time.time() - t)


def scenario_bgrise(args, workdir, rise=True):
    """A healthy release while the whole fleet's background crash rate rises 5x (every host, on
    the release or not: nothing the release did). The rise starts --rise-after s into the
    rollout (SIGUSR1 to fleetsim) and lasts until the end.

    Policy 'staged' with the gate's defaults (baseline_ceiling 5 %, max_failure_rate 20 %), bakes
    of 15/15/10 s, and a background of --bg-rate crashes per host per hour (default 0.6: about
    1 % of hosts crash within a stage's minute, the 0.5 %-per-window regime of bench/gate_eval;
    noise's 36/h would have 90 % of hosts crash within a stage once risen 5x, which says nothing).

    The gate compares the release's hosts with the control cohort (the hosts not on it), whose
    failures count from the start of the rollout: a rise that hits both raises both, and the aim
    is no halt. Once the control cohort's rate passes baseline_ceiling the gate errs towards
    halting (server/health/gate.hpp); a halt is then reported with its reason. Asserts that the
    rise happened (fleetsim's background rate is 5x) and that the rollout reached
    an end, not that it completed (the --runs table counts the halts).

    rise=False (scenario bgnormal) is its control experiment: the same fleet, background, policy
    and release without the rise; a halt there is a false halt and fails the scenario."""
    b = args.bg_rate
    name = "bgrise" if rise else "bgnormal"
    env = Env(args, workdir, background=b, bake=(15, 15, 10), fleet_extra=["--background-rise", "5"])
    try:
        before = background_rate_per_s(env.fleet, 3)
        rel = release(env.api, CHANNEL, content("v2-good.json", f"{name}-2"), f"healthy ({name})")
        r = env.api.post("/v1/rollouts", {"channel": CHANNEL, "version": rel["version"], "policy": "staged"})
        t0 = time.time()
        say(f"--- healthy release, {'a fleet-wide 5x rise' if rise else 'normal background'}: rollout "
            f"{r['id']} with policy 'staged'; background {before:.2f} crashes/s ({b:g}/host/h)")
        env.api.post(f"/v1/rollouts/{r['id']}/start")
        tl = Timeline(env.api, r["id"], t0)
        risen = None
        while True:
            r = tl.poll()
            if finished(r):
                break
            if rise and risen is None and time.time() - t0 >= args.rise_after:
                env.fleet.proc.send_signal(signal.SIGUSR1)
                risen = time.time()
                say(f"  {tl.stamp()} background rise on: every host's crash rate x5")
            check(time.time() - t0 < 300, f"rollout {r['id']} still {r['state']} after 300 s: "
                  f"{r.get('blocked') or r.get('waiting')}")
            time.sleep(0.5)
        during = background_rate_per_s(env.fleet, 5)
        fs = env.fleet.status() or {}
        say(f"  background {before:.2f} crashes/s before the rollout, {during:.2f} at its end; fleetsim's "
            f"rate now {fs.get('background_crash_rate_per_hour')}/host/h, {fs.get('background_crashes')} "
            f"background crashes in all")
        summary(name, r, args.hosts, None, env.fleet)
        if r["state"] != "completed":
            say(f"  the healthy release was halted: {r.get('halt_reason', '?')}")
        if rise:
            check(risen is not None, "the rollout ended before the rise was switched on")
            # fleetsim's own figure (exact); the measured rates above are Poisson counts over a
            # few seconds, shown, not asserted.
            check(fs.get("background_rise_on") is True
                  and abs(fs.get("background_crash_rate_per_hour", 0) - 5 * b) < 1e-9 * max(b, 1),
                  f"fleetsim's background did not rise 5x: {fs.get('background_crash_rate_per_hour')}")
        else:
            check(r["state"] == "completed", f"the healthy release ended {r['state']} (a false halt)")
    finally:
        env.close()


def scenario_bgnormal(args, workdir):
    scenario_bgrise(args, workdir, rise=False)


def scenario_incident(args, workdir):
    bad = content("v3-bad-21-fields.json", "incident")
    server = Server(args.server_bin, workdir, ["--exposed-heartbeat-s", "2", "--healthy-after-s", "3"])
    try:
        api = Api(server.url, ADMIN_TOKEN)
        sensor = os.path.abspath(args.sensor_bin)
        say("--- the 21-field release against the consumer's own check")
        api.post("/v1/channels", {"name": "sensor-checked", "schema": schema("schema-weak.json"),
                                  "validator": {"argv": [sensor, "--check", "{file}"], "timeout_s": 10}})
        blob = api.post("/v1/blobs", raw=bad)
        st, body = api.call("POST", "/v1/channels/sensor-checked/releases",
                            {"sha256": blob["sha256"], "notes": "template with 21 fields"}, ok=None)
        say(f"  validator (sample-sensor --check): HTTP {st}")
        err = (body or {}).get("error", {})
        out = ((err.get("details") or {}).get("command") or {}).get("output", "")
        for line in out.strip().splitlines():
            say(f"    | {line}")
        check(st == 422, f"the validator did not refuse the 21-field release (HTTP {st})")
        check("field 21" in out, "the validator's findings do not name field 21")
        say("--- the same content against the schema that pins the field count")
        api.post("/v1/channels", {"name": "sensor-pinned", "schema": schema("schema-pinned.json")})
        st, body = api.call("POST", "/v1/channels/sensor-pinned/releases",
                            {"sha256": blob["sha256"], "notes": "template with 21 fields"}, ok=None)
        say(f"  pinned schema: HTTP {st}")
        for f in ((body or {}).get("error", {}).get("details") or {}).get("findings", [])[:5]:
            say(f"    | {f.get('path')}: {f.get('message')}")
        check(st == 422, f"the pinned schema did not refuse the 21-field release (HTTP {st})")
        good = content("v1-good.json", "pinned-ok")
        blob_ok = api.post("/v1/blobs", raw=good)
        api.post("/v1/channels/sensor-checked/releases", {"sha256": blob_ok["sha256"], "notes": "ok"})
        say("  a consistent release passes both: HTTP 201")
    finally:
        server.stop()
    say("--- validator off (the incident's weak schema only): the canary must catch it")
    halting_scenario(args, os.path.join(workdir, "canary"), "incident", None, max_stage=0,
                     halt_within_s=30, from_content=True, sample="v3-bad-21-fields.json")


def scenario_demo(args, workdir):
    """One fleet: a good rollout, then the incident's content (fleet models from content)."""
    web = os.path.join(ROOT, "web")
    flags = ["--web-dir", web] if os.path.isfile(os.path.join(web, "index.html")) else []
    env = Env(args, workdir, from_content=True, bake=(8, 8, 5), server_flags=flags)
    try:
        rel = release(env.api, CHANNEL, content("v2-good.json", "demo-good"), "twelve rules")
        r, _ = run_rollout(env.api, env.fleet, CHANNEL, rel["version"], "staged", finished, 300,
                           "good release")
        check(r["state"] == "completed", f"the good release ended {r['state']}")
        env.wait_all_on(CHANNEL, rel["version"])
        summary("demo-good", r, args.hosts, None, env.fleet)
        say("")
        say("=== now the content of 19 July 2024: a template with 21 fields, a consumer with 20 values")
        bad = release(env.api, CHANNEL, content("v3-bad-21-fields.json", "demo-bad"),
                      "new named-pipe template (21 fields)")
        r, _ = run_rollout(env.api, env.fleet, CHANNEL, bad["version"], "staged", halted, 300, "bad release")
        back = wait_back_on_stable(env.fleet, CHANNEL, bad["version"], r.get("halted") or 0)
        summary("demo-bad", r, args.hosts, back, env.fleet)
        check(r["stage"] == 0, "the bad release left the canary")
        say("")
        say(f"API:       {env.server.url}/v1   (Authorization: Bearer {ADMIN_TOKEN})")
        say(f"OpenAPI:   {env.server.url}/v1/openapi.json")
        say(f"Dashboard: {env.server.url}/   Metrics: {env.server.url}/metrics")
        say(f"Events:    curl -H 'Authorization: Bearer {ADMIN_TOKEN}' {env.server.url}/v1/events")
        if args.keep_running:
            say(f"server and fleet keep running (data in {env.server.data}); Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except Stopped:
                say("stopping")
        else:
            say("stopping the fleet and the server (--keep-running keeps them up)")
    finally:
        env.close()


def proc_usage(pid):
    """(cpu seconds, rss MiB, peak rss MiB) of a live process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = hwm = 0.0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
        return cpu, rss, hwm
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0, 0.0


def scenario_scale(args, workdir):
    """A large fleet at the server's real intervals (300 s heartbeats, 5 s while exposed, silence
    after 3 missed, healthy 10 s after applying, 60 s polls), --long-poll of them holding long
    polls, a good release through canary / early / broad; then --soak seconds more. Every 5 s:
    heartbeats/s answered against the rate the server asks for, heartbeat gaps, the rollout's
    silent counts (every host is healthy, so any silent host is a false one) and the CPU and RSS
    of fleetsim and the server. Fails if a host was counted silent or the release did not
    complete."""
    extra = ["--connections", str(args.connections)]
    if args.long_poll is not None:
        extra += ["--long-poll", str(args.long_poll)]
    patience = max(1.0, args.hosts / 10000)
    t_start = time.time()
    bake = tuple(int(x) for x in args.bake.split(","))
    env = Env(args, workdir, timing=[], bake=bake, fleet_extra=extra, status_every=1,
              patience=patience,
              # Real intervals but a fleet enrolled just now: no track record asked for, and one
              # token enrolls the whole fleet as fast as it can.
              server_flags=["--max-long-poll-s", "60", "--evidence-min-age-s", "0",
                            "--enroll-rate-per-min", "0"])
    try:
        procs = {"fleetsim": env.fleet.proc.pid, "server": env.server.proc.pid}
        say(f"set-up (enroll + bootstrap) took {time.time() - t_start:.1f} s; enrollment "
            f"{env.enroll_s:.1f} s ({args.hosts / max(env.enroll_s, 1e-3):.0f} hosts/s)")
        rel = release(env.api, CHANNEL, content("v2-good.json", "scale-2"), "good, at scale")
        r = env.api.post("/v1/rollouts", {"channel": CHANNEL, "version": rel["version"],
                                         "policy": "staged"})
        env.api.post(f"/v1/rollouts/{r['id']}/start")
        say(f"--- good release: rollout {r['id']} with policy 'staged' (bake {args.bake} s)")
        t0 = time.time()
        prev = None
        samples = []
        done_at = None
        deadline = t0 + 300 * patience
        while True:
            time.sleep(5)
            now = time.time()
            st = env.fleet.status() or {}
            r = env.api.get(f"/v1/rollouts/{r['id']}")
            usage = {k: proc_usage(p) for k, p in procs.items()}
            hb = st.get("heartbeats", {})
            if prev is not None:
                dt = now - prev[0]
                rate = (hb.get("answered", 0) - prev[1].get("answered", 0)) / dt
                cpu = {k: (usage[k][0] - prev[2][k][0]) / dt * 100 for k in procs}
                sample = {"t": now - t0, "answered_per_s": rate, "asked_per_s": hb.get("rate_asked", 0),
                          "cpu": cpu, "usage": usage, "state": r["state"], "stage": r["stage"],
                          "silent": sum(x["silent"] for x in r["stages"]),
                          "exposed": sum(x["exposed"] for x in r["stages"])}
                samples.append(sample)
                say(f"  [{sample['t']:6.1f}s] {r['state']:<9} stage {r['stage']} exposed {sample['exposed']:>6} "
                    f"silent {sample['silent']} | heartbeats {rate:7.0f}/s answered, {sample['asked_per_s']:7.0f}/s "
                    f"asked; latency avg {hb.get('latency_ms_avg', 0)} max {hb.get('latency_ms_max', 0)} ms; "
                    f"gaps >2x {hb.get('gaps_over_2x', 0)} >3x {hb.get('gaps_over_3x', 0)}; overrun "
                    f"{hb.get('overrun', 0)}; backlog {st.get('pool_backlog', '?')} | fleetsim "
                    f"{cpu['fleetsim']:.0f}% cpu {usage['fleetsim'][1]:.0f} MiB | server "
                    f"{cpu['server']:.0f}% cpu {usage['server'][1]:.0f} MiB")
            prev = (now, hb, usage)
            if finished(r) and done_at is None:
                done_at = now
                say(f"  rollout {r['state']} after {now - t0:.1f} s; soaking {args.soak} s more")
            if done_at is not None and now - done_at >= args.soak:
                break
            if now > deadline:
                break
        st = env.fleet.status() or {}
        hb = st.get("heartbeats", {})
        pool = st.get("pool", {})
        silent_max = max((x["silent"] for x in samples), default=0)
        # The busy part: the samples in which the server asked for at least 80% of its peak rate.
        peak = max((x["asked_per_s"] for x in samples), default=0)
        busy = [x for x in samples if x["asked_per_s"] >= 0.8 * peak] or samples
        fs = max(samples, key=lambda x: x["usage"]["fleetsim"][2]) if samples else None
        say(f"SUMMARY scale: state {r['state']}; hosts {args.hosts}, long polls "
            f"{st.get('long_poll_hosts', '?')}, connections {args.connections}; enrollment "
            f"{env.enroll_s:.1f} s; peak exposed {max(x['exposed'] for x in samples)}; heartbeats/s "
            f"answered {min(x['answered_per_s'] for x in busy):.0f}-{max(x['answered_per_s'] for x in busy):.0f} "
            f"while asked {min(x['asked_per_s'] for x in busy):.0f}-{peak:.0f} ({len(busy)} samples of 5 s); heartbeat latency avg {hb.get('latency_ms_avg')} "
            f"max {hb.get('latency_ms_max')} ms; gaps >2x {hb.get('gaps_over_2x')} >3x {hb.get('gaps_over_3x')} "
            f"(max {hb.get('gap_intervals_max', 0):.2f} intervals); overrun {hb.get('overrun')}; "
            f"queue wait avg {pool.get('wait_ms_avg')} max {pool.get('wait_ms_max')} ms, expired "
            f"{pool.get('expired_in_queue')}; silent hosts counted {silent_max}; fleetsim cpu "
            f"{sum(x['cpu']['fleetsim'] for x in busy) / len(busy):.0f}% avg, rss peak "
            f"{fs['usage']['fleetsim'][2] if fs else 0:.0f} MiB; server cpu "
            f"{sum(x['cpu']['server'] for x in busy) / len(busy):.0f}% avg, rss peak "
            f"{max(x['usage']['server'][2] for x in samples):.0f} MiB")
        check(silent_max == 0, f"{silent_max} healthy hosts were counted silent")
        check(r["state"] == "completed", f"the good release ended {r['state']}, not completed")
    finally:
        env.close()


SCENARIOS = {
    "good": scenario_good,
    "silent": scenario_silent,
    "crash": scenario_crash,
    "rise5x": scenario_rise5x,
    "noise": scenario_noise,
    "bgrise": scenario_bgrise,
    "bgnormal": scenario_bgnormal,
    "incident": scenario_incident,
    "demo": scenario_demo,
    "scale": scenario_scale,
}


def print_runs_table(args):
    """The --runs table: per SUMMARY name, how many runs halted / completed, the hosts exposed at
    the halt and the time from the first apply to the halt (median / max over the halted runs)."""
    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else None

    say("")
    say(f"RESULT ({args.hosts} hosts, {args.runs} runs per scenario, seeds {args.seed - args.runs + 1}.."
        f"{args.seed})")
    say("| scenario | hosts | runs | halted | completed | other | halted in | exposed at halt (median / max) "
        "| first apply -> halt s (median / max) |")
    say("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for name in dict.fromkeys(x["name"] for x in RESULTS):
        rs = [x for x in RESULTS if x["name"] == name]
        halted_runs = [x for x in rs if x["state"] in ("rolled_back", "aborted")]
        done = [x for x in rs if x["state"] == "completed"]
        rings = ", ".join(f"{k} {v}" for k, v in sorted(
            {ring: sum(1 for x in halted_runs if x["ring"] == ring) for ring in
             {x["ring"] for x in halted_runs}}.items())) or "-"
        exp = [x["exposed"] for x in halted_runs]
        took = [x["to_halt_s"] for x in halted_runs if x["to_halt_s"] is not None]
        say(f"| {name} | {args.hosts} | {len(rs)} | {len(halted_runs)} | {len(done)} | "
            f"{len(rs) - len(halted_runs) - len(done)} | {rings} | "
            + (f"{med(exp)} / {max(exp)}" if exp else "-") + " | "
            + (f"{med(took):.1f} / {max(took):.1f}" if took else "-") + " |")
    for x in RESULTS:
        if x["state"] in ("rolled_back", "aborted") and x["name"] in ("noise", "bgrise", "bgnormal", "good"):
            say(f"  {x['name']} run {x.get('run')} (seed {x.get('seed')}): halted: {x['halt_reason']}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="all",
                   help="comma-separated scenarios, or all (" + ", ".join(SCENARIOS) + ")")
    p.add_argument("scenarios", nargs="*", help="more scenarios, as positional names")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    p.add_argument("--server-bin")
    p.add_argument("--fleetsim-bin")
    p.add_argument("--sensor-bin")
    p.add_argument("--hosts", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--background-rate", type=float, default=36.0,
                   help="rise5x scenario: background crashes per host per hour (compressed time)")
    p.add_argument("--bg-rate", type=float, default=0.6,
                   help="bgrise/bgnormal: background crashes per host per hour before the rise")
    p.add_argument("--rise-after", type=float, default=5.0,
                   help="bgrise: seconds into the rollout when the fleet-wide rise starts")
    p.add_argument("--runs", type=int, default=1,
                   help="run each scenario this many times (seeds --seed, --seed+1, ...) and print a "
                        "RESULT table")
    p.add_argument("--long-poll", type=int, help="scale: hosts holding long polls (fleetsim's default)")
    p.add_argument("--connections", type=int, default=32, help="scale: fleetsim's pooled connections")
    p.add_argument("--bake", default="30,30,90",
                   help="scale: bake seconds of canary,early,broad (broad long enough for every "
                        "host to poll, so the whole fleet heartbeats at the exposed rate)")
    p.add_argument("--soak", type=float, default=60, help="scale: seconds to keep measuring after the rollout")
    p.add_argument("--keep-running", action="store_true", help="demo: keep the server up at the end")
    p.add_argument("--keep-dirs", action="store_true", help="keep the temporary data directories")
    args = p.parse_args()
    args.server_bin = args.server_bin or os.path.join(args.build_dir, "server", "ringfence-server")
    args.fleetsim_bin = args.fleetsim_bin or os.path.join(args.build_dir, "fleetsim", "fleetsim")
    args.sensor_bin = args.sensor_bin or os.path.join(args.build_dir, "fleetsim", "sample-sensor")
    for b in (args.server_bin, args.fleetsim_bin, args.sensor_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"scenarios: {b} is not built")
    names = []
    for part in args.scenario.split(",") + list(args.scenarios):
        part = part.strip()
        if part == "all":
            names += [n for n in SCENARIOS if n not in ("demo", "scale")]
        elif part:
            names.append(part)
    for name in names:
        if name not in SCENARIOS:
            sys.exit(f"scenarios: unknown scenario '{name}' ({', '.join(SCENARIOS)})")
    signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGHUP, on_stop_signal)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, on_stop_signal)
    failed = []
    seed0 = args.seed
    for name in names:
        for run in range(args.runs):
            args.seed = seed0 + run
            workdir = tempfile.mkdtemp(prefix=f"ringfence-{name}-")
            label = f"{name} (run {run + 1} of {args.runs}, seed {args.seed})" if args.runs > 1 else name
            say(f"===== scenario {label} ({args.hosts} hosts; logs in {workdir})")
            before = len(RESULTS)
            try:
                SCENARIOS[name](args, workdir)
                say(f"===== scenario {label}: PASSED")
            except ScenarioFailed as e:
                say(f"===== scenario {label}: FAILED: {e}")
                failed.append(label)
                args.keep_dirs = True
            except Stopped as e:
                stop_all()
                say(f"===== scenario {label}: stopped by {e}; its server and fleet are stopped")
                sys.exit(128 + e.signum)
            finally:
                stop_all()
                if not args.keep_dirs:
                    shutil.rmtree(workdir, ignore_errors=True)
            for res in RESULTS[before:]:
                res["run"], res["seed"] = run + 1, args.seed
    if args.runs > 1:
        print_runs_table(args)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
