#!/usr/bin/env bash
# Build the two images from Dockerfile.server and Dockerfile.operator, tagged with VERSION:
#
#   batcomputer-server:<VERSION>     batcomputer-operator:<VERSION>
#
# With a Docker engine: `docker build`, on python:3.11-slim (what users with Docker get).
# Without one: buildah, with podman's image store (the local cluster runs the images
# from there). When no registry can be reached, the Python base image is made from
# Debian packages with mmdebstrap and kept in the image store under a tag keyed by its
# package set, so it is made once per machine. Missing Debian tools are installed.
#
# Builds use this machine's package-index settings (pip config, CA bundle, proxies),
# mounted read-only into the build steps, never baked into an image.
#
#   hack/build-images.sh                 # both images
#   ENGINE=docker hack/build-images.sh   # force an engine (docker | buildah)
#   PYTHON_IMAGE=python:3.11-slim hack/build-images.sh   # force a base image
#
# Prints the two image names (one per line) on success.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(cat "${ROOT}/VERSION")"
SERVER_IMAGE="batcomputer-server:${VERSION}"
OPERATOR_IMAGE="batcomputer-operator:${VERSION}"
DEBIAN_SUITE="bookworm"
BASE_PACKAGES="python3.11,python3.11-venv,python-is-python3,ca-certificates,tzdata,passwd"
# Files the Debian base leaves out: documentation, manuals, translations.
BASE_EXCLUDES=('/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*'
               '/usr/share/lintian/*')
TOOLS_PACKAGES=(buildah podman mmdebstrap runc conmon netavark uidmap fuse-overlayfs iptables)

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- engine
engine="${ENGINE:-}"
if [[ -z "${engine}" ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker; else engine=buildah; fi
fi

install_tools() {
  local missing=()
  for tool in buildah podman mmdebstrap; do command -v "${tool}" >/dev/null || missing+=("${tool}"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${TOOLS_PACKAGES[*]} from Debian packages (missing: ${missing[*]})"
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo to install ${TOOLS_PACKAGES[*]}"
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${TOOLS_PACKAGES[@]}" >/dev/null
}

# ---------------------------------------------------------------- host package-index settings
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
HOST_MOUNTS=()
host_index_settings() {
  # pip's own view of its settings (files and PIP_* variables), minus local paths.
  local ca=""
  for candidate in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" \
                   /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [[ -n "${candidate}" && -f "${candidate}" ]]; then ca="${candidate}"; break; fi
  done
  {
    echo "[global]"
    if command -v python3 >/dev/null; then
      python3 -m pip config list 2>/dev/null | sed -nE \
        "s/^(global|:env:|install)\.(index-url|extra-index-url|trusted-host|proxy|timeout|default-timeout|retries)='(.*)'$/\2 = \3/p" \
        | sort -u || true
    fi
    [[ -n "${ca}" ]] && echo "cert = /run/host-index/ca.crt"
  } > "${WORK}/pip.conf"
  HOST_MOUNTS+=(-v "${WORK}/pip.conf:/etc/pip.conf:ro")
  [[ -n "${ca}" ]] && HOST_MOUNTS+=(-v "${ca}:/run/host-index/ca.crt:ro")
  return 0
}
PROXY_ARGS=()
for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  [[ -n "${!var:-}" ]] && PROXY_ARGS+=(--build-arg "${var}=${!var}")
done

# ---------------------------------------------------------------- base image
debian_base() {
  # The tag changes with the package set and the suite, so a change rebuilds it.
  local key tag
  key="$(printf '%s|%s|%s' "${DEBIAN_SUITE}" "${BASE_PACKAGES}" "${BASE_EXCLUDES[*]}" | sha256sum | cut -c1-12)"
  tag="localhost/batcomputer-python:3.11-${DEBIAN_SUITE}-${key}"
  if podman image exists "${tag}"; then echo "${tag}"; return; fi
  log "making the Python base ${tag} from Debian packages (mmdebstrap, about a minute)"
  local excludes=()
  for path in "${BASE_EXCLUDES[@]}"; do excludes+=(--dpkgopt="path-exclude=${path}"); done
  # The hook runs in mmdebstrap's shell, which sets $1 to the new root.
  # shellcheck disable=SC2016
  mmdebstrap --quiet --variant=minbase --include="${BASE_PACKAGES}" "${excludes[@]}" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "${DEBIAN_SUITE}" "${WORK}/base.tar" >&2
  podman import --quiet --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    "${WORK}/base.tar" "${tag}" >/dev/null
  rm -f "${WORK}/base.tar"
  echo "${tag}"
}

registry_reachable() {
  podman image exists "$1" && return 0
  timeout 60 podman pull --quiet "$1" >/dev/null 2>&1
}

# ---------------------------------------------------------------- build
start=$(date +%s)
cd "${ROOT}"
if [[ "${engine}" == docker ]]; then
  base_args=()
  [[ -n "${PYTHON_IMAGE:-}" ]] && base_args=(--build-arg "PYTHON_IMAGE=${PYTHON_IMAGE}")
  docker build "${base_args[@]}" "${PROXY_ARGS[@]}" -f Dockerfile.server -t "${SERVER_IMAGE}" . >&2
  docker build "${base_args[@]}" "${PROXY_ARGS[@]}" -f Dockerfile.operator -t "${OPERATOR_IMAGE}" . >&2
elif [[ "${engine}" == buildah ]]; then
  install_tools
  CONTAINERS_CONF="$("${ROOT}/hack/podman-conf.sh")"
  export CONTAINERS_CONF
  base="${PYTHON_IMAGE:-}"
  if [[ -z "${base}" ]]; then
    if registry_reachable docker.io/library/python:3.11-slim; then
      base="docker.io/library/python:3.11-slim"
    else
      base="$(debian_base)"
    fi
  fi
  host_index_settings
  for pair in "Dockerfile.server:${SERVER_IMAGE}" "Dockerfile.operator:${OPERATOR_IMAGE}"; do
    file="${pair%%:*}" image="localhost/${pair#*:}"
    log "building ${image} from ${file} on ${base}"
    # --format docker keeps the HEALTHCHECK; --layers reuses unchanged steps.
    buildah bud --quiet --format docker --layers --network host --pull=never \
      --build-arg "PYTHON_IMAGE=${base}" "${PROXY_ARGS[@]}" "${HOST_MOUNTS[@]}" \
      -f "${file}" -t "${image}" . >/dev/null
  done
else
  die "ENGINE must be docker or buildah, not ${engine}"
fi
log "built ${SERVER_IMAGE} and ${OPERATOR_IMAGE} with ${engine} in $(( $(date +%s) - start ))s"
echo "${SERVER_IMAGE}"
echo "${OPERATOR_IMAGE}"
