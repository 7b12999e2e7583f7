-- One pass over BENCH_KEYS_FILE: POST /v1/keys/verify with every key exactly once, then wrk ends.
-- Thread t of n takes its own contiguous slice of the file (lines t*N/n+1 .. (t+1)*N/n) and its
-- connections walk it in order. A thread that has handed out its last key holds its connections
-- back (delay) instead of sending a key twice; when the responses to all of its keys are in, it
-- stops, and the last thread to finish interrupts wrk (SIGINT ends wrk's timed wait at once), so
-- the reported duration and req/s are those of the pass itself. wrk's -d is only a bound.
--
-- Environment: BENCH_KEYS_FILE, BENCH_AUTH ("Bearer <token with keys:verify>"), BENCH_THREADS,
-- BENCH_DONE_FILE (a file the threads append to when they finish; must not exist beforehand),
-- and common.lua's BENCH_EXPECT and BENCH_LABEL.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local keys = {}
local nkeys = 0
local reserved = 0 -- keys promised to a connection by delay(), handed out by request()
local sent = 0
local answered = 0
local finished = false
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = os.getenv("BENCH_AUTH"),
}

function init(args)
  local all = {}
  for line in io.lines(os.getenv("BENCH_KEYS_FILE")) do
    if line ~= "" then table.insert(all, line) end
  end
  local first = math.floor(tid * #all / nthreads) + 1
  local last = math.floor((tid + 1) * #all / nthreads)
  for i = first, last do table.insert(keys, all[i]) end
  nkeys = #keys
  all = nil
  collectgarbage()
  -- wrk's pid, for scripts/bench's backstop (see mark_done).
  if tid == 0 then
    local p = io.popen("echo $PPID")
    local f = io.open(os.getenv("BENCH_DONE_FILE") .. ".pid", "w")
    f:write(p:read("*l"), "\n")
    f:close()
    p:close()
  end
  -- No keys for this thread (fewer keys than threads): it is done before it starts. (Stopping
  -- its loop here would be undone when the loop starts; wrk's own end stops it.)
  if nkeys == 0 then mark_done() end
end

-- wrk calls delay() before each request() of a connection: 0 while keys remain unpromised,
-- otherwise an hour, which parks the connection until the thread stops.
function delay()
  if reserved < nkeys then
    reserved = reserved + 1
    return 0
  end
  return 3600000
end

function request()
  -- wrk calls request() once on the first thread's state before the run, to check the request it
  -- builds, and never sends that one: a call no delay() promised is that check, and spends no key.
  if sent >= reserved then
    return wrk.format("POST", nil, headers, '{"key":"' .. (keys[1] or "") .. '"}')
  end
  sent = sent + 1
  return wrk.format("POST", nil, headers, '{"key":"' .. keys[sent] .. '"}')
end

-- Appends this thread to BENCH_DONE_FILE; the last of the threads interrupts wrk.
function mark_done()
  finished = true
  local path = os.getenv("BENCH_DONE_FILE")
  local f = io.open(path, "a")
  f:write(tid, "\n")
  f:close()
  local n = 0
  for _ in io.lines(path) do n = n + 1 end
  -- The shell's parent is wrk itself. Not os.execute: system() ignores SIGINT in the caller while
  -- the command runs, so wrk would never see it. (scripts/bench interrupts wrk too, 0.2 s
  -- after the last thread has written its line, should this signal be lost.)
  if n >= nthreads then
    local p = io.popen("kill -INT $PPID")
    p:close()
  end
end

function on_response(ok, status, body)
  answered = answered + 1
  if answered >= nkeys and not finished then
    wrk.thread:stop()
    mark_done()
  end
end
