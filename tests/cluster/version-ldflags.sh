# Sourced by build.sh and matrix/build-apiserver.sh: the -ldflags that stamp a Kubernetes
# version (git tag) into its binaries the way Kubernetes' own build does, so
# `kubectl version` and /version report the real release instead of v0.0.0.
version_ldflags() {
  local version="$1" flags="-s -w" pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$version" | cut -d. -f2) -X $pkg.gitTreeState=clean"
  done
  echo "$flags"
}
