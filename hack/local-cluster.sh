#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, without Docker or a
# registry, for the end-to-end tests:
#
#   hack/local-cluster.sh up       # start it (~15 s with warm caches)
#   hack/local-cluster.sh status   # what runs
#   hack/local-cluster.sh load A.tar [B.tar...]   # import image archives
#   hack/local-cluster.sh down     # stop it and remove every trace
#
# It runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd, kubelet and kube-proxy (iptables mode) as processes of its own,
# with every file under STATE (bin/local-cluster), and writes there:
#   kubeconfig   cluster-admin credentials for https://HOST_IP:6443
#   env          HOST_IP, POD_CIDR, SERVICE_CIDR, KUBECONFIG (shell syntax)
#   logs/        one log per component
#
# Kubernetes binaries are built into bin/k8s/<version> by
# hack/build-kube-binaries.sh; containerd, runc, the CNI plugins, iptables,
# conntrack and nftables (for teardown) come from Debian and are installed
# when missing (their services are not started). `up` imports every archive
# in bin/images/ (make pause-image, make image) and those listed in
# IMAGES="a.tar b.tar"; pods must use imagePullPolicy IfNotPresent or Never,
# since nothing can be pulled.
#
# Safety (see /work/shared/LOCAL-CLUSTER.md), enforced here:
# - Pod traffic never leaves the machine: a mangle-table FORWARD chain, which
#   runs after kube-proxy's DNAT and before any ACCEPT kube-proxy adds to the
#   filter table, drops everything a pod sends to an address outside the pod
#   CIDR. Pods reach the host's own address (the API server, a PostgreSQL
#   listening there) un-NATed, from their pod IP, and each other. `up` proves
#   both with real HTTP requests from a pod.
# - Servers listen on HOST_IP or loopback and authenticate every client
#   (etcd: client certificates; kubelet: no anonymous access).
# - The sysctls that kubelet, kube-proxy and the bridge plugin change are
#   saved before and restored by `down`.
# - `down` stops only processes this script started (PID files, checked
#   against the executable), SIGKILL after a timeout, then removes shims,
#   mounts, network namespaces, kubepods cgroups, KUBE-*/CNI-* iptables chains,
#   the bridge, and the paths kubelet and containerd hard-code, when it made
#   them. A failed `up` tears down on its way out (KEEP_ON_FAILURE=1 to keep
#   the wreck for debugging). `down` is idempotent.
#
# Settings (environment): HOST_IP (default: the source address of the default
# route), CLUSTER_DIR (default bin/local-cluster), KUBE_VERSION (v1.37.1),
# API_PORT (6443), NODE_NAME (projectionist-node), IMAGES.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
KUBE_VERSION="${KUBE_VERSION:-v1.37.1}"
KUBE_BIN="${KUBE_BIN:-$root/bin/k8s/$KUBE_VERSION}"
STATE="${CLUSTER_DIR:-$root/bin/local-cluster}"
IMAGES_DIR="$root/bin/images"
NODE_NAME="${NODE_NAME:-projectionist-node}"
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/12
KUBERNETES_SERVICE_IP=10.96.0.1
BRIDGE=cni0
API_PORT="${API_PORT:-6443}"
ETCD_PORT=12379
ETCD_PEER_PORT=12380
PAUSE_IMAGE=registry.k8s.io/pause:3.10
NETCHECK_IMAGE=docker.io/projectionist/netcheck:dev
# An address outside the machine that pods must not reach (this host reaches
# it, or something pretending to be it).
OUTSIDE_IP=1.1.1.1
# Our iptables chain; `down` removes it with the KUBE-/CNI- chains.
GUARD_CHAIN=PROJECTIONIST-FORWARD

# Every sysctl something here may change. ip_forward comes first: writing it
# resets the per-interface forwarding flags that follow.
SYSCTLS=(
  net.ipv4.ip_forward
  net.ipv4.conf.all.forwarding
  net.ipv4.conf.default.forwarding
  net.ipv6.conf.all.forwarding
  net.ipv6.conf.default.forwarding
  net.ipv4.conf.all.route_localnet
  net.ipv4.conf.default.route_localnet
  net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables
  net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait
  net.netfilter.nf_conntrack_tcp_be_liberal
  net.netfilter.nf_conntrack_udp_timeout
  net.netfilter.nf_conntrack_udp_timeout_stream
  vm.overcommit_memory
  vm.panic_on_oom
  kernel.panic
  kernel.panic_on_oops
  kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes
)

# Paths kubelet, containerd and the CNI plugins use whatever they are told.
# `down` removes those that did not exist before `up`.
HARDCODED_PATHS=(
  /var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni
  /run/containerd /var/lib/containerd /opt/containerd /etc/cni /opt/cni
  /var/run/kubernetes /run/netns
)

