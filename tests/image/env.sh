# Sourced by the image scripts and used by tests/support/images.py: project-local
# containers and storage configuration (vfs, runc, no default ulimits).
here_env="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="$here_env/containers.conf"
export CONTAINERS_STORAGE_CONF="$here_env/storage.conf"
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
