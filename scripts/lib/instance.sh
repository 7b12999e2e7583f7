#!/usr/bin/env bash
# Throwaway Tessera instances for the scripts that need one (bench, bench-ab, bench-instructions,
# check-docs, fuzz-api, lb-check, readme-tour; check-deploy uses its scratch_dir): one free-port
# finder, one way to make and drop a database, one way to start a process and to wait until it
# answers, and one EXIT trap that undoes everything this library started. Source it after
# `set -euo pipefail`; it sources services.sh (ensure_command and friends), so tools are installed in
# one place.
#
#   free_port                     prints a free TCP port on 127.0.0.1, never one it printed before in
#                                 this script (so ports taken before their processes bind them differ)
#   throwaway_db [--no-create] PREFIX
#                                 creates the database PREFIX_<pid> (PREFIX_<pid>_2, ... when this
#                                 script made that one already) on $INSTANCE_PG and sets INSTANCE_DB
#                                 and INSTANCE_DB_URL; dropped WITH (FORCE) at exit. --no-create only
#                                 names it (still dropped at exit), for Tessera to create it itself
#   start_process [--cwd DIR] NAME LOG CMD...
#                                 runs CMD in the background (in DIR), stdout and stderr to LOG; sets
#                                 INSTANCE_PID (CMD's own pid); stopped at exit
#   start_tessera [--name NAME] [--log FILE] [--cwd DIR] [--bin PATH] [VAR=VALUE...] [-- WRAPPER...]
#                                 `tessera serve` on a free port of 127.0.0.1, run as
#                                 `env VARS... WRAPPER... PATH serve` (WRAPPER: taskset, valgrind...).
#                                 Defaults, each overridden by a VAR=VALUE given: TESSERA_BIND (the
#                                 free port), TESSERA_ISSUER (its URL), TESSERA_MASTER_KEY (random),
#                                 TESSERA_DATABASE_URL ($INSTANCE_DB_URL: call throwaway_db first).
#                                 PATH defaults to $TESSERA_BIN, else target/debug/tessera; LOG to
#                                 NAME.log in a scratch directory removed at exit. Sets INSTANCE_PID,
#                                 INSTANCE_PORT, INSTANCE_URL and INSTANCE_LOG; does not wait.
#   wait_ready URL PID [SECONDS]  polls URL (for Tessera, "$INSTANCE_URL/readyz") until it answers
#                                 200; fails at once, with the tail of the process's log, if PID
#                                 exits first, and after SECONDS (default 60)
#   track_pid PID [NAME] [LOG]    a background process of the caller's, stopped at exit like the others
#   stop_pid PID                  TERM, up to 10 s, then KILL; reaps it and forgets it
#   on_exit CMD                   CMD (a string, eval'd) runs at exit, after every process is
#                                 stopped and every database dropped; the newest first. The exit
#                                 status is in INSTANCE_EXIT_STATUS
#   scratch_dir                   prints a new temporary directory, removed at exit
#
# At exit (normal, error, INT or TERM): processes stopped newest first, databases dropped, on_exit
# commands run, scratch directories removed, and the script exits with the status it had.
# Tunables: INSTANCE_PG (server URL, default postgres://postgres@127.0.0.1:5432), TESSERA_BIN.

# The INSTANCE_* variables are this library's outputs, read by the scripts that source it.
# shellcheck disable=SC2034
true
# shellcheck source=scripts/lib/services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"

INSTANCE_PG="${INSTANCE_PG:-postgres://postgres@127.0.0.1:5432}"
INSTANCE_PID=""
INSTANCE_PORT=""
INSTANCE_URL=""
INSTANCE_LOG=""
INSTANCE_DB=""
INSTANCE_DB_URL=""
INSTANCE_EXIT_STATUS=0

_INSTANCE_PIDS=()
_INSTANCE_DBS=()
_INSTANCE_HOOKS=()
declare -gA _INSTANCE_NAME_OF=()
declare -gA _INSTANCE_LOG_OF=()
_instance_tools_ok=""

_inst_err() { printf '%s: ERROR: %s\n' "$(basename "$0")" "$*" >&2; }

# The tools every function here uses, installed once when missing.
_instance_tools() {
  [ -z "$_instance_tools_ok" ] || return 0
  ensure_command python3 python3 && ensure_command curl curl && ensure_command psql postgresql-client || return 1
  _instance_tools_ok=1
}

free_port() {
  ensure_command python3 python3 >&2 || return 1
  # Called as $(free_port): the ports handed out so far are kept in a file under the scratch root.
  python3 - "$_INSTANCE_SCRATCH_ROOT/ports" <<'PY'
import socket, sys
path = sys.argv[1]
try:
    given = set(open(path).read().split())
except FileNotFoundError:
    given = set()
held = []  # kept bound until one is new, so the kernel cannot offer the same port twice
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
    port = str(s.getsockname()[1])
    if port not in given:
        break
with open(path, "a") as f:
    f.write(port + "\n")
print(port)
PY
}

scratch_dir() {
  # Called as $(scratch_dir): the directory is registered by the caller's shell, not the subshell,
  # so it is made under one per-script directory that the trap removes.
  if [ -z "${_INSTANCE_SCRATCH_ROOT:-}" ]; then
    _inst_err "scratch_dir: the library's scratch root is missing"
    return 1
  fi
  mktemp -d "$_INSTANCE_SCRATCH_ROOT/scratch.XXXXXX"
}

# _psql_admin SQL: runs SQL on the server's postgres database.
_psql_admin() {
  psql "$INSTANCE_PG/postgres" -X -q -v ON_ERROR_STOP=1 -c "$1"
}

