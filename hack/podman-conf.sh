#!/usr/bin/env bash
# Write the containers.conf that buildah and podman use for this project, and print its path.
#
# Never the machine's own configuration: callers export CONTAINERS_CONF=<this file>.
# What it sets, and why (each found on machines without systemd or CAP_SYS_RESOURCE):
#   runtime runc        crun refuses the hybrid cgroup v1/v2 layout
#   cgroupfs, file      no systemd to manage cgroups or take events
#   default_ulimits     the runtime cannot raise limits without CAP_SYS_RESOURCE, and
#                       fails above what its own parent holds: stay well below the hard limits
#   netavark            the network backend podman 4 ships with (pods use the host network)
set -euo pipefail

CACHE_ROOT="${BATCOMPUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/batcomputer}"
CONF="${CACHE_ROOT}/podman/containers.conf"

cap() {  # cap <hard limit> <ceiling>: half the hard limit, at most the ceiling
  local hard="$1" ceiling="$2"
  if [[ "${hard}" == "unlimited" ]]; then echo "${ceiling}"; return; fi
  local half=$(( hard / 2 ))
  echo $(( half < ceiling ? half : ceiling ))
}

nofile="$(cap "$(ulimit -Hn)" 16384)"
nproc="$(cap "$(ulimit -Hu)" 16384)"
helpers=()
for dir in /usr/lib/podman /usr/libexec/podman /usr/local/libexec/podman /usr/local/lib/podman; do
  [[ -d "${dir}" ]] && helpers+=("\"${dir}\"")
done

mkdir -p "$(dirname "${CONF}")"
tmp="$(mktemp "${CONF}.XXXXXX")"
cat > "${tmp}" <<CONF
# Written by hack/podman-conf.sh; used through CONTAINERS_CONF only.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
helper_binaries_dir = [$(IFS=,; echo "${helpers[*]}")]

[network]
network_backend = "netavark"
CONF
mv "${tmp}" "${CONF}"
echo "${CONF}"
