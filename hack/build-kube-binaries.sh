#!/usr/bin/env bash
# Builds the Kubernetes test binaries (kube-apiserver, etcd, ...) from the Go
# module proxy, for envtest and the local cluster, where the usual release
# downloads (setup-envtest, GitHub) are unreachable.
#
#   hack/build-kube-binaries.sh [DIR] [BINARY...]
#
# DIR defaults to bin/k8s/<version>; BINARY defaults to kube-apiserver etcd
# kubectl. Known binaries: kube-apiserver kube-controller-manager
# kube-scheduler kubelet kube-proxy kubeadm kubectl etcd kwok (kubeadm only
# for the offline kind node image, hack/kind-node-image.sh). Binaries already in DIR
# are kept (delete them to rebuild). A cold build of kube-apiserver takes about
# 9 minutes on 2 cores; once the Go build cache is warm, seconds.
#
# kwok (sigs.k8s.io/kwok, KWOK_VERSION) fakes nodes for the local "mini
# cluster" of internal/kubetest: it marks pods bound to its node Running and
# Ready without running them. Its go.mod has no replace directives, so a plain
# pinned `go install` builds it.
#
# How: k8s.io/kubernetes is not meant to be imported; its go.mod replaces
# every k8s.io staging module with a directory of its own repository. A
# throwaway module requires k8s.io/kubernetes and replaces each of those
# modules (read from that go.mod, so the list cannot go stale) with its
# published v0.<minor>.<patch> version, then builds the cmd packages.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.1}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/bin/k8s/$KUBE_VERSION}"
shift || true
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=(kube-apiserver etcd kubectl)

mkdir -p "$out"
out="$(cd "$out" && pwd)"
staging_version="v0.${KUBE_VERSION#v1.}"
major=1
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

missing=()
for b in "${binaries[@]}"; do
  case "$b" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|kubeadm|kubectl|etcd|kwok) ;;
    *) echo "unknown binary $b (known: kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubeadm kubectl etcd kwok)" >&2; exit 2 ;;
  esac
  [ -x "$out/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -eq 0 ]; then
  log "all of ${binaries[*]} are in $out"
  exit 0
fi

work="$root/bin/.kube-build"
mkdir -p "$work"

kube=()
build_etcd=false
build_kwok=false
for b in "${missing[@]}"; do
  case "$b" in
    etcd) build_etcd=true ;;
    kwok) build_kwok=true ;;
    *) kube+=("$b") ;;
  esac
done

if [ ${#kube[@]} -gt 0 ]; then
  mod="$work/kubernetes-$KUBE_VERSION"
  mkdir -p "$mod"
  # (Re)resolved when new, or made before kubeadm was in the list.
  if [ ! -f "$mod/go.sum" ] || ! grep -q 'cmd/kubeadm"' "$mod/tools.go" 2>/dev/null; then
    log "resolving k8s.io/kubernetes $KUBE_VERSION and its staging modules at $staging_version"
    gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    {
      echo "module projectionist.local/kubebuild"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      echo
      echo "replace ("
      sed -n '/^replace (/,/^)/p' "$gomod" | awk '/=> \.\/staging\/src\// {print "\t" $1 " => " $1 " '"$staging_version"'"}'
      echo ")"
    } > "$mod/go.mod"
    {
      echo "//go:build tools"
      echo
      echo "package tools"
      echo
      echo "import ("
      for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubeadm kubectl; do
        echo "	_ \"k8s.io/kubernetes/cmd/$b\""
      done
      echo ")"
    } > "$mod/tools.go"
    (cd "$mod" && go mod tidy 2> "$work/tidy-kubernetes.log") || { cat "$work/tidy-kubernetes.log" >&2; exit 1; }
  fi
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  i=0
  for b in "${kube[@]}"; do
    i=$((i + 1))
    # Cold on 2 cores: the first binary compiles most of Kubernetes (5-11
    # min); the next ones reuse it (seconds to 2 min each).
    if [ "$i" -eq 1 ]; then est="the first compiles most of Kubernetes: 5-11 min cold on 2 cores"; else est="reuses the first: under 2 min"; fi
    log "building $b $KUBE_VERSION ($i of ${#kube[@]}; $est; seconds when cached)"
    (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$b" "k8s.io/kubernetes/cmd/$b")
  done
fi

if $build_etcd; then
  mod="$work/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  # (Re)resolved when new, or made before kubeadm was in the list.
  if [ ! -f "$mod/go.sum" ] || ! grep -q 'cmd/kubeadm"' "$mod/tools.go" 2>/dev/null; then
    log "resolving etcd $ETCD_VERSION"
    cat > "$mod/go.mod" <<EOF
module projectionist.local/etcdbuild

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
    cat > "$mod/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    (cd "$mod" && go mod tidy 2> "$work/tidy-etcd.log") || { cat "$work/tidy-etcd.log" >&2; exit 1; }
  fi
  log "building etcd $ETCD_VERSION (~1 min cold)"
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
fi

if $build_kwok; then
  log "building kwok $KWOK_VERSION (~2 min cold)"
  # go install pkg@version ignores the current module, so this repository's
  # go.mod does not constrain kwok's dependencies.
  (cd "$work" && GOBIN="$out" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
fi

for b in "${binaries[@]}"; do
  case "$b" in
    kubectl) v="$("$out/$b" version --client 2>/dev/null | head -1)" || true ;;
    kubeadm) v="$("$out/$b" version -o short 2>/dev/null | head -1)" || true ;;
    *) v="$("$out/$b" --version 2>/dev/null | head -1)" || true ;;
  esac
  echo "$b: $v" >&2
done
log "binaries in $out"
