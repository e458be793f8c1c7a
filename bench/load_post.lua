-- wrk script for bench/load.py: POST /v1/tag with a rotating set of real request bodies.
--
--   wrk -t2 -c16 -d20s --latency -s bench/load_post.lua http://127.0.0.1:PORT -- BODIES_FILE
--
-- BODIES_FILE holds one JSON request body per line (e.g. {"text": "..."}). Every request is
-- formatted once in init(); each thread starts at a different offset and walks the list in a
-- circle. done() prints one line "WRK_JSON {...}" with exact counts and latency percentiles (us)
-- next to wrk's own report.

local counter = 0
local threads = {}

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
   table.insert(threads, thread)
end

local requests = {}
local position = 0

function init(args)
   local path = args[1]
   if path == nil then
      error("usage: wrk ... -s load_post.lua URL -- BODIES_FILE")
   end
   local headers = { ["Content-Type"] = "application/json" }
   for line in io.lines(path) do
      if #line > 0 then
         table.insert(requests, wrk.format("POST", "/v1/tag", headers, line))
      end
   end
   if #requests == 0 then
      error("no request bodies in " .. path)
   end
   position = ((id or 1) - 1) * 37 % #requests
end

function request()
   position = position % #requests + 1
   return requests[position]
end

function done(summary, latency, _)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"min": %d, "mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p99_9": %d, "max": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max))
end
