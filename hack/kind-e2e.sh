#!/usr/bin/env bash
# Runs the end-to-end suite (test/e2e) on a kind cluster (make test-e2e-kind):
#
#   make test-e2e-kind      # builds the images and kind first, then runs this
#
# 1. a Docker engine: the one that answers, else a private dockerd with its
#    own roots under bin/ (hack/docker-engine.sh), stopped at the end;
# 2. the node image: KIND_NODE_IMAGE when set; else kind's own default
#    (kindest/node) when it can be pulled; else one built offline from
#    Debian packages and the module proxy (hack/kind-node-image.sh, cached
#    under bin/kind-node). With the offline image the cluster has no CNI
#    DaemonSet: the image's bridge configuration serves the one node;
# 3. a Docker network of its own (KIND_NETWORK, given to kind through
#    KIND_EXPERIMENTAL_DOCKER_NETWORK) on a bridge it names, fenced before any
#    node starts: iptables FORWARD rules drop whatever the bridge would route
#    off it, so no container reaches anything off this machine (the engine
#    itself writes no NAT rule when this script starts it; one that was
#    running already may, and the FORWARD rules hold either way). Checked with
#    a real request from a pod: netcheck -fail http://OUTSIDE_IP/ must get no
#    answer, and the API server must answer through the kubernetes Service,
#    by address and by its DNS name (CoreDNS);
# 4. the host's PostgreSQL (hack/local-postgres.sh, TLS on) listening on the
#    network's gateway address, which the node reaches directly and the pods
#    through the node's masquerade, with pg_hba allowing the network's subnet;
# 5. `kind load image-archive` of the projectionist and custom worker
#    archives, then `make test-e2e` with KUBECONFIG (a temporary file: your
#    ~/.kube/config is left alone), E2E_IMAGE, E2E_CUSTOM_IMAGE,
#    E2E_DATABASE_URL, E2E_POD_DATABASE_URL and E2E_DATABASE_CA;
# 6. always (a trap, also on failure and Ctrl-C): deletes the cluster, the
#    network and the FORWARD rules, stops PostgreSQL and the engine it
#    started, and restores the host sysctls a privileged node's kubelet and
#    kube-proxy may change (vm.overcommit_memory, kernel.panic,
#    kernel.panic_on_oops, net.ipv4.ip_forward, nf_conntrack_max, ...).
#    KEEP_ON_FAILURE keeps the cluster, network and PostgreSQL after a failed
#    suite and prints how to remove them.
#
# Settings (environment): VERSION, IMAGE, CUSTOM_WORKER_IMAGE as in the
# Makefile; KIND (default bin/kind, else kind on PATH), KIND_CLUSTER (default
# projectionist-e2e), KIND_NODE_IMAGE, KIND_NETWORK (projectionist-kind),
# KIND_SUBNET (172.29.0.0/16), KIND_GATEWAY (172.29.0.1), KIND_BRIDGE
# (pkind0), KEEP_ON_FAILURE.
set -euo pipefail

# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$root"
e2e_images
KIND="${KIND:-$([ -x "$root/bin/kind" ] && echo "$root/bin/kind" || command -v kind || true)}"
KIND_CLUSTER="${KIND_CLUSTER:-projectionist-e2e}"
KIND_NETWORK="${KIND_NETWORK:-projectionist-kind}"
KIND_SUBNET="${KIND_SUBNET:-172.29.0.0/16}"
KIND_GATEWAY="${KIND_GATEWAY:-172.29.0.1}"
KIND_BRIDGE="${KIND_BRIDGE:-pkind0}"
PG_DIR="$root/bin/kind-e2e/postgres"
NETCHECK_IMAGE=docker.io/projectionist/netcheck:dev
OUTSIDE_IP=1.1.1.1
SYSCTLS="vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward net.netfilter.nf_conntrack_max net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables kernel.keys.root_maxkeys kernel.keys.root_maxbytes fs.inotify.max_user_watches fs.inotify.max_user_instances"

