-- Shared by every wrk scenario of scripts/bench: response checks, per-thread counters and a
-- done() that prints one machine-readable line.
--
-- Environment:
--   BENCH_EXPECT   substring every 2xx body must contain (else counted as "bad")
--   BENCH_EXPECT2  a second substring every 2xx body must also contain (optional)
--   BENCH_LABEL    scenario name printed in the result line

local threads = {}
local next_id = 0

-- wrk runs setup(thread) and that thread's init() before it sets up the next thread, so the
-- thread count comes from the environment (BENCH_THREADS, the -t given to wrk).
nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

non2xx = 0
bad = 0
local expect = os.getenv("BENCH_EXPECT")
if expect == "" then expect = nil end
local expect2 = os.getenv("BENCH_EXPECT2")
if expect2 == "" then expect2 = nil end

-- Scenario scripts may define on_response(ok, status, body) to see each checked response.
-- The first few failures of each thread go to stderr (the run's raw output), to say what failed.
-- Only failures: a successful body may carry a token.
local shown = 0
local function show(kind, status, body)
  if shown >= 3 then return end
  shown = shown + 1
  io.stderr:write(string.format("%s: %s %d %s\n", os.getenv("BENCH_LABEL") or "?", kind, status, string.sub(body or "", 1, 200)))
end

function check(status, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    show("non-2xx", status, body)
    return false
  end
  if (expect and not string.find(body, expect, 1, true)) or (expect2 and not string.find(body, expect2, 1, true)) then
    bad = bad + 1
    show("unexpected body", status, body)
    return false
  end
  return true
end

function response(status, headers, body)
  local ok = check(status, body)
  if on_response then on_response(ok, status, body) end
end

-- Reads a file of one value per line; keeps the lines for thread `tid` of `n` (all when n = 0).
function read_lines(path, tid, n)
  local out = {}
  local i = 0
  for line in io.lines(path) do
    if line ~= "" then
      if n == 0 or (i % n) == tid then table.insert(out, line) end
      i = i + 1
    end
  end
  return out
end

function done(summary, latency, requests)
  local n2, b, extra = 0, 0, 0
  for _, t in ipairs(threads) do
    n2 = n2 + (t:get("non2xx") or 0)
    b = b + (t:get("bad") or 0)
    extra = extra + (t:get("lost") or 0)
  end
  local e = summary.errors
  local sock = e.connect + e.read + e.write + e.timeout
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH label=%s requests=%d secs=%.2f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f non2xx=%d bad_body=%d socket_errors=%d connect=%d read=%d write=%d timeout=%d lost_tokens=%d errors=%d\n",
    os.getenv("BENCH_LABEL") or "?", summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000,
    n2, b, sock, e.connect, e.read, e.write, e.timeout, extra, n2 + b + sock))
end