throwaway_db() {
  local create=1
  if [ "${1:-}" = --no-create ]; then
    create=""
    shift
  fi
  local prefix="$1" name n=1 db
  _instance_tools || return 1
  name="${prefix}_$$"
  for db in "${_INSTANCE_DBS[@]}"; do
    if [ "$db" = "$name" ] || [[ "$db" == "${prefix}_$$_"* ]]; then n=$((n + 1)); fi
  done
  [ "$n" -eq 1 ] || name="${prefix}_$$_$n"
  _INSTANCE_DBS+=("$name")
  if [ -n "$create" ]; then
    _psql_admin "CREATE DATABASE $name" >/dev/null || {
      _inst_err "could not create database $name on $INSTANCE_PG"
      return 1
    }
  fi
  INSTANCE_DB="$name"
  INSTANCE_DB_URL="$INSTANCE_PG/$name"
}

start_process() {
  local cwd=""
  if [ "${1:-}" = --cwd ]; then
    cwd="$2"
    shift 2
  fi
  local name="$1" log="$2"
  shift 2
  (
    if [ -n "$cwd" ]; then cd "$cwd" || exit 1; fi
    exec "$@"
  ) >"$log" 2>&1 &
  INSTANCE_PID=$!
  track_pid "$INSTANCE_PID" "$name" "$log"
}

track_pid() {
  _INSTANCE_PIDS+=("$1")
  _INSTANCE_NAME_OF[$1]="${2:-process}"
  [ -z "${3:-}" ] || _INSTANCE_LOG_OF[$1]="$3"
}

start_tessera() {
  local name=tessera log="" cwd="" bin="${TESSERA_BIN:-$TESSERA_ROOT/target/debug/tessera}" vars=() wrapper=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --name) name="$2"; shift 2 ;;
      --log) log="$2"; shift 2 ;;
      --cwd) cwd="$2"; shift 2 ;;
      --bin) bin="$2"; shift 2 ;;
      --) shift; wrapper=("$@"); break ;;
      *=*) vars+=("$1"); shift ;;
      *) _inst_err "start_tessera: unexpected argument '$1'"; return 1 ;;
    esac
  done
  _instance_tools || return 1
  local v has_db=""
  for v in "${vars[@]}"; do [[ "$v" != TESSERA_DATABASE_URL=* ]] || has_db=1; done
  if [ -z "$INSTANCE_DB_URL" ] && [ -z "$has_db" ]; then
    _inst_err "start_tessera: no database (call throwaway_db first, or give TESSERA_DATABASE_URL=...)"
    return 1
  fi
  [ -x "$bin" ] || { _inst_err "start_tessera: $bin is not built"; return 1; }
  local port
  port="$(free_port)" || return 1
  [ -n "$log" ] || log="$_INSTANCE_SCRATCH_ROOT/$name.log"
  local defaults=(
    TESSERA_BIND="127.0.0.1:$port"
    TESSERA_ISSUER="http://127.0.0.1:$port"
    TESSERA_MASTER_KEY="$(head -c 32 /dev/urandom | base64)"
  )
  [ -z "$INSTANCE_DB_URL" ] || defaults+=(TESSERA_DATABASE_URL="$INSTANCE_DB_URL")
  local where=()
  [ -z "$cwd" ] || where=(--cwd "$cwd")
  # env applies its words in order: a VAR=VALUE of the caller's overrides the default before it.
  start_process "${where[@]}" "$name" "$log" env "${defaults[@]}" "${vars[@]}" "${wrapper[@]}" "$bin" serve
  INSTANCE_PORT="$port"
  INSTANCE_URL="http://127.0.0.1:$port"
  INSTANCE_LOG="$log"
}

wait_ready() {
  local url="$1" pid="$2" secs="${3:-60}" code name log
  _instance_tools || return 1
  name="${_INSTANCE_NAME_OF[$pid]:-process}"
  log="${_INSTANCE_LOG_OF[$pid]:-}"
  local deadline=$((SECONDS + secs))
  while :; do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null)" || true
    [ "$code" = 200 ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      _inst_err "$name (pid $pid) exited before $url answered 200"
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      _inst_err "$url did not answer 200 within ${secs} s (last status: ${code:-none})"
      break
    fi
    sleep 0.1
  done
  if [ -n "$log" ] && [ -f "$log" ]; then
    printf '%s: last lines of %s (%s):\n' "$(basename "$0")" "$name" "$log" >&2
    tail -n 30 "$log" >&2
  fi
  return 1
}

stop_pid() {
  local pid="$1" i kept=() p
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for p in "${_INSTANCE_PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  _INSTANCE_PIDS=("${kept[@]}")
}

on_exit() {
  _INSTANCE_HOOKS+=("$1")
}

_instance_exit() {
  INSTANCE_EXIT_STATUS=$?
  set +e
  trap - EXIT INT TERM
  local i db
  for ((i = ${#_INSTANCE_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${_INSTANCE_PIDS[i]}"; done
  for db in "${_INSTANCE_DBS[@]}"; do
    _psql_admin "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || _inst_err "could not drop database $db"
  done
  for ((i = ${#_INSTANCE_HOOKS[@]} - 1; i >= 0; i--)); do eval "${_INSTANCE_HOOKS[i]}"; done
  rm -rf "$_INSTANCE_SCRATCH_ROOT"
  exit "$INSTANCE_EXIT_STATUS"
}

_INSTANCE_SCRATCH_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/tessera-$(basename "$0").XXXXXX")"
trap _instance_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
