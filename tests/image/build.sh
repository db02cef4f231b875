#!/usr/bin/env bash
# `make image`: build the Dockerfile with buildah. IMAGE (default cml-operator:dev, stored
# as localhost/cml-operator:dev) and BASE (the Dockerfile's PYTHON_IMAGE; default: the
# local Debian base from base.sh, since no public registry is reachable here; with a
# registry, BASE=python:3.11.14-slim-bookworm gives the image users get).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
"$here/install-tools.sh"
source "$here/env.sh"
IMAGE="${IMAGE:-localhost/cml-operator:dev}"
BASE="${BASE:-$("$here/base.sh")}"
start=$(date +%s)
# --network host and the host's CA bundle: pip inside the build reaches PyPI as the host does.
buildah bud --layers=false --network host --volume /etc/ssl/certs:/etc/ssl/certs:ro \
  --build-arg "PYTHON_IMAGE=$BASE" --tag "$IMAGE" --file "$repo/Dockerfile" "$repo" >&2
echo "build.sh: $IMAGE built on $BASE in $(( $(date +%s) - start )) s; $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes" >&2
echo "$IMAGE"
