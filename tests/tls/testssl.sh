#!/bin/sh
# testssl.sh against a real ringfence-server with TLS: fails on any finding rated worse than LOW
# (MEDIUM, HIGH, CRITICAL) and on a scan that could not finish.
#
# Sections: -p (protocols: no SSLv2/3, TLS 1.0/1.1 off, 1.2/1.3 on), -S (server defaults: the
# certificate chain, key, tickets, ALPN) and -U (the known vulnerabilities: Heartbleed, CCS,
# ROBOT, renegotiation, CRIME, BREACH, POODLE, SWEET32, FREAK, DROWN, LOGJAM, BEAST, LUCKY13,
# RC4, ...). Left out: -s/-f/-E (enumerating every cipher per protocol, ~8 of the ~10 minutes a
# full run takes on a 2-core box); the cipher list is fixed in the code (Mozilla intermediate) and
# -U already flags any weak cipher class that is offered.
# Usage: testssl.sh SERVER_BINARY   (exit 77 = testssl is not installed: the test is skipped)
set -eu
server=$1
command -v testssl >/dev/null 2>&1 || { echo "testssl is not installed (scripts/install-deps.sh)"; exit 77; }
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT INT TERM
cd "$dir"
# A throwaway CA and a server certificate for localhost (with a CRL URI: testssl rates a
# certificate with neither CRL nor OCSP as a finding).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=testssl-ca \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout srv.key -out srv.csr 2>/dev/null
printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
  'crlDistributionPoints=URI:http://localhost/crl.pem' 'extendedKeyUsage=serverAuth' \
  'keyUsage=digitalSignature' > ext
openssl x509 -req -days 90 -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -extfile ext \
  -out srv.pem 2>/dev/null
cat srv.pem ca.pem > chain.pem
RINGFENCE_ADMIN_TOKEN=testssl_admin_token_0123456789 "$server" --data-dir data \
  --listen 127.0.0.1:0 --no-web --no-access-log --tls-cert chain.pem --tls-key srv.key \
  > out.txt 2> err.txt &
pid=$!
i=0
until grep -q 'listening on' out.txt 2>/dev/null; do
  i=$((i + 1)); [ $i -gt 200 ] && { cat err.txt; echo "server did not start"; exit 1; }
  sleep 0.1
done
port=$(sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' out.txt)
start=$(date +%s)
testssl --quiet --color 0 --warnings batch --ip 127.0.0.1 --add-ca ca.pem \
  --jsonfile result.json --severity LOW -p -S -U "localhost:$port" > scan.txt 2>&1 || true
echo "testssl -p -S -U took $(( $(date +%s) - start )) s"
python3 - result.json <<'PY'
import json, sys
findings = json.load(open(sys.argv[1]))
bad = [f for f in findings if f.get("severity") in ("MEDIUM", "HIGH", "CRITICAL", "FATAL")]
for f in findings:
    if f.get("severity") not in ("OK", "INFO"):
        print(f'{f.get("severity"):8} {f.get("id")}: {f.get("finding")}')
print(f"{len(findings)} findings reported, {len(bad)} worse than LOW")
sys.exit(1 if bad else 0)
PY
