#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for the local cluster's pods and for this host:
#
#   hack/local-postgres.sh start    # init (first time) and start; prints the env
#   hack/local-postgres.sh status   # running or not, and the env
#   hack/local-postgres.sh stop     # stop it and remove its data directory
#
# `make postgres-up` / `make postgres-down` run start / stop.
#
# The server listens on 127.0.0.1 and on HOST_IP, the host's own address,
# which pods of the local cluster reach un-NATed from their pod IPs (see
# /work/shared/LOCAL-CLUSTER.md), so pg_hba.conf allows POD_CIDR besides the
# host. Every TCP client authenticates with a password (scram-sha-256); the
# superuser "postgres" has no password and only logs in over the Unix
# socket (peer). The database "projectionist" belongs to the user
# "projectionist", whose password is generated at init; that user may
# create databases (the e2e suite makes one per run).
#
# `start` writes STATE/env (mode 600, shell syntax) and prints it:
#   PGPORT=...
#   HOST_IP=...
#   DATABASE_URL=postgres://projectionist:PW@127.0.0.1:PORT/projectionist?sslmode=disable
#   POD_DATABASE_URL=postgres://projectionist:PW@HOST_IP:PORT/projectionist?sslmode=disable
#   CA_FILE=STATE/tls/ca.crt   (the CA of the server's certificate)
#
# Settings (environment):
#   LOCAL_POSTGRES_DIR  the state directory (default bin/local-postgres); the
#                       data directory, socket, log and env live under it
#   PGPORT              the port (default: the first free one from 15432)
#   HOST_IP             default: HOST_IP of bin/local-cluster/env, else the
#                       source address of the default route (as
#                       hack/local-cluster.sh computes it)
#   POD_CIDR            default: POD_CIDR of bin/local-cluster/env, else
#                       10.244.0.0/16
#   PG_BIN              default: /usr/lib/postgresql/15/bin
#
# TLS is on, with a certificate for 127.0.0.1 and HOST_IP signed by a CA
# made at each start (openssl), so clients may use sslmode=verify-full with
# sslrootcert=STATE/tls/ca.crt (CA_FILE in the env); sslmode=disable keeps
# working.
#
# Throwaway means: fsync off, and `stop` deletes the data. `start` and
# `stop` are idempotent; `start` on a running server re-applies the listen
# addresses and pg_hba.conf (reload) and prints the env again. When run as
# root, initdb and postgres run as the "postgres" user (PostgreSQL refuses
# root), so the state directory's parents must be searchable by that user.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${LOCAL_POSTGRES_DIR:-$root/bin/local-postgres}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
CLUSTER_ENV="${CLUSTER_ENV:-$root/bin/local-cluster/env}"
DATA="$STATE/data"
SOCKET_DIR="$STATE/run"
LOG="$STATE/postgres.log"
TLS_DIR="$STATE/tls"
ENV_FILE="$STATE/env"
PASSWORD_FILE="$STATE/password"
DB_NAME=projectionist
DB_USER=projectionist

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# as_pg COMMAND...: runs COMMAND as the user PostgreSQL runs as.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# cluster_env NAME: NAME's value in the local cluster's env file, if any.
cluster_env() {
  [ -f "$CLUSTER_ENV" ] || return 0
  sed -n "s/^$1=//p" "$CLUSTER_ENV" | tail -n 1
}

host_ip() {
  local ip="${HOST_IP:-}"
  [ -n "$ip" ] || ip="$(cluster_env HOST_IP)"
  [ -n "$ip" ] || ip="$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n 1)"
  echo "$ip"
}

pod_cidr() {
  local cidr="${POD_CIDR:-}"
  [ -n "$cidr" ] || cidr="$(cluster_env POD_CIDR)"
  echo "${cidr:-10.244.0.0/16}"
}

