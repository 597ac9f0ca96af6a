#!/usr/bin/env bash
# Build the pinned SeaweedFS `weed` binary (a real S3-compatible server, for the tests of
# s3:// artifacts and registries) into a user cache keyed by version, from the Go module
# proxy. Re-running is cheap: a cached binary is kept.
#
#   hack/build-seaweedfs.sh   # prints the path of the weed binary
#
# SeaweedFS's go.mod has replace directives, so `go install module@version` refuses it: the
# module is downloaded from the proxy and built as the main module instead.
set -euo pipefail

# SeaweedFS 4.53 (no semver tags on the proxy: its pseudo-version).
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE_ROOT="${BATCOMPUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/batcomputer}"
BIN_DIR="${CACHE_ROOT}/seaweedfs-${SEAWEEDFS_VERSION}/bin"
export GOFLAGS="-buildvcs=false -trimpath -mod=mod"
export CGO_ENABLED=0

log() { printf '[build-seaweedfs] %s\n' "$*" >&2; }

if [[ ! -x "${BIN_DIR}/weed" ]]; then
  log "building weed ${SEAWEEDFS_VERSION} (cold: about 15 minutes on 2 cores; cached afterwards)"
  start=$(date +%s)
  mkdir -p "${BIN_DIR}"
  WORK="$(mktemp -d)"
  trap 'chmod -R u+w "${WORK}" 2>/dev/null; rm -rf "${WORK}"' EXIT
  dir="$(go mod download -json "github.com/seaweedfs/seaweedfs@${SEAWEEDFS_VERSION}" |
         python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
  cp -r "${dir}" "${WORK}/src"
  chmod -R u+w "${WORK}/src"
  (cd "${WORK}/src" && go build -ldflags "-s -w" -o "${WORK}/weed" ./weed)
  mv "${WORK}/weed" "${BIN_DIR}/weed"
  log "built in $(( $(date +%s) - start ))s"
fi
echo "${BIN_DIR}/weed"