# Components in start order; `down` stops them in its own order.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

PKI="$STATE/pki"
PIDS="$STATE/pids"
LOGS="$STATE/logs"
CTRD="$STATE/containerd"
CTRD_SOCK="$CTRD/containerd.sock"
KUBECONFIG_FILE="$STATE/kubeconfig"
KUBECTL="$KUBE_BIN/kubectl"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

host_ip() {
  if [ -n "${HOST_IP:-}" ]; then echo "$HOST_IP"; return; fi
  ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1
}

kubectl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local what="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.3
  done
}

# ---------------------------------------------------------------- processes

# start NAME EXECUTABLE ARGS...: runs EXECUTABLE in a session of its own (a
# terminal closing does not stop the cluster), logging to logs/NAME.log, and
# records its PID and executable for `down`.
start() {
  local name="$1" exe="$2"; shift 2
  echo "$exe" > "$PIDS/$name.exe"
  # The shell writes its own PID, then becomes the component.
  # shellcheck disable=SC2016 # $$ and $@ are the inner shell's.
  setsid -f sh -c 'echo $$ > "$0"; exec "$@"' "$PIDS/$name.pid" "$exe" "$@" \
    > "$LOGS/$name.log" 2>&1 < /dev/null
  wait_for "$name to start" 10 test -s "$PIDS/$name.pid"
  wait_for "$name to exec" 10 running "$name" || { tail -n 30 "$LOGS/$name.log" >&2; return 1; }
}

# running NAME: whether the process in NAME's PID file is alive and still the
# executable we started (a PID can be reused).
running() {
  local name="$1" pid exe actual
  [ -s "$PIDS/$name.pid" ] && [ -s "$PIDS/$name.exe" ] || return 1
  pid="$(cat "$PIDS/$name.pid")"; exe="$(cat "$PIDS/$name.exe")"
  actual="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [ "${actual% (deleted)}" = "$exe" ] || return 1
  # A zombie has exited; PID 1 reaps it.
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

# stop NAME [SECONDS]: SIGTERM, then SIGKILL when it outlives SECONDS.
stop() {
  local name="$1" timeout="${2:-15}" pid
  if running "$name"; then
    pid="$(cat "$PIDS/$name.pid")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$name to exit" "$timeout" not running "$name"; then
      log "$name ignored SIGTERM for ${timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_for "$name to die" 10 not running "$name" || log "WARNING: $name (pid $pid) survived SIGKILL"
    fi
  fi
  rm -f "$PIDS/$name.pid" "$PIDS/$name.exe"
}

not() { ! "$@"; }

# shim_pids: containerd shims serving our containerd (a shim outlives
# containerd by design); found by executable and our socket in their command
# line, so no other containerd's shims are touched.
shim_pids() {
  local p exe
  for p in /proc/[0-9]*; do
    exe="$(readlink "$p/exe" 2>/dev/null)" || continue
    case "$exe" in */containerd-shim*) ;; *) continue ;; esac
    if tr '\0' '\n' < "$p/cmdline" 2>/dev/null | grep -qxF "$CTRD_SOCK"; then
      echo "${p#/proc/}"
    fi
  done
}

# ---------------------------------------------------------------- preparation

ensure_binaries() {
  local need=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  local b missing=false
  for b in "${need[@]}"; do [ -x "$KUBE_BIN/$b" ] || missing=true; done
  if $missing; then
    log "building Kubernetes $KUBE_VERSION binaries into $KUBE_BIN"
    KUBE_VERSION="$KUBE_VERSION" "$root/hack/build-kube-binaries.sh" "$KUBE_BIN" "${need[@]}"
  fi
}

