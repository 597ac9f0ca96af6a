"""The podman command line the podlet builds from a container spec."""

from __future__ import annotations

import json
from pathlib import Path

from batcomputer.testenv.pods import ContainerSpec, Mount
from batcomputer.testenv.runtime import podman_run_args, translate


def test_a_restricted_pod_becomes_a_restricted_container() -> None:
    spec = ContainerSpec(name="server", image="batcomputer-server:0.1.0", command=None,
                         args=["serve"], env={"HOSTNAME": "crime-v1-abc", "A": "x=y"},
                         mounts=[Mount("/pods/x/volumes/tmp", "/tmp"),
                                 Mount("/srv/models", "/models/store", read_only=True)],
                         run_as_user=10001, run_as_group=10001, supplemental_groups=[10001],
                         run_as_non_root=True, read_only_root=True, no_new_privileges=True,
                         cap_drop=["ALL"], memory_limit=536870912, cpu_limit=0.5, grace_seconds=30)
    args = podman_run_args(spec, name="k8s_ns_crime", cluster="c1", cidfile=Path("/pods/x/id"))
    joined = " ".join(args)
    for expected in ("--network host", "--pull never", "--user 10001:10001", "--group-add 10001",
                     "--read-only --read-only-tmpfs=false", "--security-opt no-new-privileges",
                     "--cap-drop ALL", "--memory 536870912b", "--cpus 0.5", "--hostname crime-v1-abc",
                     "--env A=x=y", "--label io.batcomputer.testenv.cluster=c1",
                     "--mount type=bind,source=/pods/x/volumes/tmp,destination=/tmp --mount",
                     "source=/srv/models,destination=/models/store,ro=true"):
        assert expected in joined, expected
    assert "--entrypoint" not in args and args[-2:] == ["batcomputer-server:0.1.0", "serve"]


def test_command_replaces_the_entrypoint_and_an_unconfined_profile_is_passed_on() -> None:
    spec = ContainerSpec(name="c", image="img", command=["python", "-m", "http.server"], args=None,
                         env={}, seccomp="Unconfined")
    args = podman_run_args(spec, name="n", cluster="c", cidfile=Path("/id"))
    assert args[args.index("--entrypoint") + 1] == json.dumps(["python", "-m", "http.server"])
    assert "seccomp=unconfined" in args and args[-1] == "img" and "--user" not in args


def test_process_runtime_rewrites_paths_under_mounts_longest_first() -> None:
    mounts = [("/models/store", "/srv/models"), ("/models", "/srv/other")]
    assert translate("/models/store/crime/1.0.0/", mounts) == "/srv/models/crime/1.0.0/"
    assert translate("/models/x", mounts) == "/srv/other/x"
    assert translate("/modelsx", mounts) == "/modelsx"
