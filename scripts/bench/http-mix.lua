-- wrk script: the HTTP mix of scripts/bench-load. 9 in 10 requests are GET /last_block, 1 in 10
-- a POST /mine with a random proof (almost always invalid at difficulty 6: judged, not forged),
-- so both servers do the same work per request.
local counter = 0
local mine_headers = { ["Content-Type"] = "application/json" }

request = function()
  counter = counter + 1
  if counter % 10 == 0 then
    local body = string.format('{"proof": %d, "id": "wrk"}', math.random(0, 2147483647))
    return wrk.format("POST", "/mine", mine_headers, body)
  end
  return wrk.format("GET", "/last_block")
end

done = function(summary, latency, requests)
  io.write(string.format("MIX requests=%d errors=%d non2xx=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
