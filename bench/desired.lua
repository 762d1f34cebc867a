-- wrk: GET /v1/agent/desired over many hosts' credentials. BENCH_MODE=304 sends If-None-Match.
dofile(os.getenv("BENCH_HOSTS"))
local mode = os.getenv("BENCH_MODE") or "200"
local i = 0
request = function()
  i = i % #hosts + 1
  local h = hosts[i]
  local headers = { ["Authorization"] = "Bearer " .. h[1] }
  if mode == "304" then headers["If-None-Match"] = h[2] end
  return wrk.format("GET", "/v1/agent/desired", headers)
end
