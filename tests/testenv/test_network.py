"""Pod address blocks: each local cluster its own, mapped onto loopback."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from batcomputer.testenv.network import Claim, NoFreeBlock, addresses, local_address


def test_pod_ips_map_onto_loopback_and_nothing_else_does() -> None:
    assert local_address("10.200.3.4") == "127.200.3.4"
    with pytest.raises(ValueError):
        local_address("192.168.1.2")


def test_addresses_skip_network_gateway_and_broadcast_like_addresses() -> None:
    first = list(itertools.islice(addresses(201), 300))
    assert first[0] == "10.201.0.2" and "10.201.0.255" not in first and "10.201.1.0" not in first
    assert first[253] == "10.201.1.1"


def test_two_claims_get_different_blocks_and_a_released_block_is_free_again(tmp_path: Path) -> None:
    one, two = Claim(tmp_path, range(200, 202)), Claim(tmp_path, range(200, 202))
    assert {one.acquire(), two.acquire()} == {200, 201}
    with pytest.raises(NoFreeBlock):
        Claim(tmp_path, range(200, 202)).acquire()
    freed = one.block
    one.release()
    assert Claim(tmp_path, range(200, 202)).acquire() == freed
