#!/usr/bin/env bash
# Builds a kind node image without pulling anything (make kind-node-image),
# for machines that reach Debian's mirror and the Go module proxy but no
# container registry. On a machine that can pull, kind's own kindest/node is
# better: hack/kind-e2e.sh uses this image only when KIND_NODE_IMAGE names it
# or kind's default cannot be pulled.
#
#   hack/kind-node-image.sh        # prints the image's name when done
#
# What is in it, and where each part comes from:
#   - a Debian 12 root filesystem made with debootstrap from the apt mirror:
#     systemd, containerd and runc (Debian's), the CNI plugins
#     (containernetworking-plugins, linked at /opt/cni/bin), iptables,
#     conntrack, iproute2, ...: what kind's base image installs;
#   - kind's own node files (entrypoint, systemd units for containerd and the
#     kubelet, containerd's config.toml, sysctls) from the sigs.k8s.io/kind
#     module (KIND_VERSION) in the module cache, post-processed the way kind's
#     images/base/Dockerfile does;
#   - kubeadm, kubelet, kubectl KUBE_VERSION from hack/build-kube-binaries.sh;
#   - pre-imported images, written as OCI archives by cmd/projectionist-image
#     and imported into the node's containerd (namespace k8s.io) under the
#     names kubeadm asks for: kube-apiserver, kube-controller-manager,
#     kube-scheduler and etcd (static binaries from the same build), CoreDNS,
#     kube-proxy (on the node's own root filesystem, for iptables and
#     conntrack), and the sandbox image (make pause-image).
#   - no CNI DaemonSet: kindnetd is not in any module the proxy serves, so the
#     cluster is made with kind's networking.disableDefaultCNI and the image
#     carries a bridge CNI configuration for the single node
#     (/etc/cni/net.d/10-bridge.conflist, pod CIDR 10.244.0.0/24, masquerade
#     to the node's address);
#   - CoreDNS at kubeadm's version, built from the module proxy;
#   - no storage provisioner (kind then installs its legacy host-path
#     StorageClass, which needs no image).
#
# The result is cached: a docker image archive under STATE named after a hash
# of this script and the versions, loaded into the engine when it lacks the
# image. Needs root (debootstrap, chroot), a Docker engine (DOCKER_HOST; see
# hack/docker-engine.sh) and Go.
#
# Settings (environment): KUBE_VERSION (v1.37.1), KIND_VERSION (v0.33.0),
# KIND_NODE_DIR (STATE, default bin/kind-node), DEBIAN_MIRROR (default: the
# first URI of /etc/apt/sources.list.d/debian.sources, else
# http://deb.debian.org/debian).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
KUBE_VERSION="${KUBE_VERSION:-v1.37.1}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
STATE="${KIND_NODE_DIR:-$root/bin/kind-node}"
KUBE_BIN="$root/bin/k8s/$KUBE_VERSION"
PAUSE_IMAGE="${PAUSE_IMAGE:-registry.k8s.io/pause:3.10}"
PACKAGES=jq,curl,systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,procps,containerd,runc,containernetworking-plugins,socat,ebtables

