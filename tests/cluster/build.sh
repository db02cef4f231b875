#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager and kubectl from the pinned Go modules in this
# folder into a cache outside the repository, once; later calls are no-ops.
# Prints the bin directory on stdout.
#
# The cache lives under the user's cache folder so a fresh clone (CI) and
# later sessions reuse it; Go's module and build caches are global anyway.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$here/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$here/go.mod")"
cache_root="${CML_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cml-operator/k8s}"
# The key names the set of binaries too: a cache from before kube-controller-manager joined
# (".../<k8s>-etcd<etcd>/bin") is not this one, so it is built afresh rather than found incomplete.
bin_dir="$cache_root/${k8s_version}-etcd${etcd_version}-kcm/bin"

if [[ -x "$bin_dir/kube-apiserver" && -x "$bin_dir/kube-controller-manager" && -x "$bin_dir/kubectl" \
      && -x "$bin_dir/etcd" ]]; then
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is required to build the control plane" >&2; exit 1; }
# Go 1.24+ understands go.mod's toolchain lines; the local Go must not be older.
mkdir -p "$bin_dir.tmp"
start=$(date +%s)
echo "build.sh: building kube-apiserver, kube-controller-manager, kubectl ($k8s_version) and etcd ($etcd_version); the first build takes 10-30 minutes on 2 cores" >&2
(
  cd "$here"
  source "$here/version-ldflags.sh"
  ldflags="$(version_ldflags "$k8s_version")"
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$bin_dir.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$bin_dir.tmp/etcd" go.etcd.io/etcd/server/v3
)
rm -rf "$bin_dir"
mv "$bin_dir.tmp" "$bin_dir"
echo "build.sh: built in $(( $(date +%s) - start )) s into $bin_dir" >&2
echo "$bin_dir"
