#!/usr/bin/env bash
# Build the test tools from the pinned Go modules in this folder into a cache outside
# the repository, once (later calls are no-ops); prints the bin directory on stdout.
#   helm     helm.sh/helm/v3/cmd/helm, to install charts/cml-operator in the e2e tests
#   kstatus  ./kstatus: sigs.k8s.io/cli-utils' kstatus on objects read from stdin
# Kept apart from tests/cluster/build.sh (the control plane) so the two change alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
helm_version="$(awk '$1 == "helm.sh/helm/v3" {print $2; exit}' "$here/go.mod")"
cli_utils_version="$(awk '$1 == "sigs.k8s.io/cli-utils" {print $2; exit}' "$here/go.mod")"
# helm is keyed by the module files; the kstatus helper is rebuilt when its source changes.
module_hash="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
kstatus_hash="$(sha256sum "$here/kstatus/main.go" | cut -c1-12)"
cache_root="${CML_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cml-operator/tools}"
bin_dir="$cache_root/helm${helm_version}-cliutils${cli_utils_version}-${module_hash}/bin"

if [[ -x "$bin_dir/helm" && -x "$bin_dir/kstatus" && "$(cat "$bin_dir/.kstatus-source" 2>/dev/null)" == "$kstatus_hash" ]]; then
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null || { echo "tools/build.sh: Go is required to build helm and kstatus" >&2; exit 1; }
mkdir -p "$bin_dir"
start=$(date +%s)
(
  cd "$here"
  if [[ ! -x "$bin_dir/helm" ]]; then
    echo "tools/build.sh: building helm $helm_version; a few minutes the first time" >&2
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$bin_dir/helm.tmp" helm.sh/helm/v3/cmd/helm
    mv "$bin_dir/helm.tmp" "$bin_dir/helm"
  fi
  echo "tools/build.sh: building kstatus (cli-utils $cli_utils_version)" >&2
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$bin_dir/kstatus.tmp" ./kstatus
  mv "$bin_dir/kstatus.tmp" "$bin_dir/kstatus"
  echo "$kstatus_hash" > "$bin_dir/.kstatus-source"
)
echo "tools/build.sh: built in $(( $(date +%s) - start )) s into $bin_dir" >&2
echo "$bin_dir"
