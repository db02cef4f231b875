#!/usr/bin/env bash
# A local Debian bookworm base image with python3 and python3-venv, for building the
# operator image where no public registry is reachable (the tests, CI). Built with
# debootstrap once (about a minute), kept as a tarball under the user's cache, and
# imported into podman/buildah storage as $BASE_IMAGE when missing there.
# Prints the image name. Users with a registry build on python:*-slim instead.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
BASE_IMAGE="${BASE_IMAGE:-localhost/cml-operator-base:bookworm-v2}"
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/cml-operator/image"
tarball="$cache/debian-$suite-python3-v2.tar"  # v2: / is 0755

if ! podman image exists "$BASE_IMAGE"; then
  if [[ ! -s "$tarball" ]]; then
    mkdir -p "$cache"
    root="$(mktemp -d /var/tmp/cml-base-XXXXXX)"
    trap 'rm -rf "$root"' EXIT
    start=$(date +%s)
    echo "base.sh: debootstrap $suite (minbase + python3, python3-venv, ca-certificates) from $mirror" >&2
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$root" "$mirror" >&2
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    chmod 755 "$root"   # mktemp made it 0700: as the image's /, non-root users could not enter it
    tar -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    echo "base.sh: built in $(( $(date +%s) - start )) s: $tarball ($(du -h "$tarball" | cut -f1))" >&2
  fi
  podman import --change 'CMD ["/bin/sh"]' "$tarball" "$BASE_IMAGE" >/dev/null
fi
echo "$BASE_IMAGE"
