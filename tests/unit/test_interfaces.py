"""The launcher's check of GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME against the pod's interfaces."""

from __future__ import annotations

import pytest
from torchjob_trainer import interfaces

POD = ["lo", "eth0", "net1"]


def check(**env: str) -> str | None:
    return interfaces.check(env, lambda: POD)


def test_unset_or_present_interfaces_pass() -> None:
    assert check() is None
    assert check(GLOO_SOCKET_IFNAME="eth0", NCCL_SOCKET_IFNAME="eth0") is None
    assert check(GLOO_SOCKET_IFNAME="eth0,net1", NCCL_SOCKET_IFNAME="eth0,net1") is None


def test_gloo_needs_every_name_exactly() -> None:
    message = check(GLOO_SOCKET_IFNAME="eth0,eth1")
    assert message is not None
    assert "GLOO_SOCKET_IFNAME=eth0,eth1: no interface eth1 in this pod (it has: lo, eth0, net1)" in message
    assert "spec.networkInterface" in message
    assert check(GLOO_SOCKET_IFNAME="eth") is not None  # no prefix matching in gloo


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("eth", True),  # NCCL matches by prefix
        ("ib", False),
        ("=eth0", True),  # exact
        ("=eth", False),
        ("^docker,lo", True),  # an exclusion list is not checked
        ("ib,net", True),  # any one match is enough
    ],
)
def test_nccl_reads_prefixes_exact_and_exclusions(value: str, ok: bool) -> None:
    message = check(NCCL_SOCKET_IFNAME=value)
    assert (message is None) == ok, message
    if not ok:
        assert f"NCCL_SOCKET_IFNAME={value}: matches no interface in this pod" in str(message)


def test_both_problems_in_one_line() -> None:
    message = str(check(GLOO_SOCKET_IFNAME="ib0", NCCL_SOCKET_IFNAME="ib0"))
    assert message.count("ib0:") == 2 and "\n" not in message


def test_the_pods_real_interfaces_are_read() -> None:
    assert "lo" in interfaces.local_interfaces()
