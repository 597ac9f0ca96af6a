"""`make demo`, the README's first command, as a newcomer runs it (in a folder of its own:
DEMO_DIR), then `make demo-down`: the whole story runs and says so, and the cluster it
leaves running is stopped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from batcomputer.testenv.cluster import State

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_make_demo_tells_the_whole_story_and_demo_down_stops_it(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    try:
        done = subprocess.run(["make", "--no-print-directory", "demo", f"DEMO_DIR={demo}"],
                              cwd=REPO, capture_output=True, text=True, timeout=1200)
        told = done.stdout + done.stderr
        assert done.returncode == 0, told[-6000:]
        for line in (
            "==> Apply crime 1.0.0",
            "==> MINOR release 1.1.0 (new parameters): rolls crime-v1 in place, no downtime",
            "==> MAJOR release 2.0.0 (adds the `place` input): runs beside 1.x",
            "      -> 422 {\"error\": \"missing input(s): place; required: force, crime, month, place\"}",
            "==> Promote 2.0.0: the stable Service `crime` now routes to v2",
            "==> Roll back: promote 1.1.0 again",
            "==> Done. Everything keeps running so you can look around:",
        ):
            assert line in told, f"{line!r} not in:\n{told[-6000:]}"
        assert "-> 200 {\"not_caught\": " in told
        assert State.load(demo / "cluster") is not None
    finally:
        down = subprocess.run(["make", "--no-print-directory", "demo-down", f"DEMO_DIR={demo}"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert State.load(demo / "cluster") is None