log() { printf '%s kind-e2e: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: it fences the kind network with iptables and restores host sysctls"
[ -n "$KIND" ] || die "no kind: make kind (builds sigs.k8s.io/kind into bin/), or put kind on PATH"
for tool in go make; do # docker and iptables: hack/docker-engine.sh installs docker.io, which brings iptables
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
require_e2e_archives test-e2e-kind

workdir="$(mktemp -d)"
KUBECONFIG_FILE="$workdir/kubeconfig"
engine_started=
created_cluster=false
created_network=false
fenced=false
started_postgres=false
# The host's sysctls as they were before any run: kept in a file until
# restored, so that a run kept with KEEP_ON_FAILURE (whose node's kubelet
# has changed them) does not make the next run take its values for the
# originals.
SYSCTL_FILE="$root/bin/kind-e2e.sysctls"
if [ ! -f "$SYSCTL_FILE" ]; then
  mkdir -p "$root/bin"
  for s in $SYSCTLS; do
    if v="$(sysctl -n "$s" 2>/dev/null)"; then echo "$s=$v"; fi
  done > "$SYSCTL_FILE"
fi
mapfile -t saved_sysctls < "$SYSCTL_FILE"

fence() { # -I or -D
  iptables -w "$1" FORWARD -i "$KIND_BRIDGE" ! -o "$KIND_BRIDGE" -j DROP
  iptables -w "$1" FORWARD -o "$KIND_BRIDGE" ! -i "$KIND_BRIDGE" -j DROP
  if command -v ip6tables >/dev/null; then
    ip6tables -w "$1" FORWARD -i "$KIND_BRIDGE" ! -o "$KIND_BRIDGE" -j DROP 2>/dev/null || true
    ip6tables -w "$1" FORWARD -o "$KIND_BRIDGE" ! -i "$KIND_BRIDGE" -j DROP 2>/dev/null || true
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ "$rc" -ne 0 ] && [ -n "${KEEP_ON_FAILURE:-}" ] && $created_cluster; then
    log "failed (exit $rc); KEEP_ON_FAILURE: keeping cluster $KIND_CLUSTER (kubeconfig $KUBECONFIG_FILE), network $KIND_NETWORK (fenced) and PostgreSQL ($PG_DIR)"
    log "tear down: $KIND delete cluster --name $KIND_CLUSTER; docker network rm $KIND_NETWORK; iptables -D FORWARD -i $KIND_BRIDGE ! -o $KIND_BRIDGE -j DROP (and -o); LOCAL_POSTGRES_DIR=$PG_DIR hack/local-postgres.sh stop; hack/docker-engine.sh stop"
    exit "$rc"
  fi
  if $created_cluster; then
    if [ "$rc" -ne 0 ]; then
      "$KIND" export logs "$workdir/logs" --name "$KIND_CLUSTER" >/dev/null 2>&1 &&
        find "$workdir/logs" -name 'kubelet.log' -exec tail -n 30 {} \; >&2
    fi
    "$KIND" delete cluster --name "$KIND_CLUSTER"
  fi
  if $created_network; then
    docker network rm "$KIND_NETWORK" >/dev/null
  fi
  if $fenced; then
    fence -D
  fi
  if $started_postgres; then
    LOCAL_POSTGRES_DIR="$PG_DIR" hack/local-postgres.sh stop >/dev/null
    rmdir "$root/bin/kind-e2e" 2>/dev/null
  fi
  for kv in "${saved_sysctls[@]}"; do
    [ "$(sysctl -n "${kv%%=*}" 2>/dev/null)" = "${kv#*=}" ] || sysctl -q -w "$kv" >/dev/null 2>&1
  done
  rm -f "$SYSCTL_FILE"
  docker_engine_stop
  rm -rf "$workdir"
  [ "$rc" = 0 ] && log "passed" || log "failed (exit $rc)"
  exit "$rc"
}
trap_exit cleanup

docker_engine_start
command -v iptables >/dev/null || die "iptables is not on PATH (the fence needs it): apt-get install iptables"

if "$KIND" get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  die "a kind cluster named $KIND_CLUSTER exists already: $KIND delete cluster --name $KIND_CLUSTER, or set KIND_CLUSTER"
fi
[ ! -e "$PG_DIR" ] || die "$PG_DIR exists already (an earlier run kept?): LOCAL_POSTGRES_DIR=$PG_DIR hack/local-postgres.sh stop"

# --- the node image ----------------------------------------------------------
offline=false
node_image="${KIND_NODE_IMAGE:-}"
if [ -z "$node_image" ]; then
  default_image="$(sed -n 's/^const Image = "\(.*\)"/\1/p' "$(go mod download -json "sigs.k8s.io/kind@$("$KIND" version | awk '{print $2}')" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/pkg/apis/config/defaults/image.go" 2>/dev/null || true)"
  if [ -n "$default_image" ] && { docker image inspect "$default_image" >/dev/null 2>&1 || timeout 120 docker pull "$default_image" >/dev/null 2>&1; }; then
    node_image="$default_image"
  else
    log "kind's node image ${default_image:-(unknown)} cannot be pulled: building one offline (hack/kind-node-image.sh)"
    node_image="$(hack/kind-node-image.sh)"
  fi
fi
case "$node_image" in localhost/projectionist/kind-node:*) offline=true ;; esac
log "node image $node_image"

