#!/bin/bash
# Measures ringfence-agent's footprint idle in a long poll against the real ringfence-server:
# starts a server on port 0, creates a ring, a channel, an enrollment token and a 900 kB release
# rolled out to everyone, starts the stripped agent, waits until it applied the release and is
# idle, then prints VmRSS / PSS / anonymous RSS at 5, 20 and 40 s and the resident size per
# mapping. With a third argument `tls`, the agent speaks https:// to haproxy terminating TLS in
# front of the server (a throwaway CA and server certificate made with openssl).
#   tests/agent/footprint.sh AGENT_BINARY SERVER_BINARY [tls]
set -eu
AGENT=${1:?agent binary}; SERVER=${2:?server binary}; MODE=${3:-plain}
D=$(mktemp -d /tmp/ringfence-footprint.XXXX); mkdir -p "$D/data"
HA=
trap 'kill $P 2>/dev/null || true; kill $S 2>/dev/null || true; [ -n "$HA" ] && kill $HA 2>/dev/null; rm -rf "$D"' EXIT
TOKEN=footprint-admin-token-0123456789
RINGFENCE_ADMIN_TOKEN=$TOKEN "$SERVER" --data-dir "$D/data" --listen 127.0.0.1:0 --no-access-log \
    > "$D/srv.out" 2> "$D/srv.err" &
S=$!; P=
for _ in $(seq 100); do grep -q listening "$D/srv.out" && break; sleep 0.1; done
U=http://127.0.0.1:$(sed -n 's/listening on 127.0.0.1://p' "$D/srv.out")
H=(-s -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json")
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
curl "${H[@]}" -d '{"name":"all","rank":0,"selector":{"buckets":[0,10000]},"description":"all"}' "$U/v1/rings" >/dev/null
curl "${H[@]}" -d '{"name":"rules","schema":{}}' "$U/v1/channels" >/dev/null
ENROLL=$(curl "${H[@]}" -d '{"name":"fleet"}' "$U/v1/enrollment-tokens" | field token)
head -c 900000 /dev/urandom > "$D/blob"
SHA=$(curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/octet-stream' \
      --data-binary @"$D/blob" "$U/v1/blobs" | field sha256)
V=$(curl "${H[@]}" -d "{\"sha256\":\"$SHA\",\"notes\":\"footprint\"}" "$U/v1/channels/rules/releases" | field version)
RID=$(curl "${H[@]}" -d "{\"channel\":\"rules\",\"version\":$V,\"stages\":[{\"ring\":\"all\",\"percent\":100,\"bake_s\":0,\"min_hosts\":1,\"approval\":\"auto\"}]}" "$U/v1/rollouts" | field id)
curl "${H[@]}" -X POST -d '{}' "$U/v1/rollouts/$RID/start" >/dev/null
AGENT_URL=$U; TLS_FLAGS=()
if [ "$MODE" = tls ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$D/ca.key" \
      -out "$D/ca.pem" -days 1 -subj /CN=footprint-ca 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$D/srv.key" \
      -out "$D/srv.csr" -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$D/ext"
  openssl x509 -req -in "$D/srv.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -CAcreateserial \
      -days 1 -extfile "$D/ext" -out "$D/srv.pem" 2>/dev/null
  cat "$D/srv.pem" "$D/srv.key" > "$D/srv-combined.pem"
  TP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'defaults\n mode http\n timeout connect 5s\n timeout client 120s\n timeout server 120s\nfrontend f\n bind 127.0.0.1:%s ssl crt %s\n default_backend b\nbackend b\n server s %s\n' \
      "$TP" "$D/srv-combined.pem" "${U#http://}" > "$D/haproxy.cfg"
  haproxy -db -f "$D/haproxy.cfg" 2> "$D/haproxy.log" & HA=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$TP) 2>/dev/null && break; sleep 0.1; done
  AGENT_URL=https://localhost:$TP; TLS_FLAGS=(--ca-file "$D/ca.pem")
fi
strip -o "$D/agent" "$AGENT"
echo "stripped: $(stat -c %s "$D/agent") bytes; needs: $(readelf -d "$D/agent" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
"$D/agent" --server "$AGENT_URL" "${TLS_FLAGS[@]}" --enroll-token "$ENROLL" --state-dir "$D/state" \
    --content-dir "$D/content" --public-key "$D/data/signing.pub" 2> "$D/agent.log" &
P=$!
prev=0
for t in 5 20 40; do
  sleep $((t - prev)); prev=$t
  echo "t=${t}s $(grep VmRSS /proc/$P/status | tr -s ' \t' ' ') $(grep '^Pss:' /proc/$P/smaps_rollup | tr -s ' ') $(grep RssAnon /proc/$P/status | tr -s ' \t' ' ')"
done
awk '/^[0-9a-f]+-/{n=$6} /^Rss:/{r[n]+=$2} END{for(k in r) if(r[k]) print "  " r[k] " kB", k}' /proc/$P/smaps | sort -rn
cmp -s "$D/blob" "$D/content/rules/current" && echo "release v$V applied and verified ($MODE, $AGENT_URL)"