# ensure_packages installs the Debian packages that are missing, without
# letting them start or enable their services.
ensure_packages() {
  local pkgs=()
  command -v containerd >/dev/null && command -v ctr >/dev/null || pkgs+=(containerd)
  command -v runc >/dev/null || pkgs+=(runc)
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || pkgs+=(containernetworking-plugins)
  command -v iptables >/dev/null && command -v iptables-save >/dev/null || pkgs+=(iptables)
  command -v conntrack >/dev/null || pkgs+=(conntrack)
  # nft deletes the tables iptables-nft creates and cannot delete.
  command -v nft >/dev/null || pkgs+=(nftables)
  command -v openssl >/dev/null || pkgs+=(openssl)
  [ ${#pkgs[@]} -gt 0 ] || return 0
  log "installing Debian packages: ${pkgs[*]}"
  local policy=/usr/sbin/policy-rc.d made_policy=false
  if [ ! -e "$policy" ]; then
    # invoke-rc.d asks this before starting a service; 101 means "don't".
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; made_policy=true
  fi
  local rc=0
  # A fresh machine may have no package lists yet.
  apt-get update -q >/dev/null || log "apt-get update failed; trying the install anyway"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" || rc=$?
  if $made_policy; then rm -f "$policy"; fi
  [ "$rc" -eq 0 ] || die "apt-get install failed"
  # The package enables containerd.service; this machine runs our own
  # containerd only while the cluster is up.
  if command -v systemctl >/dev/null && systemctl is-enabled containerd.service >/dev/null 2>&1; then
    systemctl disable containerd.service >/dev/null 2>&1 || true
  fi
  if [ -d /run/systemd/system ] && systemctl is-active containerd.service >/dev/null 2>&1; then
    systemctl stop containerd.service || true
  fi
}

ensure_images() {
  if [ ! -f "$IMAGES_DIR/pause.tar" ]; then
    log "building the pause image (make pause-image)"
    make -C "$root" --no-print-directory pause-image
  fi
  local tar="$IMAGES_DIR/netcheck.tar" bin
  bin="$root/bin/linux-$(go env GOARCH)/netcheck"
  if [ ! -f "$tar" ] || [ "$root/hack/netcheck/main.go" -nt "$tar" ]; then
    log "building the netcheck image"
    mkdir -p "$IMAGES_DIR"
    (cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin" ./hack/netcheck)
    (cd "$root" && go run ./cmd/projectionist-image -binary "$bin" -path /netcheck -name "$NETCHECK_IMAGE" -out "$tar") >/dev/null
  fi
}

# preflight refuses to start over anything that looks like another cluster.
preflight() {
  [ "$(id -u)" -eq 0 ] || die "run as root"
  HOST_IP="$(host_ip)"
  [ -n "$HOST_IP" ] || die "cannot tell this host's address; set HOST_IP"
  local port
  for port in "$HOST_IP:$API_PORT" "$HOST_IP:10250" 127.0.0.1:$ETCD_PORT 127.0.0.1:$ETCD_PEER_PORT \
    127.0.0.1:10248 127.0.0.1:10249 127.0.0.1:10256 127.0.0.1:10257 127.0.0.1:10259; do
    if ss -Hltn "sport = :${port##*:}" | grep -q .; then
      die "port ${port##*:} is taken: $(ss -Hltnp "sport = :${port##*:}" | head -1)"
    fi
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then die "a $BRIDGE bridge exists already"; fi
  local f
  for f in ${IMAGES:-}; do [ -f "$f" ] || die "image archive $f (IMAGES) not found"; done
  if compgen -G '/sys/fs/cgroup/*/kubepods' >/dev/null; then die "kubepods cgroups exist already (another kubelet?)"; fi
  if iptables-save 2>/dev/null | grep -qE '^:(KUBE-|CNI-)'; then die "KUBE-/CNI- iptables chains exist already"; fi
}

# ---------------------------------------------------------------- certificates

# cert NAME CN ORG USAGE SANS CA: a P-256 key and a certificate signed by CA.
cert() {
  local name="$1" cn="$2" org="$3" usage="$4" sans="$5" ca="$6"
  local subj="/CN=$cn"
  [ -z "$org" ] || subj="/O=$org$subj"
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } > "$ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

ca() {
  local name="$1" cn="$2"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/$name.key" -subj "/CN=$cn" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI/$name.crt" 2>/dev/null
}

# kubeconfig FILE NAME: credentials of client certificate NAME, embedded.
kubeconfig() {
  local file="$1" name="$2"
  cat > "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://$HOST_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$name.crt")
    client-key-data: $(base64 -w0 "$PKI/$name.key")
contexts:
- name: local
  context: {cluster: local, user: $name}
current-context: local
EOF
  chmod 600 "$file"
}

make_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  ca ca projectionist-local-ca
  ca etcd-ca projectionist-local-etcd-ca
  ca front-proxy-ca projectionist-local-front-proxy-ca
  local api_sans="IP:$HOST_IP,IP:$KUBERNETES_SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver kube-apiserver "" serverAuth "$api_sans" ca
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth "" ca
  cert admin kubernetes-admin system:masters clientAuth "" ca
  cert controller-manager system:kube-controller-manager "" clientAuth "" ca
  cert scheduler system:kube-scheduler "" clientAuth "" ca
  cert kube-proxy system:kube-proxy "" clientAuth "" ca
  cert kubelet "system:node:$NODE_NAME" system:nodes clientAuth "" ca
  cert kubelet-serving "system:node:$NODE_NAME" system:nodes serverAuth "IP:$HOST_IP,DNS:$NODE_NAME" ca
  cert etcd-server etcd "" serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost" etcd-ca
  cert apiserver-etcd-client kube-apiserver-etcd-client "" clientAuth "" etcd-ca
  cert front-proxy-client front-proxy-client "" clientAuth "" front-proxy-ca
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  kubeconfig "$KUBECONFIG_FILE" admin
  local c
  for c in controller-manager scheduler kube-proxy kubelet; do kubeconfig "$STATE/$c.kubeconfig" "$c"; done
}

# ---------------------------------------------------------------- host state

save_host_state() {
  local s p v
  : > "$STATE/sysctls.saved"
  for s in "${SYSCTLS[@]}"; do
    if v="$(sysctl -n "$s" 2>/dev/null)"; then printf '%s=%s\n' "$s" "$v" >> "$STATE/sysctls.saved"; fi
  done
  : > "$STATE/paths.preexisting"
  for p in "${HARDCODED_PATHS[@]}"; do [ ! -e "$p" ] || echo "$p" >> "$STATE/paths.preexisting"; done
  nft list tables 2>/dev/null > "$STATE/nft-tables.preexisting" || true
}

restore_sysctls() {
  [ -f "$STATE/sysctls.saved" ] || return 0
  local line key want have
  while IFS= read -r line; do
    key="${line%%=*}"; want="${line#*=}"
    have="$(sysctl -n "$key" 2>/dev/null)" || continue
    if [ "$have" != "$want" ]; then
      log "restoring $key=$want (was $have)"
      sysctl -qw "$key=$want" || log "WARNING: could not restore $key"
    fi
  done < "$STATE/sysctls.saved"
}

# guard_egress makes pod traffic stay on the machine. The mangle table's
# FORWARD chain runs after nat PREROUTING (so a Service's DNAT to an outside
# endpoint is seen) and before filter FORWARD, where kube-proxy inserts
# ACCEPT rules ahead of anything added earlier.
guard_egress() {
  iptables -w -t mangle -N "$GUARD_CHAIN"
  iptables -w -t mangle -A "$GUARD_CHAIN" -i "$BRIDGE" ! -d "$POD_CIDR" -m comment --comment "local cluster: pods reach nothing off the machine" -j DROP
  iptables -w -t mangle -A "$GUARD_CHAIN" -s "$POD_CIDR" ! -d "$POD_CIDR" -m comment --comment "local cluster: pods reach nothing off the machine" -j DROP
  iptables -w -t mangle -A "$GUARD_CHAIN" -d "$POD_CIDR" ! -i "$BRIDGE" -m comment --comment "local cluster: nothing off the machine reaches pods" -j DROP
  iptables -w -t mangle -I FORWARD 1 -j "$GUARD_CHAIN"
  # Pods get no IPv6 address, but forwarding is not theirs to have either.
  if ip6tables -w -t mangle -N "$GUARD_CHAIN" 2>/dev/null; then
    ip6tables -w -t mangle -A "$GUARD_CHAIN" -i "$BRIDGE" -j DROP
    ip6tables -w -t mangle -A "$GUARD_CHAIN" -o "$BRIDGE" -j DROP
    ip6tables -w -t mangle -I FORWARD 1 -j "$GUARD_CHAIN"
  fi
}

# sweep_iptables deletes every KUBE-*, CNI-* and our chain, and the rules of
# the built-in chains that jump to them, in every table, for IPv4 and IPv6 and
# both iptables backends. It reads whole dumps: `iptables-legacy-save -t T`
# would create legacy table T, which nothing can remove again.
sweep_iptables() {
  local cmd dump table section chains rules c
  for cmd in iptables ip6tables iptables-legacy ip6tables-legacy; do
    command -v "$cmd-save" >/dev/null || continue
    dump="$("$cmd-save" 2>/dev/null)" || continue
    while read -r table; do
      section="$(awk -v t="*$table" '$0 == t {on=1; next} on && $0 == "COMMIT" {exit} on' <<<"$dump")"
      chains="$(grep -oE "^:(KUBE-|CNI-|$GUARD_CHAIN)[^ ]*" <<<"$section" | cut -c2- || true)"
      rules="$(grep -E '^-A ' <<<"$section" | grep -E -- "-[jg] (KUBE-|CNI-|$GUARD_CHAIN)" \
        | grep -vE "^-A (KUBE-|CNI-|$GUARD_CHAIN)" | sed 's/^-A /-D /' || true)"
      [ -n "$chains$rules" ] || continue
      log "removing $(wc -w <<<"$chains") chains from $cmd table $table"
      {
        echo "*$table"
        [ -z "$rules" ] || echo "$rules"
        for c in $chains; do echo "-F $c"; done
        for c in $chains; do echo "-X $c"; done
        echo COMMIT
      } | "$cmd-restore" -w --noflush || log "WARNING: $cmd-restore failed for table $table"
    done < <(sed -n 's/^\*//p' <<<"$dump")
  done
}

# drop_nft_tables deletes the iptables-nft tables (ip/ip6 filter, nat,
# mangle, ...) that kubelet, kube-proxy and guard_egress created, once the
# sweep left them empty; tables that existed before `up` stay.
drop_nft_tables() {
  command -v nft >/dev/null || return 0
  local family name
  while read -r _ family name; do
    case "$family" in ip|ip6) ;; *) continue ;; esac
    case "$name" in filter|nat|mangle|raw|security) ;; *) continue ;; esac
    grep -qxF "table $family $name" "$STATE/nft-tables.preexisting" 2>/dev/null && continue
    # Only base chains, no rules: nothing but table/chain headers, hooks and
    # braces.
    if nft list table "$family" "$name" | grep -vqE '^\s*(table .*\{|chain [A-Z]+ \{|type .*|\}|)$'; then
      log "WARNING: nftables table $family $name is not empty; leaving it"
      continue
    fi
    nft delete table "$family" "$name" || true
  done < <(nft list tables 2>/dev/null)
}

