#!/usr/bin/env bash
# `make release VERSION=x.y.z`: write dist/ for one version, from a clean tree.
#   dist/cml-operator-<v>.tgz                 the chart (helm package)
#   dist/cml-operator-image-<v>.tar           the image, an OCI archive tagged <repository>:<v>
#   dist/cml-operator-image-<v>.cdx.json      CycloneDX SBOM (JSON) of the image's Python packages
#   dist/SHA256SUMS
# VERSION must be the version the tree says (operator/cml_operator/__init__.py, the single source;
# the chart's version and appVersion must agree: tests/unit/test_release.py). IMAGE_REPOSITORY
# (default ghcr.io/cml-dev/cml-operator) names the image; BASE as for `make image`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
: "${VERSION:?usage: make release VERSION=x.y.z}"

source_version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/operator/cml_operator/__init__.py")"
chart_version="$(sed -n 's/^version: *//p' "$repo/charts/cml-operator/Chart.yaml")"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/charts/cml-operator/Chart.yaml")"
if [[ "$VERSION" != "$source_version" || "$VERSION" != "$chart_version" || "$VERSION" != "$app_version" ]]; then
  echo "release.sh: VERSION=$VERSION, but the tree says $source_version (operator/cml_operator/__init__.py)," \
       "chart $chart_version / appVersion $app_version: set all three, and CHANGELOG.md, first" >&2
  exit 2
fi
grep -q "^## \[$VERSION\]" "$repo/CHANGELOG.md" || { echo "release.sh: CHANGELOG.md has no '## [$VERSION]' section" >&2; exit 2; }

dist="$repo/dist"
mkdir -p "$dist"
rm -f "$dist"/cml-operator-"$VERSION".tgz "$dist"/cml-operator-image-"$VERSION".* "$dist/SHA256SUMS"
start=$(date +%s)

tools="$("$repo/tests/tools/build.sh")"
"$tools/helm" lint --strict "$repo/charts/cml-operator" >&2
"$tools/helm" package "$repo/charts/cml-operator" --destination "$dist" >&2

image="${IMAGE_REPOSITORY:-ghcr.io/cml-dev/cml-operator}:$VERSION"
IMAGE="$image" "$here/build.sh" >/dev/null
source "$here/env.sh"
archive="$dist/cml-operator-image-$VERSION.tar"
buildah push --quiet "$image" "oci-archive:$archive:$image" >&2

# The SBOM lists what the image's venv holds: its site-packages (mounted, read on the host with -S,
# so nothing of the host's own environment is counted).
container="$(buildah from --pull-never "$image")"
trap 'buildah rm "$container" >/dev/null 2>&1 || true' EXIT
mount="$(buildah mount "$container")"
site="$(echo "$mount"/opt/venv/lib/python3*/site-packages)"
[[ -d "$site" ]] || { echo "release.sh: no site-packages in the image ($site)" >&2; exit 1; }
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}" \
PYTHONPATH="$site" "$repo/.venv/bin/cyclonedx-py" environment -S --pyproject "$repo/pyproject.toml" \
  --of JSON --output-reproducible --validate -o "$dist/cml-operator-image-$VERSION.cdx.json" "$(command -v python3)"
buildah umount "$container" >/dev/null
# pyproject's version is dynamic (read from __version__), which cyclonedx-py cannot see: name it.
"$repo/.venv/bin/python" - "$dist/cml-operator-image-$VERSION.cdx.json" "$VERSION" <<'PY'
import json, sys
path, version = sys.argv[1], sys.argv[2]
bom = json.load(open(path))
root = bom["metadata"]["component"]
root.update(version=version, purl=f"pkg:pypi/cml-operator@{version}")
json.dump(bom, open(path, "w"), indent=2, sort_keys=True)
PY

(cd "$dist" && sha256sum "cml-operator-$VERSION.tgz" "cml-operator-image-$VERSION.tar" \
  "cml-operator-image-$VERSION.cdx.json" > SHA256SUMS)
echo "release.sh: $VERSION in $(( $(date +%s) - start )) s:" >&2
ls -l "$dist" >&2
