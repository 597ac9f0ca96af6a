"""The standby's health endpoint (the Lease itself is tested on the real control plane:
tests/e2e/test_leader.py)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from batcomputer.operator import leader


def test_a_standby_answers_its_health_probe_until_it_leads() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/healthz"
    with leader.StandbyHealth(url):
        with urllib.request.urlopen(url, timeout=2) as reply:
            assert reply.status == 200 and json.loads(reply.read()) == {"standby": True}
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=2)
        assert missing.value.code == 404
    with pytest.raises(urllib.error.URLError):  # gone: kopf binds the port next
        urllib.request.urlopen(url, timeout=2)


def test_identity_is_the_pod_name_where_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "batcomputer-operator-7d9f-x2")
    assert leader.identity() == "batcomputer-operator-7d9f-x2"
    monkeypatch.delenv("POD_NAME")
    assert leader.identity().startswith(socket.gethostname())
