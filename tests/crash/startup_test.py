#!/usr/bin/env python3
"""Start-up of a real ringfence-server: private files, a refused open key, a full disk.

  - a fresh data dir is 0700; the database (and its -wal/-shm), signing.key and admin.token are
    0600; files an older version left open are tightened at start;
  - a signing key others can read is refused with one clear line (exit status 1);
  - on a full disk (the server runs with RLIMIT_FSIZE = 1 byte: the kernel refuses every write
    past the first byte of any file, the way a full disk refuses new blocks) the server still
    starts, writes nothing it already has (signing.pub is not rewritten), answers reads and
    agents' polls, and answers writes 503 with the JSON error shape; with space back, writes
    work again.

  startup_test.py --server-bin build/server/ringfence-server

python3 standard library only; exit status 0 when every check held.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid


class Failed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failed(msg)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def call(base, method, path, token=None, body=None):
    headers = {"Authorization": "Bearer " + token} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    return status, (json.loads(text) if text else None)


def full_disk():
    # In the child before exec: SIGXFSZ ignored (a refused write fails with EFBIG instead of
    # killing the process; an ignored disposition survives exec), then a 1-byte file size limit.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


class Server:
    def __init__(self, binary, data, log, env=None, disk_full=False):
        e = dict(os.environ)
        e.pop("RINGFENCE_ADMIN_TOKEN", None)
        e.update(env or {})
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [binary, "--data-dir", data, "--listen", "127.0.0.1:0", "--no-access-log",
                 "--no-web"], stdout=subprocess.PIPE, stderr=err, env=e,
                preexec_fn=full_disk if disk_full else None)
        line = self.proc.stdout.readline()
        self.base = None
        if b"listening on" in line:
            self.base = "http://" + line.decode().strip().split("listening on ", 1)[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def private_files(data):
    db = os.path.join(data, "ringfence.db")
    check(mode(data) == 0o700, f"data dir is {mode(data):04o}, want 0700")
    for p in [db, db + "-wal", db + "-shm", os.path.join(data, "signing.key"),
              os.path.join(data, "admin.token")]:
        if os.path.exists(p):
            check(mode(p) & 0o077 == 0, f"{os.path.basename(p)} is {mode(p):04o}, want 0600")
    check(os.path.exists(db), "no database")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server-bin", required=True)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rf-startup-")
    data = os.path.join(work, "data")
    log = os.path.join(work, "server.log")
    servers = []
    ok = False
    try:
        # 1. Fresh: everything private.
        s = Server(args.server_bin, data, log)
        servers.append(s)
        check(s.base, f"the server did not start (see {log})")
        token = open(os.path.join(data, "admin.token")).read().strip()
        private_files(data)
        # State to read later: a channel, a host and its credential.
        check(call(s.base, "POST", "/v1/channels", token, {"name": "det"})[0] in (200, 201),
              "channel")
        st, enr = call(s.base, "POST", "/v1/enrollment-tokens", token, {"name": "fleet"})
        check(st in (200, 201), "enrollment token")
        host = str(uuid.uuid4())
        st, en = call(s.base, "POST", "/v1/agent/enroll", None,
                      {"enrollment_token": enr["token"], "host_id": host, "labels": {},
                       "agent_version": "t"})
        check(st == 200, f"enroll -> {st}")
        cred = en["credential"]
        private_files(data)
        s.stop()
        print("ok: a fresh data dir is 0700, its database, -wal, -shm, key and token 0600")

        # 2. Files an older version left open are tightened.
        os.chmod(data, 0o755)
        os.chmod(os.path.join(data, "ringfence.db"), 0o644)
        os.chmod(os.path.join(data, "admin.token"), 0o644)
        s = Server(args.server_bin, data, log)
        servers.append(s)
        check(s.base, f"the server did not start (see {log})")
        private_files(data)
        s.stop()
        print("ok: a data dir and database left open (0755/0644) are made private at start")

        # 3. A signing key others can read is refused, in one line.
        key = os.path.join(data, "signing.key")
        os.chmod(key, 0o644)
        before = os.path.getsize(log)
        s = Server(args.server_bin, data, log)
        servers.append(s)
        check(s.base is None, "the server started with a signing key readable by others")
        code = s.proc.wait(15)
        check(code == 1, f"exit status {code}, want 1")
        with open(log, "rb") as f:
            f.seek(before)
            lines = [l for l in f.read().decode().splitlines() if "readable by others" in l]
        check(len(lines) == 1 and "chmod 600" in lines[0], f"want one clear line, got {lines}")
        os.chmod(key, 0o600)
        print("ok: refused: " + lines[0].strip())

        # 4. A full disk: starts, writes nothing it has, serves reads and agents, 503 on writes.
        pub = os.path.join(data, "signing.pub")
        pub_before = os.stat(pub)
        s = Server(args.server_bin, data, log, disk_full=True)
        servers.append(s)
        check(s.base, f"the server did not start on a full disk (see {log})")
        pub_after = os.stat(pub)
        check((pub_after.st_ino, pub_after.st_mtime_ns) == (pub_before.st_ino, pub_before.st_mtime_ns),
              "signing.pub was written again")
        st, chans = call(s.base, "GET", "/v1/channels", token)
        check(st == 200 and any(c["name"] == "det" for c in chans["channels"]),
              f"reads on a full disk: {st} {chans}")
        st, _ = call(s.base, "GET", "/v1/agent/desired", cred)
        check(st == 200, f"an agent's poll on a full disk -> {st}")
        st, err = call(s.base, "POST", "/v1/tokens", token, {"name": "ci", "role": "viewer"})
        check(st == 503 and err and err["error"]["code"].startswith("storage"),
              f"a write on a full disk -> {st} {err}")
        st, err = call(s.base, "POST", "/v1/agent/heartbeat", cred,
                       {"boot_id": "b1", "uptime_s": 5, "channels": {}})
        check(st == 503, f"a state-changing heartbeat on a full disk -> {st} {err}")
        s.stop()
        print("ok: on a full disk the server starts, serves reads and polls, answers writes "
              f"503 ({err['error']['code']})")

        # 5. Space is back: writes work.
        s = Server(args.server_bin, data, log)
        servers.append(s)
        check(s.base, f"the server did not start (see {log})")
        st, _ = call(s.base, "POST", "/v1/tokens", token, {"name": "ci", "role": "viewer"})
        check(st in (200, 201), f"a write with space back -> {st}")
        st, _ = call(s.base, "POST", "/v1/agent/heartbeat", cred,
                     {"boot_id": "b1", "uptime_s": 5, "channels": {}})
        check(st == 204, f"the heartbeat again -> {st}")
        s.stop()
        print("ok: with space back the same writes succeed")
        ok = True
        return 0
    except Failed as e:
        print(f"FAILED: {e} (server log: {log})")
        return 1
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    sys.exit(main())
