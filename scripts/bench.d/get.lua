-- GET a fixed path (JWKS, hello-world). Same response checks as every scenario.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
