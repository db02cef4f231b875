#!/usr/bin/env bash
# Build the test tools from the pinned Go modules in this folder into a cache outside
# the repository, once (later calls are no-ops); prints the bin directory on stdout.
#   helm     helm.sh/helm/v3/cmd/helm, to install charts/cml-operator in the e2e tests
#   kstatus  ./kstatus: sigs.k8s.io/cli-utils' kstatus on objects read from stdin
#   promtool github.com/prometheus/prometheus/cmd/promtool from ./promtool's own module:
#            `promtool test rules` on deploy/monitoring/, PromQL parsing of the dashboard
# Kept apart from tests/cluster/build.sh (the control plane) so the two change alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
helm_version="$(awk '$1 == "helm.sh/helm/v3" {print $2; exit}' "$here/go.mod")"
cli_utils_version="$(awk '$1 == "sigs.k8s.io/cli-utils" {print $2; exit}' "$here/go.mod")"
# helm is keyed by the module files; the kstatus helper is rebuilt when its source changes.
module_hash="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
kstatus_hash="$(sha256sum "$here/kstatus/main.go" | cut -c1-12)"
promtool_hash="$(cat "$here/promtool/go.mod" "$here/promtool/go.sum" | sha256sum | cut -c1-12)"
cache_root="${CML_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cml-operator/tools}"
bin_dir="$cache_root/helm${helm_version}-cliutils${cli_utils_version}-${module_hash}/bin"

# As helm's own Makefile: the Kubernetes version `helm template` and `lint` assume is 1.<client-go minor>
# (without it, 1.20, and a chart's kubeVersion >=1.31 would refuse to render).
client_go="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$here/go.sum" | head -1)"
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
for pkg in pkg/lint/rules pkg/chartutil; do
  helm_ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
done
helm_stamp="$(echo "$helm_ldflags" | sha256sum | cut -c1-12)"

if [[ -x "$bin_dir/helm" && "$(cat "$bin_dir/.helm-build" 2>/dev/null)" == "$helm_stamp" && -x "$bin_dir/kstatus" && "$(cat "$bin_dir/.kstatus-source" 2>/dev/null)" == "$kstatus_hash" \
      && -x "$bin_dir/promtool" && "$(cat "$bin_dir/.promtool-source" 2>/dev/null)" == "$promtool_hash" ]]; then
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null || { echo "tools/build.sh: Go is required to build helm and kstatus" >&2; exit 1; }
mkdir -p "$bin_dir"
start=$(date +%s)
(
  cd "$here"
  if [[ ! -x "$bin_dir/helm" || "$(cat "$bin_dir/.helm-build" 2>/dev/null)" != "$helm_stamp" ]]; then
    echo "tools/build.sh: building helm $helm_version (Kubernetes 1.$k8s_minor); a few minutes the first time" >&2
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$helm_ldflags" -o "$bin_dir/helm.tmp" helm.sh/helm/v3/cmd/helm
    mv "$bin_dir/helm.tmp" "$bin_dir/helm"
    echo "$helm_stamp" > "$bin_dir/.helm-build"
  fi
  echo "tools/build.sh: building kstatus (cli-utils $cli_utils_version)" >&2
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$bin_dir/kstatus.tmp" ./kstatus
  mv "$bin_dir/kstatus.tmp" "$bin_dir/kstatus"
  echo "$kstatus_hash" > "$bin_dir/.kstatus-source"
  if [[ ! -x "$bin_dir/promtool" || "$(cat "$bin_dir/.promtool-source" 2>/dev/null)" != "$promtool_hash" ]]; then
    prometheus_version="$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" {print $3; exit}' promtool/go.mod)"
    echo "tools/build.sh: building promtool (prometheus $prometheus_version); a few minutes the first time" >&2
    # remove_all_sd: promtool's rule tests and query parsing need no service discovery plugins.
    (cd promtool && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -tags remove_all_sd -ldflags "-s -w" \
      -o "$bin_dir/promtool.tmp" github.com/prometheus/prometheus/cmd/promtool)
    mv "$bin_dir/promtool.tmp" "$bin_dir/promtool"
    echo "$promtool_hash" > "$bin_dir/.promtool-source"
  fi
)
echo "tools/build.sh: built in $(( $(date +%s) - start )) s into $bin_dir" >&2
echo "$bin_dir"
