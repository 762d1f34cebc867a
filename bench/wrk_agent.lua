-- wrk script for scripts/bench.sh. BENCH_MODE:
--   static     GET the path on the command line (the nginx reference)
--   304 / 200  GET /v1/agent/desired with each host's credential, with / without If-None-Match
--   heartbeat  POST /v1/agent/heartbeat with a realistic body
-- Requests walk the host list of BENCH_HOSTS (lines "credential<TAB>etag", from agent_load prime).
-- done() prints one line "BENCH {json}" with requests/s, latency percentiles (ms) and errors.
local mode = os.getenv("BENCH_MODE") or "static"
local version = os.getenv("BENCH_VERSION") or "1"
local hosts = {}
if mode ~= "static" then
  for line in io.lines(os.getenv("BENCH_HOSTS")) do
    local cred, etag = line:match("^([^\t]+)\t(.+)$")
    if cred then hosts[#hosts + 1] = { cred, etag } end
  end
  if #hosts == 0 then error("no hosts in " .. os.getenv("BENCH_HOSTS")) end
end
local i = 0
local hb = '{"boot_id":"6f1c2a9e-4b7d-4e55-9a0c-2f3b8d1e7a44","uptime_s":86400,' ..
           '"channels":{"detections":{"version":' .. version .. ',"state":"active"}}}'

request = function()
  if mode == "static" then return wrk.format("GET") end
  i = i % #hosts + 1
  local h = hosts[i]
  if mode == "heartbeat" then
    return wrk.format("POST", "/v1/agent/heartbeat",
      { ["Authorization"] = "Bearer " .. h[1], ["Content-Type"] = "application/json" }, hb)
  end
  local headers = { ["Authorization"] = "Bearer " .. h[1] }
  if mode == "304" then headers["If-None-Match"] = h[2] end
  return wrk.format("GET", "/v1/agent/desired", headers)
end

-- No response() callback: it would make wrk parse every answer's headers, for every target.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, ' ..
    '"errors": %d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect + e.read + e.write + e.timeout + e.status))
end
