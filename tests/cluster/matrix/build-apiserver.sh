#!/usr/bin/env bash
# Build kube-apiserver for one Kubernetes version (e.g. v1.31.14) into a cache of its own,
# for the version matrix (make test-k8s). etcd and kubectl come from the main control-plane
# build (tests/cluster/build.sh): kubectl supports one minor version of skew either way
# and etcd 3.7 serves every version in the supported range. Prints the bin directory,
# which holds kube-apiserver and links to that etcd and kubectl. It has no kube-controller-manager:
# the main build's is newer than these API servers (an unsupported skew) and building one per
# version doubles the matrix's build; the control plane runs without one there
# (controlplane.has_controller_manager), and the matrix subset does not rely on it.
#
# The wrapper module is the one tests/cluster/go.mod uses: k8s.io/kubernetes at the
# version, each staging module replaced by its published twin v0.<minor>.<patch>.
set -euo pipefail
version="${1:?usage: build-apiserver.sh v1.MINOR.PATCH}"
[[ "$version" == v* ]] || version="v$version"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
main_bin="$("$here/../build.sh")"
cache_root="${CML_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cml-operator/k8s}"
bin_dir="$cache_root/matrix-$version/bin"
if [[ "$version" == "$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$here/../go.mod")" ]]; then
  echo "$main_bin"   # the version make test uses: already built
  exit 0
fi
if [[ -x "$bin_dir/kube-apiserver" ]]; then
  # etcd and kubectl follow the main build: after tests/cluster/go.mod moves, the links do too.
  ln -sfn "$main_bin/etcd" "$bin_dir/etcd"
  ln -sfn "$main_bin/kubectl" "$bin_dir/kubectl"
  echo "$bin_dir"
  exit 0
fi
command -v go >/dev/null || { echo "build-apiserver.sh: Go is required" >&2; exit 1; }
staging_version="v0.${version#v1.}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
{
  echo "module cml.dev/cml-operator/tests/cluster/matrix"
  echo
  echo "go 1.24.0"
  echo
  echo "require k8s.io/kubernetes $version"
  echo
  echo "replace ("
  # The same staging modules tests/cluster/go.mod replaces.
  awk '/^replace \(/ {on=1; next} on && /^\)/ {on=0} on && $2 == "=>" {print $1}' "$here/../go.mod" |
    while read -r module; do echo "	$module => $module $staging_version"; done
  echo ")"
} > "$work/go.mod"
printf '//go:build tools\n\npackage matrix\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > "$work/tools.go"
start=$(date +%s)
echo "build-apiserver.sh: building kube-apiserver $version (staging $staging_version); several minutes" >&2
(
  cd "$work"
  GOFLAGS=-mod=mod go mod tidy >&2
  source "$here/../version-ldflags.sh"
  ldflags="$(version_ldflags "$version")"
  mkdir -p "$bin_dir.tmp"
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$bin_dir.tmp/kube-apiserver" \
    k8s.io/kubernetes/cmd/kube-apiserver
  ln -sf "$main_bin/etcd" "$bin_dir.tmp/etcd"
  ln -sf "$main_bin/kubectl" "$bin_dir.tmp/kubectl"
)
rm -rf "$bin_dir"
mv "$bin_dir.tmp" "$bin_dir"
echo "build-apiserver.sh: built in $(( $(date +%s) - start )) s into $bin_dir" >&2
echo "$bin_dir"
