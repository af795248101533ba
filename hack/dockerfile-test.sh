#!/usr/bin/env bash
# Builds the Dockerfile with `docker build` and runs what it built, on a
# machine that cannot pull any image (make test-dockerfile; CI runs it):
#
#   1. a Docker engine: the one that answers, else a private dockerd
#      (hack/docker-engine.sh; stopped again at the end);
#   2. the two bases, made locally and imported with `docker import`:
#      GO_IMAGE  this machine's Go toolchain (GOROOT), a static busybox for
#                RUN's /bin/sh (Debian's busybox-static), the CA bundle, and
#                a file:// module proxy holding exactly the modules the build
#                needs (GOPROXY=file:///goproxy), so the build needs no
#                network: `docker build --network none`;
#      BASE_IMAGE /etc/passwd and /etc/group with nonroot (65532), the CA
#                bundle and /tmp: what distroless/static's nonroot variant
#                gives the binary;
#   3. `docker build --network none` of the Dockerfile with those bases;
#   4. checks the built image against the `make image` archive
#      (IMAGE_ARCHIVE, loaded with `docker load`): same entrypoint, same
#      user, a non-root numeric user;
#   5. runs `projectionist version` (--network none) and checks that it
#      prints VERSION;
#   6. starts a throwaway PostgreSQL (hack/local-postgres.sh, its own state
#      directory), and from the built image, with --network none and only
#      the server's Unix socket mounted, runs `migrate`, `events generate`
#      and a `worker` until every demo read model is exact for the whole log;
#      then stops the worker with SIGTERM and checks it exited 0.
#
# Always removes the containers, the images it made, the PostgreSQL and the
# engine it started (a trap), also on failure.
#
# Settings (environment): VERSION, IMAGE_ARCHIVE (the make image archive),
# DOCKERFILE_TEST_TAG (default docker.io/projectionist/projectionist:dockerfile-test).
set -euo pipefail

# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$root"
VERSION="${VERSION:?VERSION must be set (make test-dockerfile sets it)}"
IMAGE_ARCHIVE="${IMAGE_ARCHIVE:?IMAGE_ARCHIVE must name the make image archive}"
TAG="${DOCKERFILE_TEST_TAG:-docker.io/projectionist/projectionist:dockerfile-test}"
GO_BASE=localhost/projectionist-test/go:local
RUNTIME_BASE=localhost/projectionist-test/static:local
WORK="$(mktemp -d /tmp/projectionist-dockerfile.XXXXXX)"
PG_STATE="$WORK/postgres"
WORKER=projectionist-dockerfile-test-worker

