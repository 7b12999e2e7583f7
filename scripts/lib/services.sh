#!/usr/bin/env bash
# Helpers sourced by scripts/run and scripts/test, and through scripts/lib/instance.sh by the scripts that
# start a throwaway Tessera (running this file directly runs ensure_services).
#
#   ensure_services  Postgres on 127.0.0.1:5432 (user postgres, no password) and Redis on 127.0.0.1:6379
#                    answer, using whatever is there; else `docker compose up -d postgres redis` where a
#                    Docker engine runs; else the Debian cluster; else a private cluster in .tessera/pg and
#                    a local redis-server (installed with apt-get when missing and running as root).
#   ensure_cargo     cargo is on PATH (adds ~/.cargo/bin when needed).
#   ensure_rust      ensure_cargo, plus the rustfmt and clippy components.
#   ensure_command CMD PKG         CMD is on PATH, else the Debian package PKG is installed (apt-get).
#   ensure_python_tool CMD SPEC    prints CMD's path in target/tools-venv, pip-installing SPEC there.
#   drop_leftover_databases [URL [PREFIX...]]  drops test databases that interrupted runs left behind.
#
# Messages go to stderr. The functions return non-zero (with a message) instead of exiting, and set no
# shell options, so sourcing this file from an interactive shell is harmless. Tunables:
#   TESSERA_SERVICES_TIMEOUT  seconds to wait for a service to answer after starting it (default 30)

# Repository root, wherever the caller stands.
TESSERA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

TESSERA_PG_HOST=127.0.0.1
TESSERA_PG_PORT=5432
TESSERA_REDIS_HOST=127.0.0.1
TESSERA_REDIS_PORT=6379

_svc_log() { printf 'services: %s\n' "$*" >&2; }
_svc_err() { printf 'services: ERROR: %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------------------
# Probes

# Something accepts connections on host:port (bash's /dev/tcp; no client tools needed).
_tcp_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Postgres answers on 127.0.0.1:5432 (it may still refuse our login; see _pg_login_ok).
_pg_answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$TESSERA_PG_HOST" -p "$TESSERA_PG_PORT" -t 2 >/dev/null 2>&1
  elif command -v psql >/dev/null 2>&1; then
    _pg_login_ok
  else
    _tcp_open "$TESSERA_PG_HOST" "$TESSERA_PG_PORT"
  fi
}

# User postgres can log in over TCP without a password prompt (trust auth, or PGPASSWORD/.pgpass).
_pg_login_ok() {
  command -v psql >/dev/null 2>&1 || return 0 # nothing to check with; the services will tell
  psql -w -h "$TESSERA_PG_HOST" -p "$TESSERA_PG_PORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1
}

# Redis answers PING with PONG on 127.0.0.1:6379.
_redis_answers() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h "$TESSERA_REDIS_HOST" -p "$TESSERA_REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
  else
    local reply=""
    {
      exec 3<>"/dev/tcp/$TESSERA_REDIS_HOST/$TESSERA_REDIS_PORT" || return 1
      printf 'PING\r\n' >&3
      IFS= read -r -t 2 reply <&3 || true
      exec 3<&-
    } 2>/dev/null || return 1
    [[ "$reply" == "+PONG"* ]]
  fi
}

# _wait_for NAME PROBE [SECONDS]: polls PROBE every 0.5 s until it succeeds; bounded.
_wait_for() {
  local name="$1" probe="$2" secs="${3:-${TESSERA_SERVICES_TIMEOUT:-30}}" i
  for ((i = 0; i < secs * 2; i++)); do
    if "$probe"; then
      return 0
    fi
    sleep 0.5
  done
  _svc_err "gave up waiting for $name after ${secs} s"
  return 1
}

# ---------------------------------------------------------------------------------------------------------
# Installing and running things

_is_root() { [ "$(id -u)" -eq 0 ]; }

_apt_updated=""
# _apt_install PKG...: installs Debian packages when we are root and have apt-get.
_apt_install() {
  if ! _is_root || ! command -v apt-get >/dev/null 2>&1; then
    _svc_err "need the Debian package(s) $*, but cannot install them (not root, or no apt-get): install them and re-run"
    return 1
  fi
  _svc_log "installing $* with apt-get"
  if [ -z "$_apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || {
      _svc_err "apt-get update failed"
      return 1
    }
    _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || {
    _svc_err "apt-get install $* failed"
    return 1
  }
}

