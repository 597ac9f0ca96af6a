"""`batcomputer testenv up|down|env|status`: the local control plane by hand."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

DESCRIPTION = ("A real Kubernetes control plane on loopback (etcd, kube-apiserver, "
               "kube-controller-manager, kube-scheduler, kwok and the podlet), for tests and "
               "the demo.")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("testenv", help="a real Kubernetes control plane on loopback",
                            description=DESCRIPTION)
    parser.add_argument("--dir", type=Path, default=None,
                        help="state folder (default $BATCOMPUTER_TESTENV_DIR or "
                             "/tmp/batcomputer-testenv-<uid>)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="build (if needed) and start everything, then return")
    up.add_argument("--runtime", choices=("podman", "process"), default=None,
                    help="how the podlet runs pods: podman containers from their images "
                         "(default; build them with hack/build-images.sh) or local processes "
                         "(default $BATCOMPUTER_TESTENV_RUNTIME or podman)")
    actions.add_parser("down", help="stop everything started by `up` and remove its folder")
    actions.add_parser("env", help="print shell exports for kubectl and this cluster's folder "
                                   "(eval \"$(... env)\")")
    actions.add_parser("status", help="what is running")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import requests

    from batcomputer.testenv import cluster  # needs the dev extra (cryptography)

    folder = (args.dir or cluster.default_dir()).resolve()
    if args.action == "up":
        plane = cluster.ControlPlane(folder, runtime=args.runtime).start()
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in plane.timings.items() if k != "total")
        print(f"Control plane up in {plane.timings['total']:.1f}s ({timings})")
        print(f"  API server  {plane.state.server}")
        print(f"  kubeconfig  {plane.kubeconfig_path}")
        print(f"  logs        {plane.logs}/")
        how = "podman containers" if plane.runtime == "podman" else "local processes"
        print(f"  nodes       {cluster.KWOK_NODE} (kwok, tainted), {cluster.PODLET_NODE} "
              f"(podlet: pods run as {how})")
        print(f"Use it:  eval \"$(batcomputer testenv --dir {folder} env)\"; kubectl get nodes")
        print(f"Stop it: batcomputer testenv --dir {folder} down")
        return 0
    state = cluster.State.load(folder)
    if args.action == "down":
        if state is None:
            print(f"Nothing running from {folder}")
            return 0
        stopped = cluster.stop_state(state)
        shutil.rmtree(folder, ignore_errors=True)
        print(f"Stopped {', '.join(stopped) or 'nothing (already stopped)'}; removed {folder}")
        return 0
    if state is None:
        print(f"No control plane in {folder}; start one with `batcomputer testenv up`")
        return 1
    if args.action == "env":
        bin_dir = Path(state.commands.get("kube-apiserver", "kube-apiserver")).parent
        print(f"export KUBECONFIG={folder / 'admin.kubeconfig'}")
        print(f"export PATH={bin_dir}{os.pathsep}$PATH")
        # `testenv status|down` then find this cluster, and its pods' logs are under it.
        print(f"export BATCOMPUTER_TESTENV_DIR={folder}")
        return 0
    ok = True
    for name, pid in state.pids.items():
        alive = cluster._alive(pid)
        ok &= alive
        print(f"{name:<24} pid {pid:<8} {'running' if alive else 'STOPPED'}")
    try:
        ready = requests.get(state.server + "/readyz", verify=str(folder / "pki" / "ca.crt"),
                             timeout=3).status_code == 200
    except requests.RequestException:
        ready = False
    print(f"API server {state.server}: {'ready' if ready else 'NOT READY'}")
    return 0 if ok and ready else 1