log() { printf '%s kind-node-image: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-}); see hack/docker-engine.sh"

hash="$(cat "$0" | sha256sum | cut -c1-12)"
IMAGE="localhost/projectionist/kind-node:$KUBE_VERSION-$hash"
ARCHIVE="$STATE/kind-node-$KUBE_VERSION-$hash.tar"
mkdir -p "$STATE"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE"
  exit 0
fi
if [ -f "$ARCHIVE" ]; then
  log "loading the cached $ARCHIVE"
  docker load -i "$ARCHIVE" >&2
  echo "$IMAGE"
  exit 0
fi

# --- parts built from the module proxy -------------------------------------
log "Kubernetes $KUBE_VERSION binaries (hack/build-kube-binaries.sh; cached in $KUBE_BIN)"
KUBE_VERSION="$KUBE_VERSION" hack/build-kube-binaries.sh "$KUBE_BIN" \
  kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd >&2
kind_dir="$(go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[ -d "$kind_dir/images/base/files" ] || die "no images/base/files in sigs.k8s.io/kind@$KIND_VERSION ($kind_dir)"
make --no-print-directory pause-image >&2

work="$(mktemp -d "$STATE/build.XXXXXX")"
build_ctr=
cleanup() {
  set +e
  [ -z "$build_ctr" ] || docker rm -f "$build_ctr" >/dev/null 2>&1
  docker rmi -f localhost/projectionist/kind-node-base:build >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# --- the root filesystem -----------------------------------------------------
rootfs_tar="$STATE/rootfs-$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-12).tar"
if [ ! -f "$rootfs_tar" ]; then
  mirror="${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2
  }
  log "debootstrap bookworm from $mirror (a few minutes; cached in $rootfs_tar)"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$work/debootstrap" "$mirror" > "$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$work/debootstrap/var/cache/apt/archives/"*.deb "$work/debootstrap/var/lib/apt/lists/"*
  tar -C "$work/debootstrap" --numeric-owner -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  rm -rf "$work/debootstrap"
fi

log "node files from kind $KIND_VERSION"
fs="$work/rootfs"
mkdir -p "$fs"
tar -C "$fs" --numeric-owner -xf "$rootfs_tar"
files="$kind_dir/images/base/files"
install -m 0755 "$files"/usr/local/bin/* "$fs/usr/local/bin/"
mkdir -p "$fs/kind/bin" "$fs/etc/containerd" "$fs/etc/default" "$fs/etc/sysctl.d" "$fs/etc/systemd/system/kubelet.service.d" "$fs/LICENSES"
install -m 0644 "$files"/kind/README.txt "$fs/kind/"
install -m 0755 "$files"/kind/bin/* "$fs/kind/bin/"
install -m 0644 "$files"/etc/crictl.yaml "$fs/etc/"
install -m 0644 "$files"/etc/containerd/* "$fs/etc/containerd/"
install -m 0644 "$files"/etc/default/* "$fs/etc/default/"
install -m 0644 "$files"/etc/sysctl.d/* "$fs/etc/sysctl.d/"
find "$files/etc/systemd/system" -maxdepth 1 -type f -exec install -m 0644 {} "$fs/etc/systemd/system/" \;
install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$fs/etc/systemd/system/kubelet.service.d/"
chmod 755 "$fs/kind" "$fs/kind/bin"
# kind's units start /usr/local/bin/containerd and use /opt/cni/bin; Debian
# installs them in /usr/bin and /usr/lib/cni.
ln -sf /usr/bin/containerd "$fs/usr/local/bin/containerd"
ln -sf /usr/bin/ctr "$fs/usr/local/bin/ctr"
ln -sf /usr/bin/containerd-shim-runc-v2 "$fs/usr/local/bin/containerd-shim-runc-v2"
mkdir -p "$fs/opt/cni"
rm -rf "$fs/opt/cni/bin"
ln -s /usr/lib/cni "$fs/opt/cni/bin"
# The sandbox image is the locally built one, imported below (kind's
# config.toml names registry.k8s.io/pause:3.10 already; kept in step).
sed -i "s|sandbox_image = .*|sandbox_image = \"$PAUSE_IMAGE\"|" "$fs/etc/containerd/config.toml"
# Without CAP_SYS_RESOURCE (some VMs, nested engines) every sandbox fails
# with "can't get final child's PID from pipe" unless containerd leaves
# oom_score_adj alone; harmless where the capability exists.
sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$fs/etc/containerd/config.toml"
# As kind's Dockerfile: no services but ours, journald without kmsg,
# systemd as init, the kubelet's manifests directory.
find "$fs/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
rm -f "$fs"/lib/systemd/system/multi-user.target.wants/* "$fs"/etc/systemd/system/*.wants/* \
  "$fs"/lib/systemd/system/local-fs.target.wants/* "$fs"/lib/systemd/system/sockets.target.wants/*udev* \
  "$fs"/lib/systemd/system/sockets.target.wants/*initctl* "$fs"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >> "$fs/etc/systemd/journald.conf"
ln -sf /usr/lib/systemd/systemd "$fs/sbin/init"
chroot "$fs" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >&2
chroot "$fs" systemctl mask systemd-binfmt.service >&2
mkdir -p "$fs/etc/kubernetes/manifests"
# containerd's base OCI spec, as kind makes it: its product-files hook, no
# rlimits.
chroot "$fs" ctr oci spec | python3 -c '
import json, sys
s = json.load(sys.stdin)
s.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
s["process"].pop("rlimits", None)
json.dump(s, sys.stdout, indent=2)
' > "$fs/etc/containerd/cri-base.json"
# The one node's pod network: a bridge, host-local addresses from the
# node's pod CIDR, and masquerading of traffic leaving it (the PostgreSQL
# container on the kind network sees the node's address and answers it).
mkdir -p "$fs/etc/cni/net.d"
cat > "$fs/etc/cni/net.d/10-bridge.conflist" <<'EOF'
{
  "cniVersion": "0.4.0",
  "name": "kind-bridge",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.244.0.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
# Forwarding in the node's own network namespace, for its pods: a new
# namespace starts with the host's value, and hack/docker-engine.sh leaves
# the host's off. Per namespace: the host's stays as it is.
echo "net.ipv4.ip_forward = 1" > "$fs/etc/sysctl.d/20-projectionist-forwarding.conf"
for b in kubelet kubectl; do install -m 0755 "$KUBE_BIN/$b" "$fs/usr/bin/$b"; done
# kubeadm behind a wrapper that first waits for containerd: on cgroup v1
# hosts kind goes on as soon as the entrypoint logs "detected cgroup v1",
# before systemd has started containerd, and kubeadm init's preflight then
# fails on a missing CRI socket when the node boots slowly.
mkdir -p "$fs/usr/libexec"
install -m 0755 "$KUBE_BIN/kubeadm" "$fs/usr/libexec/kubeadm"
cat > "$fs/usr/bin/kubeadm" <<'WRAPPER'
#!/bin/sh
# Written by projectionist's hack/kind-node-image.sh: waits up to 120 s for
# containerd, then runs kubeadm.
i=0
while [ "$i" -lt 240 ] && ! ctr --timeout 2s version >/dev/null 2>&1; do
  sleep 0.5
  i=$((i + 1))
done
# Should the node's systemd-sysctl not have run yet (see
# 20-projectionist-forwarding.conf).
echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null || true
exec /usr/libexec/kubeadm "$@"
WRAPPER
chmod 0755 "$fs/usr/bin/kubeadm"
printf '%s\n' "$KUBE_VERSION" > "$fs/kind/version"

# --- the images kubeadm and the node need --------------------------------------
log "control-plane images"
mkdir -p "$work/images" "$fs/kind/images"
etcd_ref="$(chroot "$fs" /usr/libexec/kubeadm config images list --kubernetes-version "$KUBE_VERSION" 2>/dev/null | grep '/etcd:')"
[ -n "$etcd_ref" ] || die "kubeadm config images list named no etcd image"
image() { # NAME BINARY [BASE]
  local name="$1" bin="$2" base="${3:-}"
  local out="$fs/kind/images/$(basename "${name%%:*}").tar"
  SOURCE_DATE_EPOCH=0 go run ./cmd/projectionist-image -binary "$bin" -path "/usr/local/bin/$(basename "$bin")" \
    -user 0:0 -name "$name" -out "$out" ${base:+-base "$base"} >&2
}
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  image "registry.k8s.io/$b:$KUBE_VERSION" "$KUBE_BIN/$b"
done
image "$etcd_ref" "$KUBE_BIN/etcd"
# CoreDNS at the version kubeadm deploys, from the module proxy (about 2 min
# cold; cached under STATE). It runs as root: the image writer sets no file
# capability for binding port 53 as nonroot, as the upstream image does.
coredns_ref="$(chroot "$fs" /usr/libexec/kubeadm config images list --kubernetes-version "$KUBE_VERSION" 2>/dev/null | grep '/coredns:')"
[ -n "$coredns_ref" ] || die "kubeadm config images list named no CoreDNS image"
coredns_version="${coredns_ref##*:}"
if [ ! -x "$STATE/coredns-$coredns_version/coredns" ]; then
  log "building CoreDNS $coredns_version (github.com/coredns/coredns)"
  (cd "$work" && GOBIN="$STATE/coredns-$coredns_version" CGO_ENABLED=0 GOFLAGS= \
    go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$coredns_version") >&2
fi
image "$coredns_ref" "$STATE/coredns-$coredns_version/coredns"
# kube-proxy runs iptables and conntrack: its base is the node's own root
# filesystem (the kube-proxy binary goes on top).
tar -C "$fs" --numeric-owner --exclude=./kind/images -c . | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - localhost/projectionist/kind-node-base:build >/dev/null
docker save -o "$work/images/node-base.tar" localhost/projectionist/kind-node-base:build
image "registry.k8s.io/kube-proxy:$KUBE_VERSION" "$KUBE_BIN/kube-proxy" "$work/images/node-base.tar"
cp "$root/bin/images/pause.tar" "$fs/kind/images/pause.tar"

# --- the node image: the root filesystem, then the images imported --------------
log "importing the root filesystem and the images into the node image"
tar -C "$fs" --numeric-owner -c . | docker import - localhost/projectionist/kind-node-base:build >/dev/null
rm -rf "$fs"
build_ctr="kind-node-build-$$"
docker run -d --name "$build_ctr" --network none --security-opt seccomp=unconfined \
  --entrypoint sleep localhost/projectionist/kind-node-base:build infinity >/dev/null
docker exec "$build_ctr" bash -c 'nohup containerd > /var/log/containerd-build.log 2>&1 &'
for _ in $(seq 1 60); do
  docker exec "$build_ctr" bash -c '[ -S /run/containerd/containerd.sock ] && ctr info >/dev/null 2>&1' && break
  sleep 0.5
done
docker exec "$build_ctr" bash -c 'for f in /kind/images/*.tar; do ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests "$f" || exit 1; done' >&2
docker exec "$build_ctr" bash -c 'rm -rf /kind/images; ctr --namespace=k8s.io images list -q' >&2
docker exec "$build_ctr" pkill containerd || true
sleep 2
# kind's image also says STOPSIGNAL SIGRTMIN+3 (systemd's clean shutdown on
# docker stop); Docker 20.10's commit cannot set it, and kind removes nodes
# with docker rm -f, which does not use it.
docker commit \
  --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
  --change 'ENV container=docker' \
  "$build_ctr" "$IMAGE" >/dev/null
log "saving $ARCHIVE"
docker save -o "$ARCHIVE.tmp" "$IMAGE"
mv "$ARCHIVE.tmp" "$ARCHIVE"
echo "$IMAGE"