port_in_use() {
  [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

free_port() {
  local p
  for p in $(seq 15432 15531); do
    port_in_use "$p" || { echo "$p"; return; }
  done
  die "no free port in 15432-15531; set PGPORT"
}

# postmaster_pid: the PID in postmaster.pid when that process is a live
# postgres, else nothing.
postmaster_pid() {
  local pid
  [ -f "$DATA/postmaster.pid" ] || return 0
  pid="$(head -n 1 "$DATA/postmaster.pid")"
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  if kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$PG_BIN/postgres")" ]; then
    echo "$pid"
  fi
}

running() { [ -n "$(postmaster_pid)" ]; }

# psql_admin: runs the SQL on standard input as the superuser, over the
# Unix socket.
psql_admin() {
  as_pg "$PG_BIN/psql" -h "$SOCKET_DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA
}

# write_tls: a CA and a server certificate for 127.0.0.1 and HOST_ADDR,
# made anew on every start (the host address may have changed).
write_tls() {
  command -v openssl >/dev/null || die "openssl is needed for the server's TLS certificate: apt-get install openssl"
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    umask 077
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -days 7 \
      -subj "/CN=projectionist local CA" -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -subj "/CN=$HOST_ADDR" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:%s,DNS:localhost\nextendedKeyUsage=serverAuth\n' "$HOST_ADDR" > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
      -extfile server.ext -out server.crt 2>/dev/null
    rm -f server.csr server.ext ca.srl ca.key
    chmod 644 ca.crt
  )
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$TLS_DIR" "$TLS_DIR/server.key" "$TLS_DIR/server.crt"
  fi
}

# write_config: the settings that depend on this run (port, addresses,
# clients); rewritten on every start, included from postgresql.conf.
write_config() {
  cat > "$DATA/local.conf" <<EOF
# Written by hack/local-postgres.sh on every start.
port = $PORT
listen_addresses = '127.0.0.1,$HOST_ADDR'
unix_socket_directories = '$SOCKET_DIR'
password_encryption = 'scram-sha-256'
max_connections = 300
# Throwaway: speed over durability.
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_connections = off
ssl = on
ssl_cert_file = '$TLS_DIR/server.crt'
ssl_key_file = '$TLS_DIR/server.key'
EOF
  cat > "$DATA/pg_hba.conf" <<EOF
# Written by hack/local-postgres.sh on every start.
# TYPE  DATABASE USER     ADDRESS           METHOD
local   all      postgres                   peer
local   all      all                        scram-sha-256
host    all      all      127.0.0.1/32      scram-sha-256
host    all      all      $HOST_ADDR/32     scram-sha-256
host    all      all      $CIDR             scram-sha-256
EOF
  chown postgres:postgres "$DATA/local.conf" "$DATA/pg_hba.conf" 2>/dev/null || true
  chmod 600 "$DATA/local.conf" "$DATA/pg_hba.conf"
}

init_cluster() {
  log "initializing a PostgreSQL cluster in $DATA"
  rm -rf "$DATA" "$SOCKET_DIR"
  mkdir -p "$DATA" "$SOCKET_DIR"
  touch "$LOG"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$DATA" "$SOCKET_DIR" "$LOG"
  fi
  chmod 700 "$DATA"
  as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 --no-instructions >/dev/null
  echo "include 'local.conf'" >> "$DATA/postgresql.conf"
  # Letters and digits only, so it needs no escaping in a URL.
  (umask 077; head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | head -c 24 > "$PASSWORD_FILE")
  rm -f "$ENV_FILE"
}

create_database() {
  local password
  password="$(cat "$PASSWORD_FILE")"
  # The password goes through standard input into a psql variable (:'pw'
  # quotes it), never a command line.
  psql_admin <<EOF
\set pw '$password'
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', '$DB_USER', :'pw')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', '$DB_USER', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', '$DB_NAME', '$DB_USER')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME') \gexec
EOF
}

