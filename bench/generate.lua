-- wrk script for bench/bench_generate.py: POST /generate {"num_images": 1, "seed": N}, a new seed
-- per request (so no cache could help), the same bodies for every server under test.
-- At the end, one line "WRKJSON {...}" with the numbers the driver reads (latencies in microseconds).

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local counter = 0
local headers = { ["Content-Type"] = "application/json" }
-- images per request (bench_generate.py --images-per-request sets it)
local images = tonumber(os.getenv("BENCH_IMAGES") or "1")

function request()
  counter = counter + 1
  local body = string.format('{"num_images": %d, "seed": %d}', images, tid * 1000000000 + counter)
  return wrk.format("POST", "/generate", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "mean_us": %.1f, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, '
      .. '"timeout": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
