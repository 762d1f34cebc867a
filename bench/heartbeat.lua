-- wrk: POST /v1/agent/heartbeat with a realistic body over many hosts' credentials.
dofile(os.getenv("BENCH_HOSTS"))
local i = 0
local body = '{"boot_id":"6f1c2a9e-4b7d-4e55-9a0c-2f3b8d1e7a44","uptime_s":86400,' ..
             '"channels":{"detections":{"version":7,"state":"active"},"sensor-config":{"version":3,"state":"active"}}}'
request = function()
  i = i % #hosts + 1
  return wrk.format("POST", "/v1/agent/heartbeat",
    { ["Authorization"] = "Bearer " .. hosts[i][1], ["Content-Type"] = "application/json" }, body)
end