# Docker engine (not just the client) answers.
_docker_works() {
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

# _compose_up SERVICE...: starts the named docker-compose.yml services.
_compose_up() {
  _svc_log "starting $* with docker compose"
  # Compose interpolates the whole file, including the tessera service's required TESSERA_MASTER_KEY,
  # even when only postgres and redis are started; give it a placeholder the databases never see.
  (cd "$TESSERA_ROOT" &&
    TESSERA_MASTER_KEY="${TESSERA_MASTER_KEY:-unused-by-postgres-and-redis}" docker compose up -d "$@") >&2
}

# _as_user USER CMD...: runs CMD as USER (we are root).
_as_user() {
  local user="$1"
  shift
  if command -v runuser >/dev/null 2>&1; then
    runuser -u "$user" -- "$@"
  else
    su -s /bin/sh "$user" -c "$(printf '%q ' "$@")"
  fi
}

# _pg_run OWNER CMD...: runs CMD as OWNER, or as ourselves when OWNER is empty.
_pg_run() {
  local owner="$1"
  shift
  if [ -n "$owner" ]; then _as_user "$owner" "$@"; else "$@"; fi
}

# Prints the directory holding initdb and pg_ctl (PATH first, else the newest /usr/lib/postgresql/*/bin).
_pg_bindir() {
  local initdb pg_ctl dir
  initdb="$(command -v initdb 2>/dev/null || true)"
  pg_ctl="$(command -v pg_ctl 2>/dev/null || true)"
  if [ -n "$initdb" ] && [ -n "$pg_ctl" ]; then
    dir="$(dirname "$(readlink -f "$initdb")")"
    if [ -x "$dir/pg_ctl" ]; then
      printf '%s\n' "$dir"
      return 0
    fi
  fi
  while IFS= read -r dir; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      printf '%s\n' "$dir"
      return 0
    fi
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
  return 1
}

# Installs Debian's postgresql without letting the package create (and start) its own cluster, whose
# TCP logins would want a password; we make a trust-auth cluster of our own instead.
_install_postgres() {
  local conf=/etc/postgresql-common/createcluster.d/zz-tessera-no-main-cluster.conf rc=0
  if _is_root; then
    { mkdir -p "$(dirname "$conf")" && echo "create_main_cluster = false" >"$conf"; } 2>/dev/null || conf=""
  else
    conf=""
  fi
  _apt_install postgresql postgresql-client || rc=$?
  [ -z "$conf" ] || rm -f "$conf"
  return "$rc"
}

# Starts the Debian cluster (the first version under /etc/postgresql) if there is one.
_start_debian_cluster() {
  local version
  command -v pg_ctlcluster >/dev/null 2>&1 || return 1
  # shellcheck disable=SC2012 # version directories are plain numbers
  version="$(ls /etc/postgresql 2>/dev/null | head -1)"
  [ -n "$version" ] && [ -d "/etc/postgresql/$version/main" ] || return 1
  _svc_log "starting the Debian cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || {
    _svc_log "pg_ctlcluster $version main start failed"
    return 1
  }
}

# Starts (initialising first if needed) a private development cluster in .tessera/pg: trust auth,
# 127.0.0.1:5432 only, no Unix socket.
_start_private_cluster() {
  local bindir data="$TESSERA_ROOT/.tessera/pg" owner="" log
  if ! bindir="$(_pg_bindir)"; then
    _install_postgres || return 1
    bindir="$(_pg_bindir)" || {
      _svc_err "PostgreSQL is installed but initdb/pg_ctl were not found under /usr/lib/postgresql/*/bin"
      return 1
    }
  fi
  log="$data/postgres.log"

  if _is_root; then
    # initdb and postgres refuse to run as root: use the postgres user, else make a tessera-pg user.
    if id -u postgres >/dev/null 2>&1; then
      owner=postgres
    elif id -u tessera-pg >/dev/null 2>&1; then
      owner=tessera-pg
    else
      _svc_log "creating system user tessera-pg to own the development cluster"
      useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tessera-pg ||
        {
          _svc_err "could not create user tessera-pg"
          return 1
        }
      owner=tessera-pg
    fi
    mkdir -p "$data" && chown "$owner:" "$data" && chmod 700 "$data" || return 1
    if ! _as_user "$owner" test -w "$data"; then
      _svc_err "$owner cannot write $data (a parent directory is not searchable by $owner); make the repository readable by it or start Postgres yourself"
      return 1
    fi
  else
    mkdir -p "$data" && chmod 700 "$data" || return 1
  fi

  if [ ! -s "$data/PG_VERSION" ]; then
    _svc_log "initialising a development cluster in $data ($bindir)"
    _pg_run "$owner" "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$TESSERA_ROOT/.tessera/initdb.log" 2>&1 || {
      _svc_err "initdb failed; see .tessera/initdb.log"
      return 1
    }
    cat >>"$data/postgresql.conf" <<CONF || return 1

# --- Tessera development cluster (scripts/lib/services.sh) ---
listen_addresses = '$TESSERA_PG_HOST'
port = $TESSERA_PG_PORT
unix_socket_directories = ''
max_connections = 200
synchronous_commit = off
CONF
    # initdb --auth=trust already trusts every local connection; say so explicitly for TCP on loopback.
    cat >"$data/pg_hba.conf" <<'HBA' || return 1
# Tessera development cluster: loopback only, no passwords.
host  all  all  127.0.0.1/32  trust
host  all  all  ::1/128       trust
HBA
  fi

  _svc_log "starting the development cluster in $data (log: $log)"
  _pg_run "$owner" "$bindir/pg_ctl" -D "$data" -l "$log" -w -t "${TESSERA_SERVICES_TIMEOUT:-30}" start >&2 || {
    _svc_err "pg_ctl start failed; last lines of $log:"
    tail -n 20 "$log" >&2 2>/dev/null || true
    return 1
  }
}

