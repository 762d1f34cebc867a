# A stand-in for ringfence-server's agent API, for measuring the agent's footprint and for
# manual smoke tests when the real server is not at hand. It signs one 3 MB release with a fresh
# Ed25519 key, serves it with Range support and holds long polls for the requested wait.
#   python3 tests/agent/footprint_server.py PUBKEY_OUT [BLOB_FILE]   -> "listening on 127.0.0.1:PORT"
# Needs python3-cryptography. Not used by CTest.
import base64, hashlib, json, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

key = Ed25519PrivateKey.generate()
pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
open(sys.argv[1], "w").write(base64.b64encode(pub).decode())
blob = (b"x" * 1000 + b"\n") * 3000 if len(sys.argv) < 3 else open(sys.argv[2], "rb").read()
sha = hashlib.sha256(blob).hexdigest()
now = int(time.time())
manifest = {"channel": "rules", "created": now, "expires": now + 86400, "sha256": sha, "size": len(blob), "version": 1}
canon = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
sig = base64.b64encode(key.sign(canon)).decode()
key_id = hashlib.sha256(pub).hexdigest()[:16]
channels = [{"channel": "rules", "version": 1, "sha256": sha, "size": len(blob), "url": "/v1/blobs/" + sha,
             "manifest": manifest, "signature": sig, "key_id": key_id}]
hosts = {}  # host_id -> the signed desired state (README: "The desired state is signed")

def desired_for(host_id):
    if host_id not in hosts:
        signed = {"host_id": host_id, "generation": int(time.time() * 1e6), "issued": now, "expires": now + 86400,
                  "channels": channels, "known_bad": [], "heartbeat_s": 5, "poll_s": 30, "key_set_version": 0}
        canon_d = json.dumps(signed, separators=(",", ":"), sort_keys=True).encode()
        hosts[host_id] = dict(signed, etag="e1", key_id=key_id, signature=base64.b64encode(key.sign(canon_d)).decode())
    return hosts[host_id]
log = open(sys.argv[1] + ".requests", "a")

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers: self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); body = self.rfile.read(n)
        log.write(f"POST {self.path} {body[:300]!r}\n"); log.flush()
        if self.path == "/v1/agent/enroll":
            req = json.loads(body)
            self.send(200, json.dumps({"host_id": req["host_id"], "credential": req["host_id"] + ".c1", "heartbeat_s": 5, "poll_s": 30}).encode())
        elif self.path == "/v1/agent/heartbeat": self.send(204)
        elif self.path == "/v1/agent/reports": self.send(202, b"{}")
        else: self.send(404)
    def do_GET(self):
        log.write(f"GET {self.path} inm={self.headers.get('If-None-Match')} range={self.headers.get('Range')}\n"); log.flush()
        if self.path.startswith("/v1/agent/desired"):
            if self.headers.get("If-None-Match") == '"e1"':
                time.sleep(int(self.path.split("wait=")[1]))
                self.send(304, b"", [("ETag", '"e1"')]); return
            host_id = self.headers.get("Authorization", "").removeprefix("Bearer ").split(".")[0]
            self.send(200, json.dumps(desired_for(host_id)).encode(), [("ETag", '"e1"'), ("Content-Type", "application/json")])
        elif self.path == "/v1/blobs/" + sha:
            r = self.headers.get("Range")
            if r:
                start = int(r.split("=")[1].split("-")[0])
                self.send(206, blob[start:], [("Content-Range", f"bytes {start}-{len(blob)-1}/{len(blob)}"), ("ETag", f'"{sha}"')])
            else:
                self.send(200, blob, [("ETag", f'"{sha}"')])
        else: self.send(404)

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print("listening on 127.0.0.1:%d" % srv.server_address[1], flush=True)
srv.serve_forever()
