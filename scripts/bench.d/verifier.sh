#!/usr/bin/env bash
# Verifier overhead (issue #22): the example resource service (crates/tessera-verifier/examples/
# resource_server.rs) under wrk — GET /hello, protected by the verifier with one cached access
# token, against GET /public, the same handler and body without the verifier. Prints the
# verifier's overhead per request (server CPU µs, and wall-clock µs at saturation) and the ratio of
# throughputs (goal ≥ 0.7). Standalone; scripts/bench may call it. Writes
# target/bench/verifier-<time>/ (results.txt, raw wrk output, logs).
#
# Needs: local Postgres (127.0.0.1:5432, user postgres, trust); wrk, curl and python3 (installed
# when missing). Redis is not needed (Tessera runs single-instance).
#
# Environment (all optional):
#   BENCH_DURATION=10  seconds per measured run      BENCH_WARMUP=2  seconds of discarded warm-up
#   BENCH_CONNECTIONS=64  wrk connections            BENCH_THREADS=2  wrk threads
#   BENCH_ROUNDS=2     measured rounds of each route, alternating; the best of each is compared
#   BENCH_PG=postgres://postgres@127.0.0.1:5432
#   BENCH_NO_BUILD=1   use the dist binaries already in target/dist
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
D="$ROOT/scripts/bench.d"
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-2}

# shellcheck source=scripts/lib/instance.sh
source scripts/lib/instance.sh
INSTANCE_PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="${BENCH_VERIFIER_OUT:-$TARGET/bench/verifier-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: >"$RESULTS"
log() { printf '[bench-verifier %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
put() { printf '%s=%s\n' "$1" "$2" >>"$RESULTS"; }

ensure_command wrk wrk
ensure_command curl curl
ensure_command python3 python3

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  log "cargo build --profile dist --bin tessera --example resource_server"
  cargo build --profile dist --bin tessera --example resource_server 2>"$OUT/build.log" \
    || { tail -30 "$OUT/build.log" >&2; exit 1; }
fi
BIN="$TARGET/dist/tessera"
EXAMPLE="$TARGET/dist/examples/resource_server"

# --- Tessera ------------------------------------------------------------------------------------
throwaway_db verifier_bench
ADMIN_SECRET="bench-admin-$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
start_tessera --name tessera --log "$OUT/tessera.log" --bin "$BIN" TESSERA_BOOTSTRAP_ADMIN_SECRET="$ADMIN_SECRET"
TESSERA_PID=$INSTANCE_PID
TESSERA_URL=$INSTANCE_URL
wait_ready "$TESSERA_URL/readyz" "$TESSERA_PID" 120

json() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
token() { # ID SECRET: a client-credentials access token
  curl -fsS -u "$1:$2" -d grant_type=client_credentials "$TESSERA_URL/oauth/token" | json access_token
}
ADMIN=$(token admin "$ADMIN_SECRET")
client() { # SCOPES...: "id secret" of a new confidential client
  local scopes
  scopes=$(printf '"%s",' "$@")
  curl -fsS -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d "{\"name\":\"bench\",\"grant_types\":[\"client_credentials\"],\"scopes\":[${scopes%,}]}" \
    "$TESSERA_URL/v1/admin/clients" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["client_id"], c["client_secret"])'
}
read -r EX_ID EX_SECRET < <(client keys:verify revocations:read)
read -r CALLER_ID CALLER_SECRET < <(client hello:read)
CALLER_TOKEN=$(token "$CALLER_ID" "$CALLER_SECRET")

# --- the example --------------------------------------------------------------------------------
PORT=$(free_port)
start_process resource_server "$OUT/resource_server.log" env TESSERA_ISSUER="$TESSERA_URL" \
  EXAMPLE_BIND="127.0.0.1:$PORT" EXAMPLE_CLIENT_ID="$EX_ID" EXAMPLE_CLIENT_SECRET="$EX_SECRET" RUST_LOG=warn "$EXAMPLE"