log() { echo "dockerfile-test: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

engine_started=
loaded_image=
cleanup() {
  local rc=$?
  set +e
  if [ -n "${DOCKER_HOST:-}" ]; then
    if [ "$rc" != 0 ]; then
      docker logs "$WORKER" 2>/dev/null | tail -n 40 >&2
    fi
    docker rm -f "$WORKER" >/dev/null 2>&1 || true
    docker rmi -f "$TAG" "$GO_BASE" "$RUNTIME_BASE" $loaded_image >/dev/null 2>&1
  fi
  LOCAL_POSTGRES_DIR="$PG_STATE" hack/local-postgres.sh stop >/dev/null 2>&1
  docker_engine_stop
  rm -rf "$WORK"
  [ "$rc" = 0 ] && log "PASS" || log "failed (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -f "$IMAGE_ARCHIVE" ] || die "no image archive at $IMAGE_ARCHIVE (make image writes it)"
busybox="$(command -v busybox || true)"
if [ -z "$busybox" ] || ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  [ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' && busybox=/bin/busybox
fi
if [ -z "$busybox" ] || ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  [ "$(id -u)" = 0 ] || die "a static busybox is needed for the Go base image's shell: apt-get install busybox-static"
  log "installing busybox-static (the Go base image's shell)"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends busybox-static file >&2
  busybox=/bin/busybox
fi

docker_engine_start

# --- the Go base: GOROOT, a shell, CA bundle, a file:// module proxy ------
goroot="$(go env GOROOT)"
log "making $GO_BASE from $goroot ($(go env GOVERSION)) and the build's modules"
mkdir -p "$WORK/go/bin" "$WORK/go/usr/local" "$WORK/go/etc/ssl/certs" "$WORK/go/tmp" "$WORK/go/root"
cp "$busybox" "$WORK/go/bin/busybox"
for applet in sh ls cat mkdir rm cp mv env; do ln -s busybox "$WORK/go/bin/$applet"; done
cp -a "$goroot" "$WORK/go/usr/local/go"
cp /etc/ssl/certs/ca-certificates.crt "$WORK/go/etc/ssl/certs/"
# The proxy holds what `go mod download` and the build of cmd/projectionist
# fetch into an empty module cache, served first from this machine's cache.
GOFLAGS=-modcacherw GOMODCACHE="$WORK/modcache" \
  GOPROXY="file://$(go env GOMODCACHE)/cache/download,$(go env GOPROXY)" \
  sh -c 'go mod download && go list -deps ./cmd/projectionist >/dev/null'
mv "$WORK/modcache/cache/download" "$WORK/go/goproxy"
chmod -R u+w "$WORK/modcache" && rm -rf "$WORK/modcache"
tar -C "$WORK/go" -c . | docker import \
  --change 'ENV PATH=/usr/local/go/bin:/go/bin:/bin' \
  --change 'ENV GOPATH=/go' \
  --change 'ENV GOTOOLCHAIN=local' \
  --change 'ENV GOPROXY=file:///goproxy' \
  --change 'ENV GOSUMDB=off' \
  --change 'ENV GOFLAGS=-mod=readonly' \
  - "$GO_BASE" >/dev/null
rm -rf "$WORK/go"

# --- the runtime base: what distroless/static:nonroot gives ---------------
log "making $RUNTIME_BASE"
mkdir -p "$WORK/static/etc/ssl/certs" "$WORK/static/tmp" "$WORK/static/home/nonroot"
chmod 1777 "$WORK/static/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$WORK/static/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$WORK/static/etc/group"
cp /etc/ssl/certs/ca-certificates.crt "$WORK/static/etc/ssl/certs/"
tar -C "$WORK/static" --owner=0 --group=0 -c . | docker import --change 'USER 65532:65532' - "$RUNTIME_BASE" >/dev/null
rm -rf "$WORK/static"

# --- docker build, without network ---------------------------------------
log "docker build --network none (GO_IMAGE=$GO_BASE BASE_IMAGE=$RUNTIME_BASE)"
start=$(date +%s)
# BuildKit, for the Dockerfile's RUN --mount: through buildx where the
# client has it; else through a client with BuildKit built in (Debian's
# docker.io 20.10 client, /usr/bin/docker), since newer clients without the
# buildx plugin refuse DOCKER_BUILDKIT=1.
builder=(docker build)
if ! docker buildx version >/dev/null 2>&1; then
  legacy=/usr/bin/docker
  if [ -x "$legacy" ] && "$legacy" --version 2>/dev/null | grep -q 'version 20\.'; then
    builder=("$legacy" build)
  else
    die "docker build needs BuildKit: install the buildx plugin (docker-buildx), or Debian's docker.io for its 20.10 client"
  fi
fi
log "building with: ${builder[*]}"
DOCKER_BUILDKIT=1 "${builder[@]}" --network none \
  --build-arg GO_IMAGE="$GO_BASE" --build-arg BASE_IMAGE="$RUNTIME_BASE" \
  --build-arg VERSION="$VERSION" -t "$TAG" . >&2
log "built $TAG in $(( $(date +%s) - start )) s"

# --- the same entrypoint and user as the make image archive --------------
loaded="$(docker load -i "$IMAGE_ARCHIVE" | sed -n 's/^Loaded image: //p' | tail -n 1)"
[ -n "$loaded" ] || die "docker load -i $IMAGE_ARCHIVE named no image"
loaded_image="$loaded"
want="$(docker image inspect -f '{{json .Config.Entrypoint}} {{.Config.User}}' "$loaded")"
got="$(docker image inspect -f '{{json .Config.Entrypoint}} {{.Config.User}}' "$TAG")"
log "make image: $want; Dockerfile: $got"
[ "$got" = "$want" ] || die "entrypoint/user differ: Dockerfile image has '$got', make image has '$want'"
user="${got##* }"
case "$user" in
  '' | 0 | 0:* | root | root:*) die "the image runs as root ('$user')" ;;
esac

# --- version -----------------------------------------------------------
out="$(docker run --rm --network none "$TAG" version)"
log "version: $out"
case "$out" in *"$VERSION"*) ;; *) die "version printed '$out', want it to contain $VERSION" ;; esac

