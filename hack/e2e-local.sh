#!/usr/bin/env bash
# Runs the end-to-end suite (test/e2e) on this machine, without Docker:
#
#   make test-e2e-local      # builds the image first, then runs this
#
# 1. starts the local cluster (hack/local-cluster.sh up), which imports every
#    archive in bin/images/, the projectionist image among them;
# 2. starts a throwaway PostgreSQL (hack/local-postgres.sh start) listening on
#    127.0.0.1 and on the host address the pods reach, allowing the pod CIDR;
# 3. runs `make test-e2e` with KUBECONFIG, E2E_IMAGE, E2E_DATABASE_URL (for
#    the test process) and E2E_POD_DATABASE_URL (for the pods);
# 4. always, even on failure or Ctrl-C: stops that PostgreSQL and deletes its
#    data, and tears the cluster down (hack/local-cluster.sh down: processes,
#    mounts, iptables chains, bridge, sysctls), then checks that nothing of
#    either is left.
#
# It refuses to run while a local cluster exists already (it would tear it
# down afterwards): use `make test-e2e` against that one, or `make
# cluster-down` first.
#
# Settings (environment):
#   IMAGE               the image to test (default
#                       docker.io/projectionist/projectionist:$VERSION); its
#                       archive must be bin/images/projectionist-$VERSION.tar
#   CUSTOM_WORKER_IMAGE the image of examples/custom-worker (default
#                       docker.io/projectionist/custom-worker:$VERSION); its
#                       archive must be bin/images/custom-worker-$VERSION.tar
#   VERSION             default: git describe --tags --always --dirty
#   E2E_POSTGRES_DIR    the PostgreSQL's state (default bin/e2e-local/postgres)
#   KEEP_ON_FAILURE     non-empty: on failure leave the cluster, the database
#                       and the test's namespace for inspection (tear down
#                       later with make postgres-down LOCAL_POSTGRES_DIR=...
#                       and make cluster-down)
#   KUBE_VERSION, KUBE_BIN  passed to hack/local-cluster.sh
set -euo pipefail

# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$root"
e2e_images
CLUSTER_DIR="$root/bin/local-cluster"
PG_DIR="${E2E_POSTGRES_DIR:-$root/bin/e2e-local/postgres}"
export KUBE_VERSION="${KUBE_VERSION:-v1.37.1}"
export KUBE_BIN="${KUBE_BIN:-$root/bin/k8s/$KUBE_VERSION}"

log() { printf '%s e2e-local: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

started_cluster=false
started_postgres=false

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ "$rc" -ne 0 ] && [ -n "${KEEP_ON_FAILURE:-}" ]; then
    log "failed (exit $rc); KEEP_ON_FAILURE is set, leaving the cluster ($CLUSTER_DIR) and PostgreSQL ($PG_DIR) running"
    log "tear down: LOCAL_POSTGRES_DIR=$PG_DIR hack/local-postgres.sh stop; make cluster-down"
    exit "$rc"
  fi
  local failed=false
  if $started_postgres; then
    LOCAL_POSTGRES_DIR="$PG_DIR" hack/local-postgres.sh stop || failed=true
    [ -n "${E2E_POSTGRES_DIR:-}" ] || rmdir "$root/bin/e2e-local" 2>/dev/null
  fi
  if $started_cluster; then
    hack/local-cluster.sh down || failed=true
  fi
  # What must be gone now.
  if $started_postgres && [ -e "$PG_DIR" ]; then
    log "LEFT BEHIND: $PG_DIR"; failed=true
  fi
  if $started_cluster; then
    [ ! -e "$CLUSTER_DIR" ] || { log "LEFT BEHIND: $CLUSTER_DIR"; failed=true; }
    local_cluster_gone "$CLUSTER_DIR" || failed=true
  fi
  if $failed; then
    log "tear-down incomplete (see above)"
    [ "$rc" -ne 0 ] || rc=1
  fi
  if [ "$rc" -eq 0 ]; then log "passed; cluster and PostgreSQL torn down"; else log "FAILED (exit $rc); cluster and PostgreSQL torn down"; fi
  exit "$rc"
}
trap_exit teardown

[ "$(id -u)" -eq 0 ] || die "run as root: the local cluster needs it"
require_e2e_archives test-e2e-local
if [ -e "$CLUSTER_DIR" ]; then
  die "a local cluster exists already ($CLUSTER_DIR); this script would tear it down afterwards. Run the suite against it with
  KUBECONFIG=$CLUSTER_DIR/kubeconfig E2E_IMAGE=$IMAGE E2E_DATABASE_URL=... E2E_POD_DATABASE_URL=... make test-e2e
or stop it first (make cluster-down)"
fi
if LOCAL_POSTGRES_DIR="$PG_DIR" hack/local-postgres.sh status >/dev/null 2>&1 || [ -e "$PG_DIR" ]; then
  die "$PG_DIR exists already (an earlier run kept?): LOCAL_POSTGRES_DIR=$PG_DIR hack/local-postgres.sh stop"
fi

t0=$SECONDS
log "starting the local cluster"
started_cluster=true
KEEP_ON_FAILURE="${KEEP_ON_FAILURE:-}" hack/local-cluster.sh up
cluster_env() { env_value "$CLUSTER_DIR/env" "$1"; }
KUBECONFIG_FILE="$(cluster_env KUBECONFIG)"
log "local cluster up in $((SECONDS - t0))s"

log "starting PostgreSQL"
started_postgres=true
LOCAL_POSTGRES_DIR="$PG_DIR" CLUSTER_ENV="$CLUSTER_DIR/env" \
  HOST_IP="$(cluster_env HOST_IP)" POD_CIDR="$(cluster_env POD_CIDR)" \
  hack/local-postgres.sh start >/dev/null

run_e2e_suite "$KUBECONFIG_FILE" "$PG_DIR" "$t0" "cluster and PostgreSQL start"
