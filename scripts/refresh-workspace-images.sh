#!/usr/bin/env bash
# Host-side refresh for local development: a thin wrapper over `python -m receiver refresh`
# that authenticates pulls with this host's own docker login (keychain / credential helpers).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/refresh-workspace-images.sh [RUNTIME...] [--no-recreate] [--force]

Pull the newest template image of each RUNTIME and recreate the workspace containers
(names starting with CONTAINER_PREFIX, default ws-) that run an older one. Prints the
result as JSON: pulled, recreated, unchanged, failed, digests.

  RUNTIME        a runtime name, e.g. claude-code (default: every name in $RUNTIMES)
  --no-recreate  only pull the images
  --force        recreate containers even when they already run the newest image
  -h, --help     show this help

Registry credentials come from your own `docker login` (~/.docker/config.json and its
credential helpers), so GHCR_USER/GHCR_TOKEN are not needed here. Other settings are
read from the environment: IMAGE_TEMPLATE, CONTAINER_PREFIX, IMAGE_PLATFORM, DOCKER_HOST,
SWAP_GRACE_SECONDS, ... (see README.md).

Exit status: 0 all done, 1 something failed (see "failed"), 2 bad arguments or settings.
USAGE
}

for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap" >&2
exec "$root/.venv/bin/python" -m receiver refresh "$@"
