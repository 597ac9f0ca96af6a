#!/usr/bin/env bash
# Build the pinned control-plane binaries into a user cache keyed by version.
#
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok
#
# Everything comes from the Go module proxy. k8s.io/kubernetes cannot be
# `go install`ed directly (it replaces its staging modules with local paths),
# so a throw-away wrapper module requires it and replaces every k8s.io staging
# module with its published v0.<minor>.<patch> tag. etcd's server module has
# local replaces too and gets the same treatment.
#
# Re-running is cheap: binaries already in the cache are kept.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.8}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE_ROOT="${BATCOMPUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/batcomputer}"
BIN_DIR="${CACHE_ROOT}/controlplane/kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}/bin"

# Go 1.27 turns on the jsonv2 experiment, which breaks /openapi/v2 of
# kube-apiserver 1.36; keep it off whatever Go builds this.
export GOEXPERIMENT="${GOEXPERIMENT:-nojsonv2}"
export GOFLAGS="-buildvcs=false -trimpath"
export CGO_ENABLED=0

log() { printf '[build-controlplane] %s\n' "$*" >&2; }

need() {
  local b
  for b in "$@"; do [[ -x "${BIN_DIR}/${b}" ]] || return 0; done
  return 1
}

mkdir -p "${BIN_DIR}"
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
start=$(date +%s)

if need kube-apiserver kube-controller-manager kube-scheduler kubectl; then
  log "building Kubernetes ${KUBE_VERSION} (cold: ~15-20 min on 2 cores; cached afterwards)"
  minor_patch="${KUBE_VERSION#v1.}"
  staging_version="v0.${minor_patch}"
  mkdir -p "${WORK}/kube"
  cd "${WORK}/kube"
  curl -fsSL --retry 3 "${GOPROXY_URL:-https://proxy.golang.org}/k8s.io/kubernetes/@v/${KUBE_VERSION}.mod" -o upstream.mod
  {
    echo "module batcomputer.local/controlplane"
    echo
    grep -E '^go ' upstream.mod
    grep -E '^godebug ' upstream.mod || true
    echo
    echo "require k8s.io/kubernetes ${KUBE_VERSION}"
    echo
    echo "replace ("
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' upstream.mod \
      | awk -v v="${staging_version}" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy -e >/dev/null 2>&1 || true
  go mod download
  pkg="k8s.io/component-base/version"
  ldflags="-s -w -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor_patch%%.*} -X ${pkg}.gitTreeState=clean"
  ldflags="${ldflags} -X k8s.io/client-go/pkg/version.gitVersion=${KUBE_VERSION}"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    if [[ -x "${BIN_DIR}/${cmd}" ]]; then continue; fi
    log "go build ${cmd}"
    go build -ldflags "${ldflags}" -o "${BIN_DIR}/${cmd}.tmp" "k8s.io/kubernetes/cmd/${cmd}"
    mv "${BIN_DIR}/${cmd}.tmp" "${BIN_DIR}/${cmd}"
  done
fi

if need etcd; then
  log "building etcd ${ETCD_VERSION}"
  mkdir -p "${WORK}/etcd"
  cd "${WORK}/etcd"
  cat > go.mod <<GOMOD
module batcomputer.local/etcd

go 1.24

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
GOMOD
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go mod tidy -e >/dev/null 2>&1 || true
  go build -ldflags "-s -w" -o "${BIN_DIR}/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "${BIN_DIR}/etcd.tmp" "${BIN_DIR}/etcd"
fi

if need kwok || [[ ! -s "${BIN_DIR}/../kwok-stages.yaml" ]]; then
  log "building kwok ${KWOK_VERSION}"
  GOBIN="${WORK}/gobin" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  mv "${WORK}/gobin/kwok" "${BIN_DIR}/kwok"
  # kwok reads the lifecycle of nodes and pods ("stages") from its config; use the
  # default "fast" stages shipped in the same kwok module version.
  kwok_dir="$(go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  stages="${kwok_dir}/kustomize/stage"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "${stages}/${f}"
  done > "${BIN_DIR}/../kwok-stages.yaml.tmp"
  mv "${BIN_DIR}/../kwok-stages.yaml.tmp" "${BIN_DIR}/../kwok-stages.yaml"
fi

log "binaries in ${BIN_DIR} ($(( $(date +%s) - start ))s)"
echo "${BIN_DIR}"
