#!/usr/bin/env bash
# A guided demo of projectionist on this machine:
#
#   make demo        # hack/demo.sh up: bring everything up and show it working
#   make demo-down   # hack/demo.sh down: remove every trace of it
#
# `up` (root; state under ./.demo):
#  1. builds the image archive, the pause image and helm (make image
#     pause-image helm; seconds when cached);
#  2. starts a single-node cluster (hack/local-cluster.sh, state in
#     .demo/cluster; it builds the Kubernetes binaries first if needed) and
#     imports the image archives of bin/images into it;
#  3. starts a throwaway PostgreSQL (hack/local-postgres.sh, data in
#     .demo/postgres) that the pods reach on the host's address;
#  4. installs the operator with the Helm chart (statusInterval 2s), creates
#     the Secret with the pods' DSN and applies config/samples: user-count
#     (2 partitions), activity-log (1) and revenue (2, batch size 500);
#  5. appends EVENTS events at RATE/s in the background while printing the
#     Projections' lag every 2 s, scales activity-log from 1 to 4 partitions
#     halfway, and shows that lag stays bounded and no pod restarted;
#  6. waits for lag 0 and prints what the read models hold, checked against
#     the event log.
# KUBECONFIG and DATABASE_URL for exploring afterwards are in .demo/env
# (mode 0600; it holds the throwaway database's password, which this script
# never prints).
# The demo stays up afterwards for exploring; `down` removes it. A failed `up`
# tears down on its way out unless KEEP_ON_FAILURE is set.
#
# Only the local-cluster path is implemented: with a Docker engine a kind
# cluster would do (as hack/kind-e2e.sh makes one), but this script always
# uses hack/local-cluster.sh, which needs no Docker.
#
# Settings (environment): EVENTS (20000), RATE (1000), AGGREGATES (500),
# VERSION (git describe), KEEP_ON_FAILURE, KUBE_VERSION, KUBE_BIN.
set -euo pipefail

# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$root"
DEMO_DIR="$root/.demo"
export CLUSTER_DIR="$DEMO_DIR/cluster"
PG_DIR="$DEMO_DIR/postgres"
NS=projectionist-demo
RELEASE=projectionist
EVENTS="${EVENTS:-20000}"
RATE="${RATE:-1000}"
AGGREGATES="${AGGREGATES:-500}"
VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
IMAGE_REPO=docker.io/projectionist/projectionist
export KUBE_VERSION="${KUBE_VERSION:-v1.37.1}"
export KUBE_BIN="${KUBE_BIN:-$root/bin/k8s/$KUBE_VERSION}"
KUBECTL="$KUBE_BIN/kubectl"
HELM="$root/bin/helm"
PSQL="${PG_BIN:-/usr/lib/postgresql/15/bin}/psql"
PROJECTIONIST="$root/bin/linux-$(go env GOARCH)/projectionist"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
log() { printf '%s demo: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

down() {
  local failed=false
  if [ -e "$CLUSTER_DIR" ]; then
    log "stopping the cluster ($CLUSTER_DIR)"
    hack/local-cluster.sh down || failed=true
  fi
  if [ -e "$PG_DIR" ]; then
    log "stopping PostgreSQL ($PG_DIR)"
    LOCAL_POSTGRES_DIR="$PG_DIR" hack/local-postgres.sh stop >/dev/null || failed=true
  fi
  if [ -f "$DEMO_DIR/generator.pid" ]; then
    kill "$(cat "$DEMO_DIR/generator.pid")" 2>/dev/null || true
  fi
  # What must be gone now.
  [ ! -e "$CLUSTER_DIR" ] || { log "LEFT BEHIND: $CLUSTER_DIR"; failed=true; }
  [ ! -e "$PG_DIR" ] || { log "LEFT BEHIND: $PG_DIR"; failed=true; }
  local_cluster_gone "$CLUSTER_DIR" || failed=true
  if $failed; then log "tear-down incomplete (see above); $DEMO_DIR kept"; return 1; fi
  rm -rf "$DEMO_DIR"
  log "demo removed"
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [ -z "${gen_pid:-}" ] || kill "$gen_pid" 2>/dev/null
  [ "$rc" -ne 0 ] || exit 0
  if [ -n "${KEEP_ON_FAILURE:-}" ]; then
    log "failed (exit $rc); KEEP_ON_FAILURE is set, leaving everything in $DEMO_DIR (make demo-down removes it)"
  else
    log "failed (exit $rc); tearing down (KEEP_ON_FAILURE=1 keeps it for a look)"
    down
  fi
  exit "$rc"
}

k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" -n "$NS" "$@"; }
sql() { "$PSQL" "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
events_count() { sql -tAc 'SELECT count(*) FROM events' 2>/dev/null || echo 0; }

# One line: elapsed time, events in the log, each Projection's lag and pods.
status_line() {
  local p
  p="$(k get projections -o jsonpath='{range .items[*]}{.metadata.name}: lag={.status.lag} pods={.status.readyReplicas}/{.spec.replicas} partitions={.status.partitions}   {end}' 2>/dev/null || true)"
  printf '  %4ss  events=%-6s %s\n' "$((SECONDS - t_load))" "$(events_count)" "$p"
}

# lags prints "name lag" per Projection.
lags() { k get projections -o jsonpath='{range .items[*]}{.metadata.name} {.status.lag}{"\n"}{end}'; }
all_caught_up() {
  local n
  n="$(events_count)"
  [ "$n" -ge "$EVENTS" ] || return 1
  lags | awk 'NF < 2 || $2 != "0" { bad = 1 } END { exit bad }'
}

# run_logged LOG CMD... runs CMD with its output in LOG and, while it runs,
# shows the timestamped progress lines the hack/ scripts write ("13:02:11
# building kube-apiserver ...") as they appear, and a line at least once a
# minute with the log's last line, so a long cold build is never silent.
run_logged() {
  local logf=$1 pid shown=0 n start=$SECONDS quiet_since=$SECONDS
  shift
  "$@" >"$logf" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    n=$(wc -l <"$logf")
    if [ "$n" -gt "$shown" ]; then
      if sed -n "$((shown + 1)),${n}p" "$logf" | grep -E '^[0-9]{2}:[0-9]{2}:[0-9]{2} ' | sed 's/^/    /' | grep .; then
        quiet_since=$SECONDS
      fi
      shown=$n
    fi
    if [ $((SECONDS - quiet_since)) -ge 60 ]; then
      log "still at it: $((SECONDS - start))s so far; last: $(tail -n 1 "$logf" | cut -c1-100) (log: $logf)"
      quiet_since=$SECONDS
    fi
  done
  wait "$pid"
}

restarts() { k get pods -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount} {end}'; }

up() {
  [ "$(id -u)" -eq 0 ] || die "run as root: the local cluster needs it"
  if [ -e "$DEMO_DIR/cluster" ] || [ -e "$PG_DIR" ]; then
    die "a demo exists already ($DEMO_DIR): make demo-down first"
  fi
  [ ! -e "$root/bin/local-cluster" ] || die "a local cluster runs already (bin/local-cluster): make cluster-down first (both use the same ports)"
  if docker info >/dev/null 2>&1; then
    log "note: a Docker engine answers, but this demo always uses hack/local-cluster.sh (a kind path like hack/kind-e2e.sh is not implemented)"
  fi
  trap_exit on_exit
  mkdir -p "$DEMO_DIR"
  chmod 755 "$DEMO_DIR"
  local t0=$SECONDS t

  say "building the projectionist image, the pause image and helm (about 4 min on a cold machine: modules from the proxy, then compiling; seconds when cached)"
  t=$SECONDS
  run_logged "$DEMO_DIR/build.log" make --no-print-directory image pause-image helm VERSION="$VERSION" \
    || { tail -n 30 "$DEMO_DIR/build.log"; die "build failed (log: $DEMO_DIR/build.log)"; }
  log "built in $((SECONDS - t))s: image $IMAGE_REPO:$VERSION"

  local b missing=()
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [ -x "$KUBE_BIN/$b" ] || missing+=("$b")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "building Kubernetes $KUBE_VERSION from the Go module proxy: ${missing[*]} (about 9 min on 2 cores, once; cached in $KUBE_BIN)"
    t=$SECONDS
    run_logged "$DEMO_DIR/kube-build.log" env KUBE_VERSION="$KUBE_VERSION" hack/build-kube-binaries.sh "$KUBE_BIN" "${missing[@]}" \
      || { tail -n 30 "$DEMO_DIR/kube-build.log"; die "building Kubernetes failed (log: $DEMO_DIR/kube-build.log)"; }
    log "Kubernetes binaries built in $((SECONDS - t))s"
  fi

  say "starting a single-node Kubernetes cluster: etcd, control plane, containerd, kubelet, kube-proxy as local processes (~15-60 s)"
  t=$SECONDS
  run_logged "$DEMO_DIR/cluster.log" hack/local-cluster.sh up \
    || { tail -n 30 "$DEMO_DIR/cluster.log"; die "cluster failed (log: $DEMO_DIR/cluster.log)"; }
  cluster_env() { env_value "$CLUSTER_DIR/env" "$1"; }
  KUBECONFIG_FILE="$(cluster_env KUBECONFIG)"
  log "cluster up in $((SECONDS - t))s; image archives of bin/images imported"
  "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get nodes

  say "starting PostgreSQL 15 on 127.0.0.1 and $(cluster_env HOST_IP) (pods reach it there; a few seconds)"
  t=$SECONDS
  LOCAL_POSTGRES_DIR="$PG_DIR" HOST_IP="$(cluster_env HOST_IP)" POD_CIDR="$(cluster_env POD_CIDR)" \
    hack/local-postgres.sh start >/dev/null
  pg_env() { env_value "$PG_DIR/env" "$1"; }
  DATABASE_URL="$(pg_env DATABASE_URL)"
  export DATABASE_URL
  "$PROJECTIONIST" migrate >/dev/null
  log "PostgreSQL up and migrated in $((SECONDS - t))s"
  (
    umask 077
    cat >"$DEMO_DIR/env" <<EOF
# source .demo/env: the demo's cluster and database (a throwaway password).
export KUBECONFIG='$KUBECONFIG_FILE'
export DATABASE_URL='$DATABASE_URL'
export PATH='$KUBE_BIN:$(dirname "$HELM"):$(dirname "$PSQL"):$(dirname "$PROJECTIONIST")':"\$PATH"
EOF
  )

  say "installing the operator with the Helm chart into namespace $NS (statusInterval 2s; ~10-30 s)"
  t=$SECONDS
  "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" create namespace "$NS" >/dev/null
  KUBECONFIG="$KUBECONFIG_FILE" "$HELM" install "$RELEASE" charts/projectionist --namespace "$NS" \
    --set image.repository="$IMAGE_REPO" --set image.tag="$VERSION" --set image.pullPolicy=IfNotPresent \
    --set workerImage.repository="$IMAGE_REPO" --set workerImage.tag="$VERSION" \
    --set statusInterval=2s --wait --timeout 3m >/dev/null
  k get deploy
  log "operator running in $((SECONDS - t))s"

  say "creating the Secret projectionist-db (the pods' DSN) and applying config/samples: user-count (2 partitions), activity-log (1), revenue (2)"
  k create secret generic projectionist-db --from-literal=dsn="$(pg_env POD_DATABASE_URL)" >/dev/null
  k apply -k config/samples
  log "waiting for the worker pods (a few seconds)"
  local ready=false
  for _ in $(seq 1 90); do
    if k get projections -o jsonpath='{range .items[*]}{.spec.replicas} {.status.readyReplicas}{"\n"}{end}' \
      | awk 'NF < 2 || $1 != $2 { bad = 1 } END { exit bad || NR != 3 }'; then ready=true; break; fi
    sleep 1
  done
  $ready || { k get projections -o wide; k describe projections; die "the worker pods did not become ready in 90 s"; }
  k get projections -o wide
  k get pods

  say "appending $EVENTS events at $RATE/s over $AGGREGATES users in the background (~$((EVENTS / RATE)) s); lag every 2 s"
  t_load=$SECONDS
  "$PROJECTIONIST" events generate --count "$EVENTS" --aggregates "$AGGREGATES" --rate "$RATE" \
    >"$DEMO_DIR/generator.log" 2>&1 &
  gen_pid=$!
  echo "$gen_pid" >"$DEMO_DIR/generator.pid"
  local half=$(( EVENTS / RATE / 2 )) before
  [ "$half" -ge 4 ] || half=4
  while [ $((SECONDS - t_load)) -lt "$half" ]; do status_line; sleep 2; done

  before="$(restarts)"
  say "scaling activity-log from 1 to 4 partitions while events keep coming (the operator switches the partition count in the database, then adds pods; none restarts)"
  k scale projection activity-log --replicas=4
  while kill -0 "$gen_pid" 2>/dev/null; do status_line; sleep 2; done
  wait "$gen_pid" || { cat "$DEMO_DIR/generator.log"; die "the event generator failed"; }
  gen_pid=
  rm -f "$DEMO_DIR/generator.pid"
  log "generator done:"
  sed -n '/^appended/,$p' "$DEMO_DIR/generator.log"

  say "waiting for lag 0 on every Projection (a few seconds)"
  local deadline=$((SECONDS + 180))
  until all_caught_up; do
    [ "$SECONDS" -lt "$deadline" ] || die "lag did not reach 0 in 180 s"
    status_line; sleep 2
  done
  status_line
  k get projections -o wide
  say "pods and restart counts (before the scale: ${before:-none})"
  k get pods -o custom-columns='NAME:.metadata.name,READY:.status.containerStatuses[0].ready,RESTARTS:.status.containerStatuses[0].restartCount,STARTED:.status.startTime'

  local restarted
  restarted="$(k get pods -o jsonpath='{range .items[*]}{.metadata.name} {.status.containerStatuses[0].restartCount}{"\n"}{end}' | awk '$2 != "0" { print $1 "=" $2 }')"
  if [ -n "$restarted" ]; then
    log "WARNING: pods restarted: $restarted (kubectl -n $NS describe pod NAME says why)"
  else
    log "no worker pod restarted: activity-log-0 ran through the scale"
  fi

  say "what the read models hold, against the event log"
  sql <<'EOF'
\echo 'user_stats (user_count): one row per UserCreated event'
SELECT (SELECT count(*) FROM user_stats) AS users,
       (SELECT count(*) FROM user_stats WHERE active) AS active,
       (SELECT count(*) FROM events WHERE event_type = 'UserCreated') AS user_created_events;
SELECT user_id, email, created_at, active FROM user_stats ORDER BY user_id LIMIT 5;
\echo 'activity_log: one row per event, each exactly once'
SELECT (SELECT count(*) FROM activity_log) AS activity_log_rows,
       (SELECT count(DISTINCT event_id) FROM activity_log) AS distinct_events,
       (SELECT count(*) FROM events) AS events;
\echo 'activity_log by generation and partition (generation 1: 1 partition; after the scale, 4)'
SELECT generation, total_partitions, partition_key, count(*) AS events
  FROM activity_log GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
\echo 'revenue (two partitions, one row each): the orders and their total, against the OrderPlaced events'
SELECT partition_key, orders, total_cents FROM revenue ORDER BY partition_key;
SELECT (SELECT sum(orders) FROM revenue) AS orders,
       (SELECT sum(total_cents) FROM revenue) AS total_cents,
       (SELECT count(*) FROM events WHERE event_type = 'OrderPlaced') AS order_placed_events,
       (SELECT sum((payload->>'amount_cents')::bigint) FROM events WHERE event_type = 'OrderPlaced') AS their_amount_cents;
EOF

  say "the demo is up ($((SECONDS - t0))s in all) and stays up"
  cat <<EOF
Look around (.demo/env sets KUBECONFIG, DATABASE_URL, and PATH for kubectl, helm, psql and projectionist):
  source .demo/env
  kubectl -n $NS get projections -o wide
  kubectl -n $NS describe projection activity-log
  kubectl -n $NS get pods
  kubectl -n $NS logs deploy/$RELEASE
  kubectl -n $NS logs activity-log-0
  kubectl -n $NS scale projection user-count --replicas=3
  projectionist events generate --count 5000 --rate 500
  psql "\$DATABASE_URL" -c 'SELECT * FROM revenue'
Logs: $DEMO_DIR/*.log, $CLUSTER_DIR/logs/
Remove everything: make demo-down
EOF
}

case "${1:-}" in
  up) up ;;
  down) [ "$(id -u)" -eq 0 ] || die "run as root"; down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
