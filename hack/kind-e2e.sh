#!/usr/bin/env bash
# Runs the end-to-end suite (test/e2e) on a kind cluster, for hosts with
# Docker (CI runners, laptops):
#
#   make image && hack/kind-e2e.sh
#
# NOT RUN where it was written: that machine has no Docker (it runs the
# suite with make test-e2e-local instead). It follows kind's documented
# commands (kind create cluster --name --image --wait, kind load
# image-archive, kind get kubeconfig, kind delete cluster) and kind's
# Docker network, "kind".
#
# 1. creates a kind cluster (KIND_CLUSTER, default projectionist-e2e) and
#    writes its kubeconfig to a temporary file (your ~/.kube/config is left
#    alone);
# 2. loads bin/images/projectionist-$VERSION.tar into its node with
#    `kind load image-archive` (the image's name stays
#    docker.io/projectionist/projectionist:$VERSION);
# 3. starts a postgres:15 container on the "kind" Docker network, with a
#    random password, reachable from this host on a published loopback port
#    and from the pods at its address on that network (pod traffic to it is
#    masqueraded by the kind node, so pg_hba's default "host all all all
#    scram-sha-256" of the postgres image applies);
# 4. runs `make test-e2e` with KUBECONFIG, E2E_IMAGE, E2E_DATABASE_URL and
#    E2E_POD_DATABASE_URL;
# 5. always deletes the PostgreSQL container and the kind cluster (a trap),
#    unless KEEP_ON_FAILURE is set and the suite failed.
#
# Needs docker, kind (https://kind.sigs.k8s.io) and go on PATH. Settings
# (environment): VERSION and IMAGE as in the Makefile, KIND_CLUSTER,
# KIND_NODE_IMAGE (e.g. kindest/node:v1.33.1; default kind's own),
# POSTGRES_IMAGE (default postgres:15), KEEP_ON_FAILURE.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
IMAGE="${IMAGE:-docker.io/projectionist/projectionist:$VERSION}"
ARCHIVE="$root/bin/images/projectionist-$VERSION.tar"
KIND_CLUSTER="${KIND_CLUSTER:-projectionist-e2e}"
POSTGRES_IMAGE="${POSTGRES_IMAGE:-postgres:15}"
PG_CONTAINER="$KIND_CLUSTER-postgres"
KIND_NETWORK=kind

log() { printf '%s kind-e2e: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in docker kind go make; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
[ -f "$ARCHIVE" ] || die "no image archive $ARCHIVE: run make image"

workdir="$(mktemp -d)"
KUBECONFIG_FILE="$workdir/kubeconfig"
created_cluster=false
started_postgres=false

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ "$rc" -ne 0 ] && [ -n "${KEEP_ON_FAILURE:-}" ]; then
    log "failed (exit $rc); KEEP_ON_FAILURE: keeping cluster $KIND_CLUSTER (kubeconfig $KUBECONFIG_FILE) and container $PG_CONTAINER"
    log "tear down: docker rm -f $PG_CONTAINER; kind delete cluster --name $KIND_CLUSTER"
    exit "$rc"
  fi
  if $started_postgres; then
    docker rm -f "$PG_CONTAINER" >/dev/null
  fi
  if $created_cluster; then
    kind delete cluster --name "$KIND_CLUSTER"
  fi
  rm -rf "$workdir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  die "a kind cluster named $KIND_CLUSTER exists already: kind delete cluster --name $KIND_CLUSTER, or set KIND_CLUSTER"
fi

log "creating kind cluster $KIND_CLUSTER"
created_cluster=true
kind create cluster --name "$KIND_CLUSTER" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} \
  --kubeconfig "$KUBECONFIG_FILE" --wait 5m

log "loading $ARCHIVE into the node"
kind load image-archive "$ARCHIVE" --name "$KIND_CLUSTER"

log "starting $POSTGRES_IMAGE as container $PG_CONTAINER on the $KIND_NETWORK network"
password="$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)"
started_postgres=true
# Published on loopback only, on a port Docker picks; the password goes in
# through the environment of `docker run`, not its command line.
POSTGRES_PASSWORD="$password" docker run -d --name "$PG_CONTAINER" --network "$KIND_NETWORK" \
  -e POSTGRES_PASSWORD -e POSTGRES_USER=projectionist -e POSTGRES_DB=projectionist \
  -p 127.0.0.1::5432 "$POSTGRES_IMAGE" \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 >/dev/null

host_port="$(docker port "$PG_CONTAINER" 5432/tcp | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -n 1)"
[ -n "$host_port" ] || die "cannot tell the port Docker published for $PG_CONTAINER"
pg_ip="$(docker inspect -f "{{(index .NetworkSettings.Networks \"$KIND_NETWORK\").IPAddress}}" "$PG_CONTAINER")"
[ -n "$pg_ip" ] || die "cannot tell $PG_CONTAINER's address on the $KIND_NETWORK network"

log "waiting for PostgreSQL"
for _ in $(seq 1 120); do
  # pg_isready over TCP: the image's entrypoint runs a temporary server on
  # the Unix socket only while it initializes, so TCP answers once the real
  # one is up.
  if docker exec "$PG_CONTAINER" pg_isready -h 127.0.0.1 -U projectionist -d projectionist >/dev/null 2>&1; then
    break
  fi
  sleep 0.5
done
docker exec "$PG_CONTAINER" pg_isready -h 127.0.0.1 -U projectionist -d projectionist >/dev/null ||
  die "PostgreSQL in $PG_CONTAINER did not become ready: $(docker logs --tail 20 "$PG_CONTAINER" 2>&1)"

log "running the suite (image $IMAGE, PostgreSQL $pg_ip:5432 for pods, 127.0.0.1:$host_port for this host)"
KUBECONFIG="$KUBECONFIG_FILE" \
  E2E_IMAGE="$IMAGE" \
  E2E_PULL_POLICY=IfNotPresent \
  E2E_DATABASE_URL="postgres://projectionist:$password@127.0.0.1:$host_port/projectionist?sslmode=disable" \
  E2E_POD_DATABASE_URL="postgres://projectionist:$password@$pg_ip:5432/projectionist?sslmode=disable" \
  E2E_KEEP_ON_FAILURE="${KEEP_ON_FAILURE:-}" \
  make --no-print-directory test-e2e
log "passed"
