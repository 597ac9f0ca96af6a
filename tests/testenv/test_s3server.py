"""The local S3 server says plainly when the disk is too full for it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from batcomputer.testenv import s3


def test_a_nearly_full_disk_is_named_before_anything_starts(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage(tmp_path)

    def nearly_full(path: Any) -> Any:
        return real._replace(free=100 * 2**20)

    monkeypatch.setattr(s3.shutil, "disk_usage", nearly_full)
    server = s3.S3Server(tmp_path / "s3", weed=tmp_path / "no-weed-here")
    with pytest.raises(RuntimeError, match=r"only 100 MiB free on the disk of .*s3; SeaweedFS "
                                           r"refuses writes below 256 MiB"):
        server.start()
    assert server.process is None
