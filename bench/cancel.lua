-- wrk script: POST a cancel with a fresh response id each time, as clients do.
-- The body names the model, which LiteLLM needs to route a cancel; others ignore it.
-- At the end, one JSON line with the figures bench/run.py reads.
local key = os.getenv("BENCH_KEY") or "bench-key"
local headers = {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}
local body = '{"model":"gpt-4o-mini"}'
local threads, counter = 0, 0
prefix = ""  -- a global, not a local: thread:set() below sets each thread's global

function setup(thread)
  thread:set("prefix", (os.getenv("BENCH_RUN") or "run") .. "_t" .. threads)
  threads = threads + 1
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/responses/resp_" .. prefix .. "_" .. counter .. "/cancel",
                    headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