# unmount_under PREFIX...: unmounts everything at or below each PREFIX,
# deepest first, lazily when busy.
unmount_under() {
  local prefix m mounts
  for prefix in "$@"; do
    for _ in 1 2 3 4 5; do
      mapfile -t mounts < <(awk -v p="$prefix" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/self/mounts | sort -r)
      [ ${#mounts[@]} -gt 0 ] || break
      for m in "${mounts[@]}"; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
      done
    done
  done
}

# remove_hardcoded_paths removes what kubelet, containerd and libcni left in
# the paths they hard-code, when those did not exist before `up`. Even then
# another program may have started using them meanwhile (another containerd's
# shims share /run/containerd), so only what is ours goes, and then the
# directories left empty.
remove_hardcoded_paths() {
  [ -f "$STATE/paths.preexisting" ] || return 0
  local p f
  for f in /var/log/containers/*; do
    # The kubelet's links to our pods' logs.
    if [ -L "$f" ] && [[ "$(readlink "$f")" == "$STATE/"* ]]; then rm -f "$f"; fi
  done
  # libcni's cache of our sandboxes' results, when their CNI DEL never ran:
  # our network's, and the loopback's of the same sandboxes.
  for f in /var/lib/cni/results/projectionist-*-eth0; do
    [ -e "$f" ] || continue
    f="${f#/var/lib/cni/results/projectionist-}"
    rm -f "/var/lib/cni/results/projectionist-$f" "/var/lib/cni/results/cni-loopback-${f%-eth0}-lo"
  done
  for p in "${HARDCODED_PATHS[@]}"; do
    [ -e "$p" ] || continue
    grep -qxF "$p" "$STATE/paths.preexisting" && continue
    if awk -v p="$p" '$2 == p || index($2, p "/") == 1 {found=1} END {exit !found}' /proc/self/mounts; then
      log "WARNING: $p has mounts; leaving it"
      continue
    fi
    # No other kubelet runs (preflight): its directory is ours.
    if [ "$p" = /var/lib/kubelet ]; then rm -rf --one-file-system "$p"; fi
    find "$p" -depth -type d -empty -delete 2>/dev/null || true
    if [ -e "$p" ]; then
      log "WARNING: leaving $p, which holds what is not known to be ours: $(find "$p" -mindepth 1 | head -3 | tr '\n' ' ')"
    else
      log "removed $p"
    fi
  done
}

remove_cgroups() {
  local d f pid
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$d" ] || continue
    # Processes still inside are containers of this cluster whose shim is gone.
    while read -r f; do
      while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < "$f"
    done < <(find "$d" -name cgroup.procs 2>/dev/null)
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [ -d "$d" ] || break
      sleep 0.5
    done
    [ ! -d "$d" ] || log "WARNING: could not remove cgroup $d"
  done
}

# ---------------------------------------------------------------- components

start_etcd() {
  start etcd "$KUBE_BIN/etcd" \
    --name=local --data-dir="$STATE/etcd" \
    --listen-client-urls="https://127.0.0.1:$ETCD_PORT" --advertise-client-urls="https://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="https://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="https://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="local=https://127.0.0.1:$ETCD_PEER_PORT" \
    --cert-file="$PKI/etcd-server.crt" --key-file="$PKI/etcd-server.key" \
    --client-cert-auth --trusted-ca-file="$PKI/etcd-ca.crt" \
    --peer-cert-file="$PKI/etcd-server.crt" --peer-key-file="$PKI/etcd-server.key" \
    --peer-client-cert-auth --peer-trusted-ca-file="$PKI/etcd-ca.crt" \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd to be healthy" 30 curl -fsS --cacert "$PKI/etcd-ca.crt" --cert "$PKI/apiserver-etcd-client.crt" \
    --key "$PKI/apiserver-etcd-client.key" "https://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  start kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --bind-address="$HOST_IP" --advertise-address="$HOST_IP" --secure-port="$API_PORT" \
    --etcd-servers="https://127.0.0.1:$ETCD_PORT" --etcd-cafile="$PKI/etcd-ca.crt" \
    --etcd-certfile="$PKI/apiserver-etcd-client.crt" --etcd-keyfile="$PKI/apiserver-etcd-client.key" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --anonymous-auth=false \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --allow-privileged=true --profiling=false --cert-dir="$STATE/apiserver-certs"
  wait_for "kube-apiserver to be ready" 90 curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
    --key "$PKI/admin.key" "https://$HOST_IP:$API_PORT/readyz"
}

start_controllers() {
  local controllers=(
    serviceaccount-controller serviceaccount-token-controller root-ca-certificate-publisher-controller
    node-lifecycle-controller garbage-collector-controller namespace-controller pod-garbage-collector-controller
    endpoints-controller endpointslice-controller endpointslice-mirroring-controller service-cidr-controller
    replicaset-controller deployment-controller statefulset-controller job-controller disruption-controller
    clusterrole-aggregation-controller
  )
  local IFS=,
  start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
    --controllers="${controllers[*]}" --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
  unset IFS
  start kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --profiling=false
}

start_containerd() {
  mkdir -p "$CTRD" "$STATE/cni/net.d" "$STATE/cni/ipam"
  cat > "$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$CTRD_SOCK"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$CTRD/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    # The only pause image there is: imported from bin/images/pause.tar.
    sandbox_image = "$PAUSE_IMAGE"
    # This VM lacks CAP_SYS_RESOURCE: without it every sandbox fails with
    # "can't get final child's PID from pipe".
    restrict_oom_score_adj = true
    # Network namespaces under our state dir, not /run/netns.
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$STATE/cni/net.d"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$CTRD/runc"
EOF
  # No ipMasq: pods talk to the host un-NATed and to nothing beyond it.
  cat > "$STATE/cni/net.d/10-projectionist.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "projectionist",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni/ipam"
      }
    }
  ]
}
EOF
  start containerd "$(command -v containerd)" --config "$CTRD/config.toml"
  wait_for "containerd to serve" 30 ctr --address "$CTRD_SOCK" version
}

import_images() {
  local tars=() f
  for f in "$IMAGES_DIR"/*.tar; do [ -f "$f" ] && tars+=("$f"); done
  for f in ${IMAGES:-}; do tars+=("$f"); done
  [ ${#tars[@]} -gt 0 ] || return 0
  for f in "${tars[@]}"; do
    [ -f "$f" ] || die "image archive $f not found"
    ctr --address "$CTRD_SOCK" -n k8s.io images import "$f" | sed 's/^/  /' >&2
  done
}

start_kubelet() {
  mkdir -p "$STATE/kubelet" "$STATE/pod-logs"
  cat > "$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $HOST_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CTRD_SOCK
podLogsDir: $STATE/pod-logs
# This VM has cgroup v1 only.
failCgroupV1: false
cgroupDriver: cgroupfs
enforceNodeAllocatable: []
# Imported images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
failSwapOn: false
# No cluster DNS: in-cluster clients use KUBERNETES_SERVICE_HOST, and pods
# reach no name server off the machine anyway.
resolvConf: ""
clusterDomain: cluster.local
EOF
  start kubelet "$KUBE_BIN/kubelet" \
    --config="$STATE/kubelet-config.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet" --hostname-override="$NODE_NAME" --node-ip="$HOST_IP" --v=1
}

start_kube_proxy() {
  cat > "$STATE/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $STATE/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$HOST_IP/32"]
iptables:
  # true would set net.ipv4.conf.all.route_localnet.
  localhostNodePorts: false
# 0 leaves the host's conntrack settings alone.
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  start kube-proxy "$KUBE_BIN/kube-proxy" --config="$STATE/kube-proxy-config.yaml"
}

# ---------------------------------------------------------------- checks

# check_pod proves with real requests from a pod that the kubernetes Service
# reaches our API server (its certificate verifies against the cluster CA, the
# service account token is accepted) and that nothing off the machine answers
# a pod: neither an outside address nor a Service whose endpoint is one.
check_pod() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: local-cluster-egress-probe, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: local-cluster-egress-probe
  namespace: default
  labels: {kubernetes.io/service-name: local-cluster-egress-probe}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints: [{addresses: ["$OUTSIDE_IP"]}]
EOF
  local probe_ip
  probe_ip="$(kubectl get service local-cluster-egress-probe -o jsonpath='{.spec.clusterIP}')"
  local sa=/var/run/secrets/kubernetes.io/serviceaccount
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: local-cluster-check, namespace: default}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: kubernetes-service
    image: $NETCHECK_IMAGE
    imagePullPolicy: Never
    args: [-cacert, $sa/ca.crt, -token, $sa/token, -status, "200", "https://$KUBERNETES_SERVICE_IP/api"]
    securityContext: &restricted
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
  - name: egress-direct
    image: $NETCHECK_IMAGE
    imagePullPolicy: Never
    args: [-fail, -timeout, 3s, "http://$OUTSIDE_IP/"]
    securityContext: *restricted
  - name: egress-via-service
    image: $NETCHECK_IMAGE
    imagePullPolicy: Never
    args: [-fail, -timeout, 3s, "http://$probe_ip/"]
    securityContext: *restricted
EOF
  local phase="" deadline=$((SECONDS + 90))
  while [ "$SECONDS" -lt "$deadline" ]; do
    phase="$(kubectl get pod local-cluster-check -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    case "$phase" in Succeeded|Failed) break ;; esac
    sleep 0.5
  done
  local c ok=true
  for c in kubernetes-service egress-direct egress-via-service; do
    log "  check $c: $(kubectl logs local-cluster-check -c "$c" 2>&1 | tail -1)"
  done
  [ "$phase" = Succeeded ] || ok=false
  if ! $ok; then
    kubectl describe pod local-cluster-check >&2 || true
    die "the pod check ended in phase '${phase:-none}'"
  fi
  kubectl delete pod local-cluster-check --wait=false >/dev/null
  kubectl delete service local-cluster-egress-probe >/dev/null
  kubectl delete endpointslice local-cluster-egress-probe >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- commands

cmd_up() {
  if [ -d "$STATE" ]; then
    local n
    for n in "${COMPONENTS[@]}"; do
      if running "$n"; then die "the local cluster runs already (hack/local-cluster.sh status|down)"; fi
    done
    log "a stopped cluster left $STATE behind; tearing it down first"
    cmd_down
  fi
  local t0=$SECONDS
  preflight
  ensure_binaries
  ensure_packages
  ensure_images

  mkdir -p "$STATE" "$PIDS" "$LOGS"
  save_host_state
  trap 'up_failed' EXIT
  trap 'exit 130' INT TERM

  log "host $HOST_IP, pod CIDR $POD_CIDR, service CIDR $SERVICE_CIDR, state in $STATE"
  make_pki
  guard_egress
  log "starting etcd"; start_etcd
  log "starting kube-apiserver"; start_apiserver
  log "starting kube-controller-manager and kube-scheduler"; start_controllers
  log "starting containerd"; start_containerd
  log "importing images"; import_images
  log "starting kubelet and kube-proxy"; start_kubelet; start_kube_proxy
  wait_for "node $NODE_NAME to register" 60 kubectl get node "$NODE_NAME"
  kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null
  wait_for "kube-proxy to sync" 60 curl -fsS http://127.0.0.1:10256/healthz
  wait_for "the default service account" 60 kubectl get serviceaccount default
  log "node $NODE_NAME is Ready after $((SECONDS - t0))s; checking the network from a pod"
  check_pod

  cat > "$STATE/env" <<EOF
HOST_IP=$HOST_IP
POD_CIDR=$POD_CIDR
SERVICE_CIDR=$SERVICE_CIDR
KUBECONFIG=$KUBECONFIG_FILE
EOF
  trap - EXIT INT TERM
  log "local cluster up in $((SECONDS - t0))s"
  cat <<EOF
Local cluster is up (Kubernetes $KUBE_VERSION, node $NODE_NAME).
  export KUBECONFIG=$KUBECONFIG_FILE     # or: source $STATE/env
  HOST_IP=$HOST_IP       pods reach this address un-NATed: a PostgreSQL for them
                         must listen on it and allow $POD_CIDR in pg_hba.conf
  POD_CIDR=$POD_CIDR
  SERVICE_CIDR=$SERVICE_CIDR
  images: imagePullPolicy Never/IfNotPresent; add more with hack/local-cluster.sh load FILE.tar
  stop:   make cluster-down
EOF
}

up_failed() {
  local rc=$?
  trap - EXIT INT TERM
  [ "$rc" -ne 0 ] || return 0
  log "up failed (exit $rc); last log lines:"
  local f
  for f in "$LOGS"/*.log; do
    [ -f "$f" ] || continue
    echo "----- $(basename "$f")" >&2
    tail -n 15 "$f" >&2
  done
  if [ -n "${KEEP_ON_FAILURE:-}" ]; then
    log "KEEP_ON_FAILURE is set: leaving the cluster for inspection (make cluster-down when done)"
  else
    log "tearing down"
    cmd_down || true
  fi
  exit "$rc"
}

cmd_down() {
  if [ ! -d "$STATE" ]; then
    log "nothing to tear down ($STATE does not exist)"
    return 0
  fi
  local t0=$SECONDS
  mkdir -p "$PIDS"
  # Nothing may recreate or reschedule pods while they are deleted.
  stop kube-controller-manager
  stop kube-scheduler
  if running kube-apiserver && running kubelet && [ -f "$KUBECONFIG_FILE" ]; then
    log "deleting pods"
    if ! kubectl delete pods --all --all-namespaces --wait=true --timeout=60s >/dev/null 2>&1; then
      log "pods did not go within 60s; deleting them forcibly"
      kubectl delete pods --all --all-namespaces --force --grace-period=0 >/dev/null 2>&1 || true
    fi
  fi
  stop kubelet
  stop kube-proxy
  if running containerd; then
    local ns id
    for ns in $(ctr --address "$CTRD_SOCK" namespaces list -q 2>/dev/null); do
      for id in $(ctr --address "$CTRD_SOCK" -n "$ns" tasks list -q 2>/dev/null); do
        ctr --address "$CTRD_SOCK" -n "$ns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      done
      for id in $(ctr --address "$CTRD_SOCK" -n "$ns" tasks list -q 2>/dev/null); do
        ctr --address "$CTRD_SOCK" -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
      done
      for id in $(ctr --address "$CTRD_SOCK" -n "$ns" containers list -q 2>/dev/null); do
        ctr --address "$CTRD_SOCK" -n "$ns" containers delete "$id" >/dev/null 2>&1 || true
      done
    done
  fi
  stop containerd
  local pids
  mapfile -t pids < <(shim_pids)
  if [ ${#pids[@]} -gt 0 ]; then
    log "stopping leftover shims: ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    sleep 2
    mapfile -t pids < <(shim_pids)
    [ ${#pids[@]} -eq 0 ] || kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  remove_cgroups

  # Mounts: overlay root filesystems, network namespaces (containerd keeps
  # them under STATE, not in /run/netns), pod volumes. Nothing of ours mounts
  # elsewhere; /var/lib/kubelet is a kubelet's alone.
  unmount_under "$STATE"
  grep -qxF /var/lib/kubelet "$STATE/paths.preexisting" 2>/dev/null || unmount_under /var/lib/kubelet

  sweep_iptables
  drop_nft_tables
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    local veth
    for veth in $(ip -o link show master "$BRIDGE" | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link delete "$veth" 2>/dev/null || true
    done
    log "deleting bridge $BRIDGE"
    ip link delete "$BRIDGE" || true
  fi
  conntrack -D -s "$POD_CIDR" >/dev/null 2>&1 || true
  conntrack -D -d "$POD_CIDR" >/dev/null 2>&1 || true

  stop kube-apiserver 20
  stop etcd

  remove_hardcoded_paths

  restore_sysctls

  # Only once nothing is mounted below it: rm would follow a bind mount.
  if awk -v p="$STATE" 'index($2, p "/") == 1 {found=1} END {exit !found}' /proc/self/mounts; then
    die "mounts remain under $STATE; not removing it"
  fi
  local n left=()
  for n in "${COMPONENTS[@]}"; do if running "$n"; then left+=("$n"); fi; done
  [ ${#left[@]} -eq 0 ] || die "still running: ${left[*]}; not removing $STATE"
  rm -rf --one-file-system "$STATE"
  log "local cluster down in $((SECONDS - t0))s"
}

cmd_status() {
  if [ ! -d "$STATE" ]; then
    echo "local cluster: not running ($STATE does not exist)"
    return 0
  fi
  local n pid rss any=false
  echo "local cluster state: $STATE"
  for n in "${COMPONENTS[@]}"; do
    if running "$n"; then
      any=true
      pid="$(cat "$PIDS/$n.pid")"
      rss="$(awk '/^VmRSS/ {printf "%d MiB", $2/1024}' "/proc/$pid/status" 2>/dev/null)"
      printf '  %-24s running  pid %-7s %s\n' "$n" "$pid" "$rss"
    else
      printf '  %-24s stopped\n' "$n"
    fi
  done
  local shims
  shims="$(shim_pids | wc -l)"
  printf '  %-24s %s\n' "containerd shims" "$shims"
  if [ -f "$STATE/env" ]; then sed 's/^/  /' "$STATE/env"; fi
  if $any && running kube-apiserver; then
    kubectl get nodes -o wide 2>&1 | sed 's/^/  /' || true
    kubectl get pods --all-namespaces 2>&1 | sed 's/^/  /' || true
  fi
}

cmd_load() {
  [ $# -gt 0 ] || die "usage: $0 load ARCHIVE.tar..."
  running containerd || die "the local cluster does not run (make cluster-up)"
  local f
  for f in "$@"; do ctr --address "$CTRD_SOCK" -n k8s.io images import "$f"; done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  load) shift; cmd_load "$@" ;;
  *) echo "usage: $0 up|down|status|load ARCHIVE.tar..." >&2; exit 2 ;;
esac