_start_local_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    _apt_install redis-server redis-tools || return 1
    # The package may have started its own server already.
    if _redis_answers; then
      return 0
    fi
  elif ! command -v redis-cli >/dev/null 2>&1 && _is_root && command -v apt-get >/dev/null 2>&1; then
    _apt_install redis-tools || true # optional: _redis_answers can do without redis-cli
  fi
  mkdir -p "$TESSERA_ROOT/.tessera" || return 1
  _svc_log "starting redis-server on $TESSERA_REDIS_HOST:$TESSERA_REDIS_PORT (log: .tessera/redis.log)"
  redis-server --daemonize yes --bind "$TESSERA_REDIS_HOST" --port "$TESSERA_REDIS_PORT" --save "" --appendonly no \
    --dir "$TESSERA_ROOT/.tessera" --logfile "$TESSERA_ROOT/.tessera/redis.log" >&2 || {
    _svc_err "redis-server failed to start"
    return 1
  }
}

# ---------------------------------------------------------------------------------------------------------
# Public functions

ensure_services() {
  local need_pg="" need_redis=""
  _pg_answers || need_pg=1
  _redis_answers || need_redis=1

  if [ -n "$need_pg" ] || [ -n "$need_redis" ]; then
    if _docker_works && [ -f "$TESSERA_ROOT/docker-compose.yml" ]; then
      local wanted=()
      [ -n "$need_pg" ] && wanted+=(postgres)
      [ -n "$need_redis" ] && wanted+=(redis)
      _compose_up "${wanted[@]}" || {
        _svc_err "docker compose up -d ${wanted[*]} failed"
        return 1
      }
    else
      if [ -n "$need_pg" ]; then
        _start_debian_cluster || _start_private_cluster || {
          _svc_err "could not start PostgreSQL on $TESSERA_PG_HOST:$TESSERA_PG_PORT"
          return 1
        }
      fi
      if [ -n "$need_redis" ]; then
        _start_local_redis || {
          _svc_err "could not start Redis on $TESSERA_REDIS_HOST:$TESSERA_REDIS_PORT"
          return 1
        }
      fi
    fi
    if [ -n "$need_pg" ]; then
      _svc_log "waiting for PostgreSQL on $TESSERA_PG_HOST:$TESSERA_PG_PORT"
      _wait_for "PostgreSQL on $TESSERA_PG_HOST:$TESSERA_PG_PORT" _pg_answers || return 1
    fi
    if [ -n "$need_redis" ]; then
      _svc_log "waiting for Redis on $TESSERA_REDIS_HOST:$TESSERA_REDIS_PORT"
      _wait_for "Redis on $TESSERA_REDIS_HOST:$TESSERA_REDIS_PORT" _redis_answers || return 1
    fi
  fi

  # Answering is not enough: the tests and scripts/run log in as postgres without a password.
  if ! _wait_for "a passwordless PostgreSQL login as user postgres" _pg_login_ok 10; then
    _svc_err "PostgreSQL answers on $TESSERA_PG_HOST:$TESSERA_PG_PORT but user postgres cannot log in without a password;" \
      "allow it (pg_hba.conf: 'host all postgres 127.0.0.1/32 trust'), or set PGPASSWORD"
    return 1
  fi
  _svc_log "PostgreSQL ($TESSERA_PG_HOST:$TESSERA_PG_PORT) and Redis ($TESSERA_REDIS_HOST:$TESSERA_REDIS_PORT) answer"
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    local bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    if [ -x "$bin/cargo" ]; then
      export PATH="$bin:$PATH"
    else
      printf 'rust: ERROR: cargo not found on PATH nor in %s; install a Rust toolchain (https://rustup.rs)\n' "$bin" >&2
      return 1
    fi
  fi
}

