"""Pod addresses on loopback: each local cluster gets its own block, so two can run at once.

A podlet pod gets an IP ``10.N.x.y`` in ``status.podIP`` (the API server refuses
loopback addresses in EndpointSlices) and its processes listen on ``127.N.x.y``, which
Linux routes to ``lo`` without any set-up. Nothing ever sends traffic to ``10.N.x.y``:
`local_address` maps every pod IP onto loopback first.

``N`` is claimed per podlet with an exclusive ``flock`` on a file in a folder shared by
every cluster of the machine, held for the podlet's life: the kernel drops the lock when
the podlet exits, however it exits, so a crashed cluster never leaks its block.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# Second octets that no other part of the local cluster uses: the Service range is
# 10.96.0.0/16 and kwok's simulated pods take 10.244.0.0/16.
BLOCKS = range(200, 244)
LOCK_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "batcomputer-podnets"


class NoFreeBlock(RuntimeError):
    """Every pod address block is taken by a running local cluster."""


def local_address(pod_ip: str) -> str:
    """The loopback address a podlet pod with this IP listens on (10.N.x.y -> 127.N.x.y)."""
    address = ipaddress.IPv4Address(pod_ip)
    if address not in ipaddress.IPv4Network("10.0.0.0/8"):
        raise ValueError(f"{pod_ip} is not a podlet pod IP (10.0.0.0/8)")
    return "127." + pod_ip.split(".", 1)[1]


def pod_cidr(block: int) -> str:
    return f"10.{block}.0.0/16"


def addresses(block: int) -> Iterator[str]:
    """Pod IPs of a block in order, skipping .0 and .255 of every /24 and 10.N.0.1."""
    network = ipaddress.IPv4Network(pod_cidr(block))
    for address in network.hosts():
        if int(address) & 0xFF not in (0, 255) and int(address) - int(network.network_address) > 1:
            yield str(address)


class Claim:
    """``with Claim() as block:`` holds a free block until the with-block (or process) ends."""

    def __init__(self, lock_dir: Path = LOCK_DIR, blocks: range = BLOCKS) -> None:
        self.lock_dir = lock_dir
        self.blocks = blocks
        self.block: int | None = None
        self._handle: IO[str] | None = None

    def acquire(self, preferred: int | None = None) -> int:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.lock_dir.chmod(0o1777)  # one folder for every user's clusters
        order = list(self.blocks)
        if preferred is not None and preferred in self.blocks:
            order.remove(preferred)
            order.insert(0, preferred)
        for block in order:
            handle = (self.lock_dir / f"{block}.lock").open("a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            self.block, self._handle = block, handle
            return block
        raise NoFreeBlock(f"all {len(self.blocks)} pod address blocks in {self.lock_dir} are in use")

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the lock
            self._handle = None

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
