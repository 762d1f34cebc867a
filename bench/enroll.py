#!/usr/bin/env python3
"""Enrolls N hosts through the real agent API (parallel keep-alive connections) and writes
their credentials and current ETags to a Lua table for wrk. Prints progress."""
import http.client
import json
import sys
import threading
import uuid

port, token, n, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
workers = 16
creds = [None] * n
lock = threading.Lock()
done = [0]


def work(k):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(k, n, workers):
        hid = str(uuid.UUID(int=(0x5EED << 100) + i, version=4))
        c.request("POST", "/v1/agent/enroll", json.dumps({"enrollment_token": token, "host_id": hid,
                  "labels": {"os": "linux", "site": "fra1"}, "agent_version": "bench"}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        cred = json.loads(r.read())["credential"]
        c.request("GET", "/v1/agent/desired", headers={"Authorization": "Bearer " + cred})
        r = c.getresponse()
        r.read()
        creds[i] = (cred, r.getheader("ETag"))
        with lock:
            done[0] += 1
            if done[0] % 20000 == 0:
                print(f"  enrolled {done[0]}/{n}", flush=True)


ts = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
[t.start() for t in ts]
[t.join() for t in ts]
with open(out, "w") as f:
    f.write("hosts = {\n")
    for cred, etag in creds:
        f.write('{"%s", %s},\n' % (cred, json.dumps(etag)))
    f.write("}\n")
