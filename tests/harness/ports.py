"""Free loopback ports for the processes a test starts (the one copy of this helper in the tests)."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free on 127.0.0.1, all held open together so none repeats."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(span: int = 1) -> int:
    """A port p with p..p+span-1 free right now (a rank's metrics ports are base + local rank)."""
    for _ in range(50):
        (port,) = free_ports(1)
        if port + span > 65535:
            continue
        try:
            for offset in range(1, span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port range")
