-- wrk script for bench/bench_goodput.py: POST /generate {"num_images": 4, "seed": N}, a new seed per
-- request. Prints "WRKJSON {...}": requests, non-2xx responses (status) and latencies (microseconds).

local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function request()
  counter = counter + 1
  local body = string.format('{"num_images": 4, "seed": %d}', tid * 1000000000 + counter)
  return wrk.format("POST", "/generate", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": {"connect": %d, '
      .. '"read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
