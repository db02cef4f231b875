#!/usr/bin/env bash
# Install what building and running the image needs, from Debian's packages, once:
# buildah (build), podman + runc (run; crun fails on cgroup v1 hybrid hosts), debootstrap
# (the local Debian base: no public registry is reachable from the test machines).
# Needs root (CI and the dev machines run as root) or sudo; a no-op when all are present.
set -euo pipefail
missing=()
for tool in buildah podman runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "install-tools.sh: installing ${missing[*]} from Debian" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  buildah podman runc debootstrap uidmap fuse-overlayfs slirp4netns >/dev/null