write_env() {
  local password
  password="$(cat "$PASSWORD_FILE")"
  (umask 077; cat > "$ENV_FILE" <<EOF
PGPORT=$PORT
HOST_IP=$HOST_ADDR
POD_CIDR=$CIDR
DATABASE_URL=postgres://$DB_USER:$password@127.0.0.1:$PORT/$DB_NAME?sslmode=disable
POD_DATABASE_URL=postgres://$DB_USER:$password@$HOST_ADDR:$PORT/$DB_NAME?sslmode=disable
CA_FILE=$TLS_DIR/ca.crt
EOF
  )
}

# current_port: the port of the running server, from postmaster.pid.
current_port() { sed -n 4p "$DATA/postmaster.pid"; }

# install_postgres installs Debian's postgresql-15 when its server binaries
# are missing and PG_BIN is the default, without creating or starting a
# system cluster (the same way .ci/run does).
install_postgres() {
  [ "$PG_BIN" = /usr/lib/postgresql/15/bin ] && command -v apt-get >/dev/null || return 0
  log "installing postgresql-15 (server binaries only; no system cluster is created)"
  mkdir -p /etc/postgresql-common
  [ -e /etc/postgresql-common/createcluster.conf ] || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  apt-get update -q >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql-15 >/dev/null
}

cmd_start() {
  if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/postgres" ]; then
    install_postgres
  fi
  if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/postgres" ]; then
    die "no PostgreSQL server binaries in $PG_BIN: apt-get install postgresql-15 (or set PG_BIN)"
  fi
  command -v ss >/dev/null || die "ss (iproute2) is needed to find a free port"
  HOST_ADDR="$(host_ip)"
  [ -n "$HOST_ADDR" ] || die "cannot tell this host's address (no default route?); set HOST_IP"
  CIDR="$(pod_cidr)"

  mkdir -p "$STATE"
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$STATE"; then
    die "the postgres user cannot reach $STATE (a parent directory is not searchable); set LOCAL_POSTGRES_DIR elsewhere"
  fi

  if running; then
    PORT="$(current_port)"
    if [ -n "${PGPORT:-}" ] && [ "$PGPORT" != "$PORT" ]; then
      die "already running on port $PORT, not PGPORT=$PGPORT: stop it first"
    fi
    log "already running (pid $(postmaster_pid), port $PORT); re-applying pg_hba.conf and the certificate"
    write_tls
    write_config
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" reload >/dev/null
  else
    PORT="${PGPORT:-$(free_port)}"
    port_in_use "$PORT" && die "port $PORT is in use"
    if [ ! -f "$DATA/PG_VERSION" ] || [ ! -s "$PASSWORD_FILE" ]; then
      init_cluster
    fi
    write_tls
    write_config
    log "starting PostgreSQL on 127.0.0.1:$PORT and $HOST_ADDR:$PORT (clients: localhost, $HOST_ADDR, $CIDR)"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null; then
      tail -n 20 "$LOG" >&2 || true
      die "PostgreSQL did not start (log: $LOG)"
    fi
  fi
  create_database
  write_env
  log "ready; env in $ENV_FILE"
  cat "$ENV_FILE"
}

cmd_stop() {
  local pid
  if [ -d "$DATA" ]; then
    pid="$(postmaster_pid)"
    if [ -n "$pid" ]; then
      log "stopping PostgreSQL (pid $pid)"
      if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null; then
        log "pg_ctl stop failed; killing pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      local _
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -0 "$pid" 2>/dev/null && die "PostgreSQL (pid $pid) is still running"
    fi
  fi
  if [ -e "$STATE" ]; then
    rm -rf "$STATE"
    log "removed $STATE"
  fi
}

cmd_status() {
  if running; then
    PORT="$(current_port)"
    echo "PostgreSQL is running: pid $(postmaster_pid), port $PORT, data $DATA"
    [ -f "$ENV_FILE" ] && cat "$ENV_FILE"
    return 0
  fi
  if [ -d "$DATA" ]; then
    echo "PostgreSQL is not running (data directory $DATA present; start or stop it)"
  else
    echo "PostgreSQL is not running"
  fi
  return 1
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
