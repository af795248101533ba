# shellcheck shell=bash
# Shell functions the hack/ scripts share: each behaviour two scripts had
# written out alike is written here once. Source it right after
# `set -euo pipefail`:
#
#   # shellcheck source=hack/lib.sh
#   . "$(dirname "$0")/lib.sh"
#
# Sourcing sets root (the repository's top directory) and defines functions;
# it runs nothing else and changes no option, directory or trap. The
# functions expect the caller's cwd to be root and call the caller's own
# log and die, so every message keeps the script's prefix.
#
# Not for hack/kind-node-image.sh: its image's cache key is a hash of that
# script alone, which would miss a change here.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# trap_exit FUNC runs FUNC on every way out of the script: at exit, and at
# Ctrl-C and SIGTERM by exiting 130 and 143, so that FUNC sees that code in $?.
trap_exit() {
  # shellcheck disable=SC2064 # FUNC's name, expanded now.
  trap "$1" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# env_value FILE NAME prints NAME's last value in FILE, an env file of NAME=VALUE
# lines such as hack/local-cluster.sh and hack/local-postgres.sh write.
env_value() { sed -n "s/^$2=//p" "$1" | tail -n 1; }

# e2e_images sets, unless the caller has, VERSION as the Makefile does (git
# describe), and from it what the e2e suite tests: IMAGE and
# CUSTOM_WORKER_IMAGE, and ARCHIVE and CUSTOM_ARCHIVE, the archives `make
# image` and `make image-custom-worker` write for them.
e2e_images() {
  VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
  IMAGE="${IMAGE:-docker.io/projectionist/projectionist:$VERSION}"
  CUSTOM_WORKER_IMAGE="${CUSTOM_WORKER_IMAGE:-docker.io/projectionist/custom-worker:$VERSION}"
  ARCHIVE="$root/bin/images/projectionist-$VERSION.tar"
  CUSTOM_ARCHIVE="$root/bin/images/custom-worker-$VERSION.tar"
}

# require_e2e_archives TARGET dies unless both archives of e2e_images exist;
# TARGET is the make target that builds them before running the script.
require_e2e_archives() {
  [ -f "$ARCHIVE" ] || die "no image archive $ARCHIVE: run make image (or make $1, which does)"
  [ -f "$CUSTOM_ARCHIVE" ] || die "no image archive $CUSTOM_ARCHIVE: run make image-custom-worker (or make $1, which does)"
}

# run_e2e_suite KUBECONFIG PG_DIR T0 WHAT runs `make test-e2e` on the images
# of e2e_images, against the cluster of KUBECONFIG and the PostgreSQL
# hack/local-postgres.sh runs with state PG_DIR. On success it logs how long
# the suite took and how long since T0 (a $SECONDS value), WHAT included.
run_e2e_suite() {
  local kubeconfig="$1" pg_envfile="$2/env" t0="$3" what="$4" t1
  log "running the suite (image $IMAGE)"
  t1=$SECONDS
  # Through the environment, not make's command line: the DSNs hold a password.
  KUBECONFIG="$kubeconfig" \
    E2E_IMAGE="$IMAGE" \
    E2E_CUSTOM_IMAGE="$CUSTOM_WORKER_IMAGE" \
    E2E_DATABASE_CA="$(env_value "$pg_envfile" CA_FILE)" \
    E2E_PULL_POLICY="${E2E_PULL_POLICY:-IfNotPresent}" \
    E2E_DATABASE_URL="$(env_value "$pg_envfile" DATABASE_URL)" \
    E2E_POD_DATABASE_URL="$(env_value "$pg_envfile" POD_DATABASE_URL)" \
    E2E_KEEP_ON_FAILURE="${KEEP_ON_FAILURE:-}" \
    make --no-print-directory test-e2e
  log "suite passed in $((SECONDS - t1))s ($what included: $((SECONDS - t0))s)"
}

# local_cluster_gone STATE logs "LEFT BEHIND: ..." for each trace of
# hack/local-cluster.sh (state directory STATE) that its `down` should have
# removed from the host: the bridge cni0, KUBE-/CNI-/PROJECTIONIST- iptables
# chains, mounts under STATE, /var/lib/kubelet or /run/containerd. It fails
# when it found any. (Whether STATE itself is gone the caller checks, in its
# own order with its other checks.)
local_cluster_gone() {
  local state="$1" gone=true
  if ip link show cni0 >/dev/null 2>&1; then log "LEFT BEHIND: bridge cni0"; gone=false; fi
  if iptables-save 2>/dev/null | grep -qE '^:(KUBE-|CNI-|PROJECTIONIST-)'; then
    log "LEFT BEHIND: iptables chains"; gone=false
  fi
  if grep -qE " ($state|/var/lib/kubelet|/run/containerd)" /proc/self/mounts; then
    log "LEFT BEHIND: mounts"; gone=false
  fi
  $gone
}

# docker_engine_start exports DOCKER_HOST for the Docker engine that
# answers, else for one hack/docker-engine.sh starts, and sets
# engine_started non-empty when it started one. Call it after the trap that
# calls docker_engine_stop is set.
docker_engine_start() {
  local env_out
  env_out="$(hack/docker-engine.sh start)"
  eval "$env_out"
  export DOCKER_HOST
  engine_started="${DOCKER_ENGINE_STARTED:-}"
}

# docker_engine_stop stops the engine docker_engine_start started, if it did.
docker_engine_stop() {
  if [ -n "${engine_started:-}" ]; then
    hack/docker-engine.sh stop
  fi
}
