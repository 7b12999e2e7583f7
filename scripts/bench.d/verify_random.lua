-- POST /v1/keys/verify with a key drawn at random, per request, from BENCH_KEYS_FILE.
-- BENCH_AUTH: "Bearer <token with keys:verify>".
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local keys
local nkeys = 0
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = os.getenv("BENCH_AUTH"),
}

function init(args)
  keys = read_lines(os.getenv("BENCH_KEYS_FILE"), 0, 0)
  nkeys = #keys
  math.randomseed(os.time() + tid * 7919)
end

function request()
  local k = keys[math.random(nkeys)]
  return wrk.format("POST", nil, headers, '{"key":"' .. k .. '"}')
end