# --- a worker against PostgreSQL, over the Unix socket only ---------------
# The state directory must be searchable by the postgres user and by the
# image's user (65532), which connects through the mounted socket.
chmod 755 "$WORK"
LOCAL_POSTGRES_DIR="$PG_STATE" hack/local-postgres.sh start >/dev/null
# shellcheck disable=SC1091
. "$PG_STATE/env"
chmod 755 "$PG_STATE/run"
PW="$(printf '%s' "$DATABASE_URL" | sed -E 's|^postgres://[^:]+:([^@]+)@.*|\1|')"
SOCK_URL="postgres://projectionist:$PW@/projectionist?host=/run/postgresql&port=$PGPORT&sslmode=disable"
run_in_image() {
  docker run --rm --network none -v "$PG_STATE/run:/run/postgresql" -e DATABASE_URL="$SOCK_URL" "$TAG" "$@"
}
psql_q() {
  PGPASSWORD="$PW" psql -h "$PG_STATE/run" -p "$PGPORT" -U projectionist -d projectionist -qtAX -c "$1"
}
run_in_image migrate >&2
run_in_image events generate --count 2000 >&2
appended="$(psql_q 'SELECT count(*) FROM events')"
[ "${appended:-0}" = 2000 ] || die "events generate appended ${appended:-0} events, want 2000"
docker run -d --name "$WORKER" --network none -v "$PG_STATE/run:/run/postgresql" \
  -e DATABASE_URL="$SOCK_URL" -e PARTITION_KEY=0 -e TOTAL_PARTITIONS=1 "$TAG" worker >/dev/null
# Done when every read model is exact for the whole log: one activity_log
# row per event, revenue equal to the orders' sum, one user_stats row per
# UserCreated.
want="$(psql_q "SELECT count(*), count(*) FILTER (WHERE event_type = 'OrderPlaced'),
  coalesce(sum((payload->>'amount_cents')::bigint) FILTER (WHERE event_type = 'OrderPlaced'), 0),
  count(*) FILTER (WHERE event_type = 'UserCreated') FROM events")"
caught_up=
got=
for _ in $(seq 1 120); do
  got="$(psql_q "SELECT (SELECT count(*) FROM activity_log), (SELECT coalesce(sum(orders), 0) FROM revenue),
    (SELECT coalesce(sum(total_cents), 0) FROM revenue), (SELECT count(*) FROM user_stats)" 2>/dev/null || true)"
  if [ "$got" = "$want" ]; then caught_up=1; break; fi
  [ "$(docker inspect -f '{{.State.Running}}' "$WORKER")" = true ] || die "the worker exited before catching up"
  sleep 0.5
done
[ -n "$caught_up" ] || die "the read models are not exact within 60 s: (events, orders, cents, users) want $want, got ${got:-nothing}"
log "read models exact: (events, orders, cents, users) = $want"
docker stop -t 30 "$WORKER" >/dev/null
code="$(docker inspect -f '{{.State.ExitCode}}' "$WORKER")"
[ "$code" = 0 ] || die "the worker exited $code on SIGTERM, want 0"
log "the worker from the built image projected all $appended events exactly and stopped cleanly"