EX_PID=$INSTANCE_PID
wait_ready "http://127.0.0.1:$PORT/public" "$EX_PID" 60
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $CALLER_TOKEN" "http://127.0.0.1:$PORT/hello")
[ "$code" = 200 ] || { log "GET /hello with the caller's token answered $code"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/hello")
[ "$code" = 401 ] || { log "GET /hello without a token answered $code"; exit 1; }

# --- wrk ----------------------------------------------------------------------------------------
put machine.nproc "$(nproc)"
put machine.cpu "$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
put config.duration "$DURATION"
put config.connections "$CONNS"
put config.threads "$THREADS"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
# LABEL PATH [wrk args...]: one warm-up and one measured run; records rps and server CPU µs/request.
measure() {
  local label=$1 path=$2
  shift 2
  local url="http://127.0.0.1:$PORT$path" envs=(env BENCH_LUA_DIR="$D" BENCH_THREADS="$THREADS" BENCH_EXPECT='"hello"')
  if [ "$WARMUP" -gt 0 ]; then
    "${envs[@]}" BENCH_LABEL="$label-warmup" wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$D/get.lua" "$@" "$url" \
      >"$OUT/wrk-$label-warmup.txt" 2>&1 || true
  fi
  local t0 t1 line rps reqs errors
  t0=$(cpu_ticks "$EX_PID")
  "${envs[@]}" BENCH_LABEL="$label" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$D/get.lua" "$@" "$url" \
    >"$OUT/wrk-$label.txt" 2>&1
  t1=$(cpu_ticks "$EX_PID")
  line=$(grep '^BENCH ' "$OUT/wrk-$label.txt" | tail -1)
  [ -n "$line" ] || { log "wrk $label printed no result"; cat "$OUT/wrk-$label.txt" >&2; return 1; }
  rps=$(sed -n 's/.* rps=\([0-9.]*\).*/\1/p' <<<"$line")
  reqs=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$line")
  errors=$(sed -n 's/.* errors=\([0-9]*\)$/\1/p' <<<"$line")
  [ "$errors" = 0 ] || { log "$label: $errors failed requests ($line)"; return 1; }
  put "$label.rps" "$rps"
  put "$label.p99_ms" "$(sed -n 's/.* p99_ms=\([0-9.]*\).*/\1/p' <<<"$line")"
  put "$label.cpu_us_per_req" "$(python3 -c "print(round(($t1 - $t0) / $CLK_TCK * 1e6 / max($reqs, 1), 2))")"
  log "$label: ${line#BENCH }"
}
for round in $(seq 1 "$ROUNDS"); do
  measure "public$round" /public
  measure "hello$round" /hello -H "Authorization: Bearer $CALLER_TOKEN"
done

python3 - "$RESULTS" "$ROUNDS" <<'PY' | tee "$OUT/summary.txt"
import sys
r = dict(line.rstrip("\n").split("=", 1) for line in open(sys.argv[1]) if "=" in line)
rounds = int(sys.argv[2])
def best(label, key, pick):
    return pick(float(r[f"{label}{i}.{key}"]) for i in range(1, rounds + 1))
pub, hel = best("public", "rps", max), best("hello", "rps", max)
pub_cpu, hel_cpu = best("public", "cpu_us_per_req", min), best("hello", "cpu_us_per_req", min)
ratio = hel / pub
for i in range(1, rounds + 1):
    p, h = float(r[f"public{i}.rps"]), float(r[f"hello{i}.rps"])
    print(f"round {i}: /public {p:,.0f} req/s, /hello {h:,.0f} req/s, ratio {h / p:.2f}")
print(f"GET /public (no verifier)        {pub:12,.0f} req/s   server CPU {pub_cpu:6.2f} µs/req")
print(f"GET /hello  (verifier, cached)   {hel:12,.0f} req/s   server CPU {hel_cpu:6.2f} µs/req")
print(f"verifier overhead: {hel_cpu - pub_cpu:.2f} µs CPU/request; {1e6 / hel - 1e6 / pub:.2f} µs wall/request at saturation")
print(f"ratio protected/unprotected: {ratio:.2f} (goal >= 0.70) {'OK' if ratio >= 0.7 else 'BELOW GOAL'}")
with open(sys.argv[1], "a") as f:
    f.write(f"overhead_cpu_us={hel_cpu - pub_cpu:.2f}\nratio={ratio:.3f}\n")
PY
log "results in $OUT"
