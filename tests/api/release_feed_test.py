#!/usr/bin/python3
"""api.release_feeds: the release-notes Atom feeds of a real ringfence-server, read with a real
feed parser (feedparser, Debian's python3-feedparser). Usage: release_feed_test.py SERVER_BINARY

Checks: the feeds need a token until an admin makes them public (a viewer cannot); both feeds are
well-formed Atom with one entry per release, newest change first, notes intact (markup-looking
text included); quarantining a release updates its entry ("withdrawn", a newer <updated>); the
setting and the entries survive a restart."""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

try:
    import feedparser
except ImportError:
    sys.exit("python3-feedparser is missing: run scripts/install-deps.sh test")

SERVER = sys.argv.pop(1) if len(sys.argv) > 1 else "build/server/ringfence-server"
ADMIN = "feed-admin-token-0123456789abcdef"


class Server:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proc = None
        self.base = None

    def start(self):
        env = dict(os.environ, RINGFENCE_ADMIN_TOKEN=ADMIN)
        self.log = open(os.path.join(self.data_dir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [SERVER, "--data-dir", self.data_dir, "--listen", "127.0.0.1:0", "--no-web",
             "--no-access-log"], env=env, stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on"):
            raise RuntimeError("server did not start: " + line)
        self.base = "http://" + line.split()[-1]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.proc.stdout.close()
        self.log.close()

    def call(self, method, path, token=ADMIN, body=None, raw=None):
        data, ctype = None, None
        if body is not None:
            data, ctype = json.dumps(body).encode(), "application/json"
        if raw is not None:
            data, ctype = raw, "application/octet-stream"
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()


class ReleaseFeeds(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.s = Server(self.dir.name)
        self.s.start()

    def tearDown(self):
        self.s.stop()
        self.dir.cleanup()

    def ok(self, status, want, what, body=b""):
        self.assertEqual(status, want, "%s: %s" % (what, body[:300]))

    def release(self, content, notes):
        st, _, b = self.s.call("POST", "/v1/blobs", raw=content)
        self.ok(st, 201, "upload", b)
        st, _, b = self.s.call("POST", "/v1/channels/rules/releases",
                               body={"sha256": json.loads(b)["sha256"], "notes": notes})
        self.ok(st, 201, "release", b)
        return json.loads(b)["version"]

    def feed(self, path, token=ADMIN):
        st, headers, body = self.s.call("GET", path, token=token)
        self.ok(st, 200, path, body)
        self.assertTrue(headers["Content-Type"].startswith("application/atom+xml"))
        f = feedparser.parse(body)
        self.assertFalse(f.bozo, "%s is not well-formed: %s" % (path, f.get("bozo_exception")))
        self.assertEqual(f.version, "atom10")
        return f

    def test_feeds_follow_releases_quarantine_and_restart(self):
        self.ok(self.s.call("POST", "/v1/channels",
                            body={"name": "rules", "schema": {"type": "object"}})[0], 201,
                "channel")
        v1 = self.release(b'{"rules":[1]}', "First rules <b>bold</b> & co")
        time.sleep(1.1)  # whole seconds in <updated>: the next change must be later
        v2 = self.release(b'{"rules":[1,2]}', "Second rules")

        # Not public yet: no token, no feed; any API token reads it.
        st, _, b = self.s.call("GET", "/v1/releases.atom", token=None)
        self.ok(st, 401, "feed without a token while not public", b)
        f = self.feed("/v1/channels/rules/releases.atom")
        self.assertEqual(f.feed.title, "Ringfence releases: rules")
        self.assertEqual([e.title for e in f.entries],
                         ["rules %d (validated)" % v2, "rules %d (validated)" % v1])
        first = f.entries[1]
        self.assertIn("First rules <b>bold</b> & co", first.content[0].value)
        self.assertEqual(first.content[0].type, "text/plain")
        self.assertTrue(first.id.startswith("tag:ringfence,2026:release/rules/%d/" % v1))
        self.assertEqual(len(self.feed("/v1/releases.atom").entries), 2)
        st, _, b = self.s.call("GET", "/v1/channels/nope/releases.atom")
        self.ok(st, 404, "feed of an unknown channel", b)

        # Public: a viewer cannot decide it, an admin can; then no token is needed.
        st, _, b = self.s.call("POST", "/v1/tokens", body={"name": "look", "role": "viewer"})
        self.ok(st, 201, "viewer token", b)
        viewer = json.loads(b)["token"]
        st, _, b = self.s.call("PUT", "/v1/settings/release-feeds", token=viewer,
                               body={"public": True})
        self.ok(st, 403, "a viewer making the feeds public", b)
        st, _, b = self.s.call("PUT", "/v1/settings/release-feeds", body={"public": "yes"})
        self.ok(st, 400, "a non-boolean", b)
        st, _, b = self.s.call("PUT", "/v1/settings/release-feeds", body={"public": True})
        self.ok(st, 200, "admin makes the feeds public", b)
        self.assertEqual(len(self.feed("/v1/releases.atom", token=None).entries), 2)

        # Quarantine v1: its entry is withdrawn and comes first (the newest change).
        time.sleep(1.1)
        st, _, b = self.s.call("POST", "/v1/channels/rules/releases/%d/quarantine" % v1,
                               body={"reason": "crashes the parser"})
        self.ok(st, 200, "quarantine", b)
        f = self.feed("/v1/channels/rules/releases.atom", token=None)
        top = f.entries[0]
        self.assertEqual(top.title, "rules %d (withdrawn)" % v1)
        self.assertIn("Withdrawn", top.content[0].value)
        self.assertGreater(top.updated_parsed, top.published_parsed)
        self.assertEqual(f.feed.updated, top.updated)
        withdrawn_at = top.updated

        # A restart keeps both the setting and the entry's dates.
        self.s.stop()
        self.s.start()
        f = self.feed("/v1/releases.atom", token=None)
        self.assertEqual(f.entries[0].title, "rules %d (withdrawn)" % v1)
        self.assertEqual(f.entries[0].updated, withdrawn_at)


if __name__ == "__main__":
    unittest.main(verbosity=2)
