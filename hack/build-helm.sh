#!/usr/bin/env bash
# Build the pinned helm binary into a user cache keyed by version, from the Go module proxy
# (no download site is needed). Re-running is cheap: a cached binary is kept.
#
#   hack/build-helm.sh        # prints the path of the helm binary
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${BATCOMPUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/batcomputer}"
BIN_DIR="${CACHE_ROOT}/helm-${HELM_VERSION}/bin"
export GOFLAGS="-buildvcs=false -trimpath"
export CGO_ENABLED=0

log() { printf '[build-helm] %s\n' "$*" >&2; }

if [[ ! -x "${BIN_DIR}/helm" ]]; then
  log "building helm ${HELM_VERSION} (cold: a few minutes on 2 cores; cached afterwards)"
  start=$(date +%s)
  mkdir -p "${BIN_DIR}"
  WORK="$(mktemp -d)"
  trap 'rm -rf "${WORK}"' EXIT
  # The version helm reports is set at link time, as its own release build does.
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  GOBIN="${WORK}/bin" go install -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  mv "${WORK}/bin/helm" "${BIN_DIR}/helm"
  log "built in $(( $(date +%s) - start ))s"
fi
echo "${BIN_DIR}/helm"
