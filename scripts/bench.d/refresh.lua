-- Refresh-token rotation. Every refresh token is spent exactly once: each thread owns a queue of
-- current tokens (its share of BENCH_REFRESH_FILE, one family per line); request() takes one,
-- response() puts the successor back. A token is therefore carried by one connection at a time,
-- and a connection never presents a token another one already spent. The file holds more tokens
-- than connections, so a connection never waits for one.
-- BENCH_AUTH: "Basic <client credentials>".
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local queue = {}
local head, tail = 1, 0
lost = 0
local headers = {
  ["Content-Type"] = "application/x-www-form-urlencoded",
  ["Authorization"] = os.getenv("BENCH_AUTH"),
}

function init(args)
  for _, t in ipairs(read_lines(os.getenv("BENCH_REFRESH_FILE"), tid, nthreads)) do
    tail = tail + 1
    queue[tail] = t
  end
end

function request()
  local t
  if head <= tail then
    t = queue[head]
    queue[head] = nil
    head = head + 1
  else
    -- Every family of this thread was lost to errors: send a token the server will refuse,
    -- so the failure shows up in the error count instead of stalling the connection.
    t = "tsr_exhausted"
  end
  return wrk.format("POST", nil, headers, "grant_type=refresh_token&refresh_token=" .. t)
end

function on_response(ok, status, body)
  local nt = ok and string.match(body, '"refresh_token":"(tsr_[%w]+)"')
  if nt then
    tail = tail + 1
    queue[tail] = nt
  else
    lost = lost + 1
  end
end
