"""Each image installs one extra (Dockerfile.server: server, Dockerfile.operator: operator):
those sets of dependencies must be enough for their command, and the CLI must not import
what a command does not need."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest
import requests
from testkit import wait_for

from batcomputer.testenv.cluster import free_port

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"pandas", "sklearn", "scipy", "numpy", "flask", "gunicorn", "kopf", "kubernetes",
         "cryptography", "prometheus_client"}


def test_the_cli_imports_nothing_heavy_until_a_command_runs() -> None:
    code = ("import sys, batcomputer.cli; batcomputer.cli.build_parser(); "
            f"print(sorted(set({sorted(HEAVY)!r}) & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=REPO / "tests")
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(REPO)], check=True, cwd=out)
    return next(out.glob("batcomputer-*.whl"))


def install(tmp: Path, wheel: Path, extra: str) -> Path:
    venv.EnvBuilder(with_pip=True).create(tmp / extra)
    bin_dir = tmp / extra / "bin"
    subprocess.run([str(bin_dir / "pip"), "install", "-q", f"{wheel}[{extra}]"], check=True)
    return bin_dir


def test_the_operator_extra_runs_the_operator_and_nothing_else(tmp_path: Path, wheel: Path) -> None:
    bin_dir = install(tmp_path, wheel, "operator")
    done = subprocess.run([str(bin_dir / "batcomputer"), "operator", "--help"],
                          capture_output=True, text=True, check=True)
    assert "Watch BatModels" in done.stdout
    # (not from the repository root, where the folder `operator` would shadow the stdlib)
    check = subprocess.run([str(bin_dir / "python"), "-c", "import kopf, kubernetes, sklearn"],
                           capture_output=True, text=True, check=False, cwd=tmp_path)
    assert "No module named 'sklearn'" in check.stderr
    refused = subprocess.run([str(bin_dir / "batcomputer"), "serve", "--artifact", "x"],
                             capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert "needs the 'server' extra: pip install 'batcomputer[server]'" in refused.stderr


def test_the_server_extra_serves_a_model(tmp_path: Path, wheel: Path, registry: Path) -> None:
    bin_dir = install(tmp_path, wheel, "server")
    port = free_port()
    proc = subprocess.Popen([str(bin_dir / "batcomputer"), "serve", "--artifact",
                             str(registry / "crime" / "1.0.0"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(url + "/readyz", timeout=1).status_code == 200,
                 timeout=60, what="server ready")
        got = requests.post(url + "/api/predict", timeout=5,
                            json={"force": "Kent Police", "crime": "Drugs", "month": 6})
        assert got.status_code == 200 and set(got.json()) == {"not_caught", "caught"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