ensure_rust() {
  ensure_cargo || return 1
  local missing=()
  cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
  if [ "${#missing[@]}" -gt 0 ]; then
    if command -v rustup >/dev/null 2>&1; then
      printf 'rust: adding missing components: %s\n' "${missing[*]}" >&2
      rustup component add "${missing[@]}" >&2 || {
        printf 'rust: ERROR: rustup component add %s failed\n' "${missing[*]}" >&2
        return 1
      }
    else
      printf 'rust: ERROR: missing %s and no rustup to add them\n' "${missing[*]}" >&2
      return 1
    fi
  fi
}

# Run directly: just make sure the services answer.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ensure_services
fi

# ---------------------------------------------------------------------------------------------------------
# Tools the scripts need

# ensure_command CMD PKG: CMD is on PATH, installing the Debian package PKG when it is missing (which needs
# root; otherwise the message says what to install). The one place the scripts install a tool: PKG
# postgresql (pgbench) is installed without the cluster Debian's package would make and start.
ensure_command() {
  command -v "$1" >/dev/null 2>&1 && return 0
  case "$2" in
    postgresql) _install_postgres || return 1 ;;
    *) _apt_install "$2" || return 1 ;;
  esac
  command -v "$1" >/dev/null 2>&1 || {
    _svc_err "the Debian package $2 is installed but $1 is still not on PATH"
    return 1
  }
}

# ensure_python_tool CMD PIP_SPEC: prints the path of CMD from a virtual environment of this repository's
# own (target/tools-venv), installing PIP_SPEC there when needed: never into the system Python.
ensure_python_tool() {
  local cmd="$1" spec="$2" venv="$TESSERA_ROOT/target/tools-venv"
  if [ ! -x "$venv/bin/python" ]; then
    ensure_command python3 python3 || return 1
    python3 -m venv "$venv" >&2 2>/dev/null || {
      _apt_install python3-venv && python3 -m venv "$venv" >&2
    } || {
      _svc_err "cannot create a Python virtual environment in $venv"
      return 1
    }
  fi
  if [ ! -x "$venv/bin/$cmd" ]; then
    _svc_log "installing $spec into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$spec" >&2 || {
      _svc_err "pip install $spec failed"
      return 1
    }
  fi
  printf '%s\n' "$venv/bin/$cmd"
}

# drop_leftover_databases [SERVER_URL [PREFIX...]]: drops the databases that interrupted runs of the API
# tests and of the scripts run by scripts/test left behind: named PREFIX_* (by default tessera_test,
# tessera_fuzz, tessera_tour, tessera_docs, tessera_lb and tessera_browser). Only those older than 10 minutes (by the
# age of their PG_VERSION file), and without FORCE, so a run going on at the same time keeps its
# databases.
drop_leftover_databases() {
  command -v psql >/dev/null 2>&1 || return 0
  local url="${1:-${DATABASE_URL:-postgres://postgres@$TESSERA_PG_HOST:$TESSERA_PG_PORT/postgres}}" names name
  local prefixes=("${@:2}") prefix like=""
  [ "${#prefixes[@]}" -gt 0 ] || prefixes=(tessera_test tessera_fuzz tessera_tour tessera_docs tessera_lb tessera_browser)
  for prefix in "${prefixes[@]}"; do
    like="${like:+$like OR }datname LIKE '${prefix//_/\\_}\\_%'"
  done
  names="$(psql -w "$url" -Atqc "
    SELECT datname FROM pg_database
    WHERE ($like)
      AND (pg_stat_file('base/' || oid || '/PG_VERSION', true)).modification < now() - interval '10 minutes'" 2>/dev/null)" ||
    return 0
  [ -n "$names" ] || return 0
  printf '==> dropping %s leftover test database(s)\n' "$(printf '%s\n' "$names" | wc -l)" >&2
  while IFS= read -r name; do
    psql -w "$url" -qc "DROP DATABASE IF EXISTS \"$name\"" >/dev/null 2>&1 || true
  done <<<"$names"
}