# --- a fenced network ---------------------------------------------------------
if ! docker network inspect "$KIND_NETWORK" >/dev/null 2>&1; then
  docker network create -d bridge --subnet "$KIND_SUBNET" --gateway "$KIND_GATEWAY" \
    -o com.docker.network.bridge.name="$KIND_BRIDGE" \
    -o com.docker.network.bridge.enable_ip_masquerade=false \
    -o com.docker.network.driver.mtu=1500 "$KIND_NETWORK" >/dev/null
  created_network=true
fi
KIND_BRIDGE="$(docker network inspect -f '{{index .Options "com.docker.network.bridge.name"}}' "$KIND_NETWORK")"
[ -n "$KIND_BRIDGE" ] || die "network $KIND_NETWORK names no bridge: remove it (docker network rm $KIND_NETWORK) so that this script makes its own"
gateway="$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$KIND_NETWORK")"
subnet="$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$KIND_NETWORK")"
[ -n "$gateway" ] || die "network $KIND_NETWORK has no IPv4 gateway"
fenced=true
fence -I
log "network $KIND_NETWORK ($subnet, bridge $KIND_BRIDGE, gateway $gateway): FORWARD off the bridge dropped"

# --- the cluster ---------------------------------------------------------------
cgroup_v1=false
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || cgroup_v1=true
{
  echo "kind: Cluster"
  echo "apiVersion: kind.x-k8s.io/v1alpha4"
  if $offline; then
    echo "networking:"
    echo "  disableDefaultCNI: true"
    echo "  podSubnet: 10.244.0.0/16"
  fi
  echo "kubeadmConfigPatches:"
  # Images are imported, never pulled again: no image GC.
  printf '%s\n' "- |" "  kind: KubeletConfiguration" "  imageGCHighThresholdPercent: 100" "  imageGCLowThresholdPercent: 99"
  if $cgroup_v1; then
    # Kubernetes 1.35+ kubelets refuse cgroup v1 unless told otherwise.
    echo "  failCgroupV1: false"
  fi
  # kubeadm init's preflight: ImagePull fails offline for the images this
  # node does not need (kubeadm's own pause tag; sandboxes use
  # containerd's sandbox_image, imported), and SystemVerification on cgroup
  # v1 even with failCgroupV1 false.
  ignore=()
  $offline && ignore+=(ImagePull)
  $cgroup_v1 && ignore+=(SystemVerification)
  if [ ${#ignore[@]} -gt 0 ]; then
    printf '%s\n' "- |" "  kind: InitConfiguration" "  nodeRegistration:" "    ignorePreflightErrors:"
    for e in "${ignore[@]}"; do echo "    - $e"; done
  fi
} > "$workdir/kind.yaml"
log "creating kind cluster $KIND_CLUSTER"
created_cluster=true
t0=$SECONDS
KIND_EXPERIMENTAL_DOCKER_NETWORK="$KIND_NETWORK" "$KIND" create cluster --name "$KIND_CLUSTER" \
  --image "$node_image" --config "$workdir/kind.yaml" --kubeconfig "$KUBECONFIG_FILE" --wait 5m \
  ${KEEP_ON_FAILURE:+--retain}
log "cluster up in $((SECONDS - t0))s"
export KUBECONFIG="$KUBECONFIG_FILE"
KUBECTL="${E2E_KUBECTL:-$(command -v kubectl || echo "$root/bin/k8s/v1.37.1/kubectl")}"

log "loading the images into the node"
"$KIND" load image-archive "$ARCHIVE" --name "$KIND_CLUSTER"
"$KIND" load image-archive "$CUSTOM_ARCHIVE" --name "$KIND_CLUSTER"
netcheck_tar="$workdir/netcheck.tar"
netcheck_bin="$workdir/netcheck"
CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "$netcheck_bin" ./hack/netcheck
go run ./cmd/projectionist-image -binary "$netcheck_bin" -path /netcheck -name "$NETCHECK_IMAGE" -out "$netcheck_tar" >/dev/null
"$KIND" load image-archive "$netcheck_tar" --name "$KIND_CLUSTER"

# --- the fence, checked from a pod --------------------------------------------------
netcheck() { # NAME ARGS...
  local name="$1"; shift
  local args="" a
  for a in "$@"; do args="$args\"$a\","; done
  "$KUBECTL" run "$name" --image="$NETCHECK_IMAGE" --image-pull-policy=Never --restart=Never \
    --overrides="{\"apiVersion\":\"v1\",\"spec\":{\"containers\":[{\"name\":\"$name\",\"image\":\"$NETCHECK_IMAGE\",\"imagePullPolicy\":\"Never\",\"args\":[${args%,}]}]}}" >/dev/null
  local phase=
  for _ in $(seq 1 120); do
    phase="$("$KUBECTL" get pod "$name" -o jsonpath='{.status.phase}' 2>/dev/null)"
    case "$phase" in Succeeded | Failed) break ;; esac
    sleep 0.5
  done
  "$KUBECTL" logs "$name" >&2 || true
  "$KUBECTL" delete pod "$name" --wait=false >/dev/null
  [ "$phase" = Succeeded ]
}
# What the node shows of pod networking, for a failed check: the
# kube-system pods, kube-proxy's log, the node's routes and its Service NAT
# rules.
diagnose() {
  local node="$KIND_CLUSTER-control-plane"
  log "diagnostics: kube-system pods"
  "$KUBECTL" -n kube-system get pods -o wide >&2 || true
  log "diagnostics: kube-proxy log (last 40 lines)"
  "$KUBECTL" -n kube-system logs daemonset/kube-proxy --tail=40 >&2 || true
  log "diagnostics: node $node: addresses, routes, sysctls"
  docker exec "$node" sh -c 'ip -4 -o addr; ip -4 route; sysctl net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables 2>&1' >&2 || true
  log "diagnostics: node $node: iptables (nat, KUBE rules; first 60 lines) and the backend"
  docker exec "$node" sh -c 'iptables -V; iptables-save -t nat | grep -E "KUBE|^[*:]" | head -n 60' >&2 || true
}
# kube-proxy's DaemonSet reports ready as soon as its container runs; the
# Service rules come with its first sync. Wait for the kubernetes Service's
# rule in the node's nat table, so that the checks below test the fence and
# the routing, not kube-proxy's start-up time.
log "waiting for kube-proxy's Service rules on the node"
"$KUBECTL" -n kube-system rollout status daemonset/kube-proxy --timeout=180s >&2 || { diagnose; die "kube-proxy did not become ready"; }
synced=false
for _ in $(seq 1 120); do
  if docker exec "$KIND_CLUSTER-control-plane" iptables-save -t nat 2>/dev/null | grep -q 'default/kubernetes:https'; then
    synced=true
    break
  fi
  sleep 1
done
$synced || { diagnose; die "kube-proxy wrote no rule for the kubernetes Service in 120s"; }
# A check that a pod reaches something, tried up to three times: a slow
# first sync of kube-proxy or CoreDNS is not a broken network. (The egress
# check, which must fail, runs once.)
reaches() { # NAME ARGS...
  local name="$1" i; shift
  for i in 1 2 3; do
    netcheck "$name-$i" "$@" && return 0
    [ "$i" = 3 ] || { log "no answer (attempt $i of 3); trying again in 5s"; sleep 5; }
  done
  return 1
}
log "checking egress from a pod: http://$OUTSIDE_IP/ must get no answer"
netcheck netcheck-egress -fail -timeout 5s "http://$OUTSIDE_IP/" || die "a pod reached $OUTSIDE_IP: the fence does not hold"
log "checking that a pod reaches the API server through the kubernetes Service"
sa=/var/run/secrets/kubernetes.io/serviceaccount
api_ip="$("$KUBECTL" get service kubernetes -n default -o jsonpath='{.spec.clusterIP}')"
reaches netcheck-api -cacert "$sa/ca.crt" -token "$sa/token" -status 200 "https://$api_ip/api" ||
  { diagnose; die "a pod cannot reach the API server through its Service ($api_ip)"; }
log "checking cluster DNS: a pod reaches the API server by its Service's name"
"$KUBECTL" -n kube-system rollout status deployment/coredns --timeout=180s >&2 ||
  { diagnose; die "CoreDNS did not become ready"; }
reaches netcheck-dns -cacert "$sa/ca.crt" -token "$sa/token" -status 200 "https://kubernetes.default.svc.cluster.local/api" ||
  { diagnose; die "a pod cannot resolve kubernetes.default.svc.cluster.local"; }

# --- PostgreSQL on the gateway ------------------------------------------------------
log "starting PostgreSQL on $gateway"
started_postgres=true
LOCAL_POSTGRES_DIR="$PG_DIR" HOST_IP="$gateway" POD_CIDR="$subnet" hack/local-postgres.sh start >/dev/null

run_e2e_suite "$KUBECONFIG_FILE" "$PG_DIR" "$t0" "cluster start"
