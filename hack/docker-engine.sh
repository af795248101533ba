#!/usr/bin/env bash
# A Docker engine for the scripts that need one (hack/dockerfile-test.sh,
# hack/kind-e2e.sh), started only when none answers:
#
#   eval "$(hack/docker-engine.sh start)"   # prints DOCKER_HOST=... (and
#                                           # DOCKER_ENGINE_STARTED=1 if it
#                                           # started one)
#   hack/docker-engine.sh stop              # stops the one it started
#
# If `docker info` already answers (DOCKER_HOST or the default socket), that
# engine is used and nothing is started or stopped. Otherwise it starts
# Debian's dockerd (apt-get install docker.io; installed here when missing
# and running as root) with its own data root, exec root and socket under
# STATE (default bin/docker-engine), so it never touches /var/lib/docker or
# a system engine, and with
#
#   --iptables=false --ip6tables=false  Docker writes no NAT or FORWARD rule:
#                                       nothing masquerades a container's
#                                       traffic off this machine;
#   --ip-forward=false                  the host's net.ipv4.ip_forward is left
#                                       as it is (Docker sets it to 1);
#   --bridge=none                       no default bridge (docker0);
#                                       containers run with --network none
#                                       unless a script makes its own network
#                                       and fences it (hack/kind-e2e.sh);
#   --default-runtime bounded-runc      only where root lacks a capability
#                                       (CAP_SYS_RESOURCE on some VMs):
#                                       hack/bounded-runc drops it from
#                                       privileged containers, which runc
#                                       would otherwise refuse to start.
#
# `stop` sends SIGTERM to that dockerd only (by the PID it recorded, checked
# against its command line), SIGKILL after 30 s, then removes what dockerd
# leaves behind: containerd shims of its exec root, overlay mounts under the
# data root, the socket and the state directory (images included: they are
# throwaway, rebuilt from bin/images archives).
#
# Settings (environment): DOCKER_ENGINE_DIR (STATE), DOCKERD (default
# dockerd on PATH).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${DOCKER_ENGINE_DIR:-$root/bin/docker-engine}"
SOCK="$STATE/docker.sock"
PIDFILE="$STATE/dockerd.pid"

log() { echo "docker-engine: $*" >&2; }
die() { log "$*"; exit 1; }

answers() { timeout 10 docker info >/dev/null 2>&1; }

# our_pid: the recorded dockerd PID when that process is still our dockerd.
our_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 0
  pid="$(cat "$PIDFILE")"
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--data-root $STATE/data"; then
    echo "$pid"
  fi
}

cmd_start() {
  command -v docker >/dev/null || install_docker
  if [ -z "$(our_pid)" ] && answers; then
    # Someone else's engine: used, never stopped.
    log "using the Docker engine that answers at ${DOCKER_HOST:-the default socket}"
    echo "DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}"
    return
  fi
  if [ -n "$(our_pid)" ]; then
    # Started by an earlier call, whose caller stops it: not ours to stop.
    log "using the engine an earlier call started (pid $(our_pid))"
    echo "DOCKER_HOST=unix://$SOCK"
    return
  fi
  local dockerd="${DOCKERD:-$(command -v dockerd || true)}"
  [ -n "$dockerd" ] || install_docker
  dockerd="${DOCKERD:-$(command -v dockerd)}"
  mkdir -p "$STATE/data" "$STATE/exec"
  # Images' layers hold Go trees (the Dockerfile test's Go base is a GOROOT):
  # a go.mod here makes this directory a module of its own, which `go vet
  # ./...` and `go test ./...` in the repository skip while the engine runs.
  printf '%s\n' '// Not a module: keeps go ./... out of the Docker engine data (hack/docker-engine.sh).' 'module ignore' > "$STATE/go.mod"
  log "starting $dockerd (data and exec roots under $STATE)"
  # setsid: the engine must not get the calling shell's Ctrl-C before the
  # caller's trap has stopped its containers.
  local runtime_flags=()
  if ! has_all_caps; then
    runtime_flags=(--add-runtime "bounded-runc=$root/hack/bounded-runc" --default-runtime bounded-runc)
    log "root lacks some capabilities here (CapBnd $(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)): containers run through hack/bounded-runc, which drops them from privileged containers' sets"
  fi
  setsid "$dockerd" --iptables=false --ip6tables=false --ip-forward=false --bridge=none "${runtime_flags[@]}" \
    --data-root "$STATE/data" --exec-root "$STATE/exec" \
    --pidfile "$PIDFILE" -H "unix://$SOCK" > "$STATE/dockerd.log" 2>&1 < /dev/null &
  local i
  for i in $(seq 1 60); do
    if DOCKER_HOST="unix://$SOCK" answers; then
      echo "DOCKER_HOST=unix://$SOCK"
      echo "DOCKER_ENGINE_STARTED=1"
      return
    fi
    sleep 0.5
  done
  tail -n 30 "$STATE/dockerd.log" >&2 || true
  die "dockerd did not answer within 30 s (log: $STATE/dockerd.log)"
}

# has_all_caps: whether this process's bounding set holds every capability
# the kernel knows (Docker gives privileged containers all of them).
has_all_caps() {
  local last bnd
  last="$(cat /proc/sys/kernel/cap_last_cap)"
  bnd="$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)"
  [ "$((16#$bnd))" = "$(( (1 << (last + 1)) - 1 ))" ]
}

install_docker() {
  [ "$(id -u)" = 0 ] || die "no Docker engine answers and dockerd is not installed: apt-get install docker.io"
  log "installing docker.io (Debian's Docker engine)"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >&2
}

cmd_stop() {
  local pid i
  pid="$(our_pid)"
  if [ -n "$pid" ]; then
    log "stopping dockerd (pid $pid)"
    # Containers first, while the engine still answers.
    local ids
    ids="$(DOCKER_HOST="unix://$SOCK" timeout 30 docker ps -aq 2>/dev/null || true)"
    [ -z "$ids" ] || DOCKER_HOST="unix://$SOCK" timeout 60 docker rm -f $ids >/dev/null 2>&1 || true
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "dockerd ignored SIGTERM for 30 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  # Shims of our exec root outlive a killed dockerd.
  local shim
  for shim in $(pgrep -f "containerd-shim.*$STATE/exec" 2>/dev/null || true); do
    kill -KILL "$shim" 2>/dev/null || true
  done
  if [ -d "$STATE" ]; then
    # Deepest first: overlay mounts, then the roots' own bind mounts.
    awk -v s="$STATE" 'index($2, s) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$STATE"
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
