#!/usr/bin/env python3
"""api: the operator and agent API of a real ringfence-server over real sockets, with hostile
input. Every bad request must get its 4xx with the JSON error shape, and must change nothing
(the event log and the listed objects are compared before and after).

Usage: api_test.py BIN_DIR        prints "api: N passed, M failed"; exits 1 on any failure.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
ADMIN = "api-test-admin-token-0123456789"
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))


def start(data_dir, env_token=True):
    env = dict(os.environ)
    if env_token:
        env["RINGFENCE_ADMIN_TOKEN"] = ADMIN
    else:
        env.pop("RINGFENCE_ADMIN_TOKEN", None)
    p = subprocess.Popen([f"{BIN}/server/ringfence-server", "--data-dir", data_dir, "--listen",
                          "127.0.0.1:0", "--no-access-log"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env, text=True)
    line = p.stdout.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        raise SystemExit(f"server did not start: {line!r}")
    return p, int(m.group(1))


def req(port, method, path, body=None, token=ADMIN, ctype="application/json", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if body is not None:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if ctype:
            h["Content-Type"] = ctype
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        doc = data
    return r.status, doc, r


def raw(port, payload):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(payload)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and len(out) > 2000:
                break
    except socket.timeout:
        pass
    s.close()
    m = re.match(rb"HTTP/1\.[01] (\d+)", out)
    return int(m.group(1)) if m else 0


def is_error(doc):
    return isinstance(doc, dict) and isinstance(doc.get("error"), dict) and \
        re.fullmatch(r"[a-z_]+", doc["error"].get("code", "")) and doc["error"].get("message")


def state(port):
    """What bad requests must not change."""
    ev = req(port, "GET", "/v1/events?limit=1000")[1]["events"]
    return (len(ev), req(port, "GET", "/v1/rings")[1], req(port, "GET", "/v1/channels")[1],
            req(port, "GET", "/v1/policies")[1], req(port, "GET", "/v1/rollouts")[1],
            req(port, "GET", "/v1/tokens")[1])


def bad(port, name, want, method, path, body=None, **kw):
    before = state(port)
    status, doc, _ = req(port, method, path, body, **kw)
    after = state(port)
    ok = status == want and (method == "HEAD" or is_error(doc)) and before == after
    check(f"{name} -> {want}", ok, f"got {status} {str(doc)[:200]}; state changed: {before != after}")


def main():
    tmp = tempfile.mkdtemp(prefix="ringfence-api-")
    p, port = start(tmp + "/data")
    try:
        # --- a release engineer's walk, with curl-shaped requests
        for n, rank, sel in [("canary", 0, {"buckets": [0, 100]}), ("early", 1, {"labels": "os=windows,site in (fra1,ams2)"}),
                             ("broad", 2, {"buckets": [100, 10000]})]:
            s, d, _ = req(port, "POST", "/v1/rings", {"name": n, "rank": rank, "selector": sel})
            check(f"create ring {n}", s == 201 and d["name"] == n, f"{s} {d}")
        s, d, _ = req(port, "POST", "/v1/channels", {"name": "detections", "schema": {"type": "object", "required": ["rules"]}})
        check("create channel", s == 201, f"{s} {d}")
        content = b'{"rules":[1,2,3]}'
        s, blob, _ = req(port, "POST", "/v1/blobs", content, ctype="application/octet-stream")
        check("upload blob", s == 201 and blob["size"] == len(content), f"{s} {blob}")
        sha = blob["sha256"]
        s, d, r = req(port, "GET", f"/v1/blobs/{sha}", headers={"Range": "bytes=2-6"})
        check("blob range 206", s == 206 and r.getheader("Content-Range") == f"bytes 2-6/{len(content)}" and d is not None, f"{s}")
        s, d, r = req(port, "GET", f"/v1/blobs/{sha}", headers={"Range": "bytes=999-"})
        check("blob range past the end 416", s == 416, f"{s}")
        s, d, r = req(port, "GET", f"/v1/blobs/{sha}", headers={"If-None-Match": f'"{sha}"'})
        check("blob strong etag 304", s == 304, f"{s}")
        s, rel, _ = req(port, "POST", "/v1/channels/detections/releases", {"sha256": sha, "notes": "v1"})
        check("create release", s == 201 and rel["version"] == 1 and rel["state"] == "validated", f"{s} {rel}")
        s, d, _ = req(port, "POST", "/v1/policies", {"name": "std", "stages": [
            {"ring": "canary", "bake_s": 60, "min_hosts": 1}, {"ring": "early", "approval": "manual"}, {"ring": "broad"}]})
        check("create policy", s == 201, f"{s} {d}")
        s, ro, _ = req(port, "POST", "/v1/rollouts", {"channel": "detections", "version": 1, "policy": "std"})
        check("create rollout (pending)", s == 201 and ro["state"] == "pending", f"{s} {ro}")
        rid = ro["id"]
        for action, want in [("start", "running"), ("pause", "paused"), ("resume", "running")]:
            s, d, _ = req(port, "POST", f"/v1/rollouts/{rid}/{action}")
            check(f"rollout {action}", s == 200 and d["state"] == want, f"{s} {d}")
        s, d, _ = req(port, "POST", "/v1/rollouts/preview", {"policy": "std"})
        check("preview", s == 200 and len(d["stages"]) == 3, f"{s}")
        s, tok, _ = req(port, "POST", "/v1/tokens", {"name": "viewer1", "role": "viewer"})
        check("create viewer token", s == 201, f"{s}")
        viewer = tok["token"]
        s, tok, _ = req(port, "POST", "/v1/tokens", {"name": "op1", "role": "operator"})
        operator = tok["token"]
        s, tok, _ = req(port, "POST", "/v1/tokens", {"name": "rel1", "role": "release"})
        release = tok["token"]

        # --- malformed, hostile and unauthorised requests: 4xx, JSON error, nothing changed
        bad(port, "malformed JSON", 400, "POST", "/v1/rings", "{bad")
        bad(port, "JSON array body", 400, "POST", "/v1/rings", "[]")
        bad(port, "wrong type", 400, "POST", "/v1/rings", {"name": "x", "rank": "zero", "selector": {"buckets": [0, 1]}})
        bad(port, "unknown field", 400, "POST", "/v1/rings", {"name": "x", "rank": 0, "selector": {"buckets": [0, 1]}, "extra": 1})
        bad(port, "bad selector", 400, "POST", "/v1/rings", {"name": "x", "rank": 0, "selector": {"buckets": [5, 5]}})
        bad(port, "bad label expression", 400, "POST", "/v1/rings", {"name": "x", "rank": 0, "selector": {"labels": "os in (a"}})
        bad(port, "bad name", 400, "POST", "/v1/rings", {"name": "../etc", "rank": 0, "selector": {"buckets": [0, 1]}})
        bad(port, "deep nesting", 400, "POST", "/v1/rings", "[" * 5000 + "]" * 5000)
        bad(port, "huge number", 400, "POST", "/v1/rollouts", {"channel": "detections", "version": 1e300, "policy": "std"})
        bad(port, "wrong content type", 415, "POST", "/v1/rings", {"name": "x"}, ctype="text/plain")
        bad(port, "duplicate ring", 409, "POST", "/v1/rings", {"name": "canary", "rank": 0, "selector": {"buckets": [0, 1]}})
        bad(port, "no token", 401, "POST", "/v1/rings", {"name": "x", "rank": 0, "selector": {"buckets": [0, 1]}}, token=None)
        bad(port, "unknown token", 401, "GET", "/v1/rings", token="rf_not-a-token")
        bad(port, "viewer cannot create rings", 403, "POST", "/v1/rings", {"name": "x", "rank": 0, "selector": {"buckets": [0, 1]}}, token=viewer)
        bad(port, "operator cannot create releases", 403, "POST", "/v1/channels/detections/releases", {"sha256": sha}, token=operator)
        bad(port, "release cannot create tokens", 403, "POST", "/v1/tokens", {"name": "x", "role": "admin"}, token=release)
        bad(port, "path trick in ring name", 400, "GET", "/v1/rings/..%2f..")
        bad(port, "path trick in blob id", 404, "GET", "/v1/blobs/../../etc/passwd")
        bad(port, "non-hex blob id", 400, "GET", "/v1/blobs/" + "z" * 64)
        bad(port, "unknown blob", 404, "GET", "/v1/blobs/" + "0" * 64)
        bad(port, "release of unknown content", 404, "POST", "/v1/channels/detections/releases", {"sha256": "0" * 64})
        bad(port, "content failing the schema", 422, "POST", "/v1/channels/detections/releases",
            {"sha256": req(port, "POST", "/v1/blobs", b'{"nope":1}', ctype="application/octet-stream")[1]["sha256"]})
        req(port, "POST", "/v1/channels", {"name": "other"})
        req(port, "POST", "/v1/channels/other/releases", {"sha256": sha})
        pending = req(port, "POST", "/v1/rollouts", {"channel": "other", "version": 1, "policy": "std"})[1]["id"]
        bad(port, "illegal transition", 409, "POST", f"/v1/rollouts/{pending}/pause")
        bad(port, "second active rollout", 409, "POST", "/v1/rollouts", {"channel": "detections", "version": 1, "policy": "std"})
        bad(port, "skip without reason", 400, "POST", f"/v1/rollouts/{rid}/skip", {"to": 2})
        bad(port, "unknown rollout", 404, "GET", "/v1/rollouts/999")
        bad(port, "bad rollout id", 400, "GET", "/v1/rollouts/abc")
        bad(port, "bad query parameter", 400, "GET", "/v1/hosts?limit=-5")
        bad(port, "unknown route", 404, "GET", "/v1/nothing")
        s, d, r = req(port, "DELETE", "/v1/rings")
        check("wrong method -> 405 with Allow", s == 405 and "GET" in (r.getheader("Allow") or ""), f"{s}")
        s, d, _ = req(port, "POST", f"/v1/rollouts/{pending}/resume")
        check("409 message names the current state", s == 409 and "pending" in d["error"]["message"], f"{d}")
        before = state(port)
        s = raw(port, b"POST /v1/rings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer " +
                ADMIN.encode() + b"\r\nContent-Length: 2000000\r\n\r\n" + b"{" * 1000)
        check("oversized JSON body -> 413", s == 413 and state(port) == before, f"{s}")
        s = raw(port, b"GET /v1/rings HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        check("oversized headers -> 431", s == 431, f"{s}")
        s = raw(port, b"GARBAGE\r\n\r\n")
        check("malformed request line -> 400", s == 400, f"{s}")

        # --- agent API
        s, d, _ = req(port, "POST", "/v1/enrollment-tokens", {"name": "fleet"})
        etok = d["token"]
        hid = "0e3b7a2c-1111-4222-8333-444455556666"
        s, d, _ = req(port, "POST", "/v1/agent/enroll", {"enrollment_token": etok, "host_id": hid, "labels": {"os": "linux"}, "agent_version": "t"}, token=None)
        check("enroll", s == 200 and d["credential"].startswith(hid + "."), f"{s} {d}")
        cred = d["credential"]
        s, d, r = req(port, "GET", "/v1/agent/desired", token=cred)
        check("desired 200 with ETag", s == 200 and r.getheader("ETag") == f'"{d["etag"]}"', f"{s}")
        s, _, _ = req(port, "GET", "/v1/agent/desired", token=cred, headers={"If-None-Match": f'"{d["etag"]}"'})
        check("desired 304 when unchanged", s == 304, f"{s}")
        s, _, _ = req(port, "POST", "/v1/agent/heartbeat", {"boot_id": "b", "uptime_s": 5, "channels": {}}, token=cred)
        check("heartbeat 204", s == 204, f"{s}")
        s, _, _ = req(port, "POST", "/v1/agent/reports", [{"kind": "crash", "time": 1, "boot_id": "b", "detail": {}}], token=cred)
        check("reports 202", s == 202, f"{s}")
        bad(port, "enroll with a wrong token", 401, "POST", "/v1/agent/enroll", {"enrollment_token": "x", "host_id": hid, "labels": {}}, token=None)
        bad(port, "enroll with a bad host id", 400, "POST", "/v1/agent/enroll", {"enrollment_token": etok, "host_id": "HOST; rm -rf /", "labels": {}}, token=None)
        bad(port, "agent route with an operator token", 401, "GET", "/v1/agent/desired")
        bad(port, "forged host credential", 401, "GET", "/v1/agent/desired", token=hid + ".0000")
        bad(port, "heartbeat of the wrong shape", 400, "POST", "/v1/agent/heartbeat", {"boot_id": 5}, token=cred)
        bad(port, "unknown report kind", 400, "POST", "/v1/agent/reports", [{"kind": "reboot", "time": 1, "boot_id": "b"}], token=cred)
        bad(port, "too many reports", 413, "POST", "/v1/agent/reports", [{"kind": "crash", "time": i, "boot_id": "b"} for i in range(300)], token=cred)

        # --- service endpoints
        s, d, _ = req(port, "GET", "/v1/openapi.json", token=None)
        paths = d.get("paths", {}) if isinstance(d, dict) else {}
        check("openapi lists the routes", s == 200 and all(x in paths for x in ["/v1/rings", "/v1/rollouts/{id}/skip", "/v1/agent/desired"]), f"{s}")
        s, d, _ = req(port, "GET", "/v1/signing-key", token=None)
        with open(tmp + "/data/signing.pub") as f:
            check("signing.pub matches /v1/signing-key", s == 200 and d["public_key"] == f.read().strip(), f"{d}")
        check("healthz and readyz", req(port, "GET", "/healthz", token=None)[0] == 200 and req(port, "GET", "/readyz", token=None)[0] == 200)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            code = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            code = -1
    check("SIGTERM stops the server cleanly (exit 0)", code == 0, f"exit {code}")

    # --- restart on the same data dir keeps everything
    p, port = start(tmp + "/data")
    try:
        rings = [r["name"] for r in req(port, "GET", "/v1/rings")[1]["rings"]]
        ro = req(port, "GET", f"/v1/rollouts/{rid}")[1]
        check("restart keeps rings, tokens and rollouts", rings == ["canary", "early", "broad"] and ro["state"] == "running" and
              req(port, "GET", "/v1/rings", token=viewer)[0] == 200, f"{rings} {ro.get('state')}")
    finally:
        p.kill()
        p.wait()
    # --- without RINGFENCE_ADMIN_TOKEN the admin token is written 0600
    p, port = start(tmp + "/fresh", env_token=False)
    try:
        path = tmp + "/fresh/admin.token"
        mode = os.stat(path).st_mode & 0o777
        with open(path) as f:
            tok = f.read().strip()
        check("admin.token is 0600 and works", mode == 0o600 and req(port, "GET", "/v1/tokens", token=tok)[0] == 200, oct(mode))
    finally:
        p.kill()
        p.wait()

    passed = sum(1 for r in results if r)
    print(f"api: {passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


sys.exit(main())
