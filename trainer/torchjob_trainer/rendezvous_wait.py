"""Wait until node 0's rendezvous store accepts connections, before torchrun starts on the other nodes.

Pods start in any order. A node that starts its agent while node 0's pod is still pulling its image or
waiting for a node finds no DNS record (the headless Service publishes an address only once the pod
has one) or nothing listening yet. torch's c10d client (elastic jobs) gives up after its `read_timeout`
(60 s), the static rendezvous (fixed-size jobs) after 900 s, each with exit 1, which the failure policy
rightly calls permanent, and neither says that node 0 is what it waited for. A name that resolves is
not enough either: the store listens only once node 0's agent has started (seconds after its
container), so the wait is a TCP connect to the endpoint itself, as the rendezvous will make.

Only nodes that do not host the store wait: in an elastic job those told so (`is_host=0` in the
rendezvous config, as the operator renders for every node but node 0), in a fixed-size job every node
rank but 0. `--standalone` and single-node runs, which host their own store, never do.
After `TORCHJOB_RENDEZVOUS_WAIT_SECONDS` (default 600, torch's own join timeout) the launcher exits
with `EXIT_RENDEZVOUS_UNREACHABLE` and a termination message naming the endpoint.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("torchjob_trainer.launch")

WAIT_ENV = "TORCHJOB_RENDEZVOUS_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 600.0
CONNECT_TIMEOUT_SECONDS = 2.0
# Between tries: quick at first (node 0 is usually seconds behind), then at most every 5 s.
FIRST_DELAY_SECONDS, MAX_DELAY_SECONDS = 0.25, 5.0
LOG_EVERY_SECONDS = 30.0
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def endpoint_to_wait_for(backend: str, endpoint: str, rdzv_configs: Mapping[str, object]) -> Endpoint | None:
    """The store this node must reach before it starts, or None when it hosts the store or may host it
    (c10d without `is_host`: torch then tries to serve it itself)."""
    if backend == "c10d":
        hosts = str(rdzv_configs.get("is_host", "")).lower() not in FALSE_WORDS
    elif backend == "static":
        hosts = str(rdzv_configs.get("rank", "0")) == "0"  # torchrun's --node-rank
    else:
        return None
    if hosts:
        return None
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        return None  # torch's default port applies; it reports a malformed endpoint itself
    host, number = host.strip("[]"), int(port)
    return Endpoint(host, number) if host and number else None  # port 0: a store picking its own port


def wait_seconds(env: Mapping[str, str]) -> float:
    raw = env.get(WAIT_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_WAIT_SECONDS
    except ValueError:
        log.warning(
            "%s=%r is not a number of seconds; waiting up to %.0f s", WAIT_ENV, raw, DEFAULT_WAIT_SECONDS
        )
        return DEFAULT_WAIT_SECONDS


def try_connect(endpoint: Endpoint) -> str | None:
    """None when the endpoint accepts a TCP connection, else why not (DNS or TCP, in words)."""
    try:
        addresses = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"{endpoint.host} does not resolve yet ({exc.strerror})"
    last = "no address"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(CONNECT_TIMEOUT_SECONDS)
            try:
                sock.connect(address)
            except OSError as exc:
                last = f"{address[0]} port {endpoint.port}: {exc.strerror or exc}"
            else:
                return None
    return f"nothing accepts connections at {last}"


def wait_until_reachable(
    endpoint: Endpoint,
    timeout_s: float,
    *,
    connect: Callable[[Endpoint], str | None] = try_connect,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Try `endpoint` until it connects (None) or `timeout_s` passes (the last reason it did not)."""
    start = clock()
    delay, logged_at = FIRST_DELAY_SECONDS, None
    while (why := connect(endpoint)) is not None:
        waited = clock() - start
        if waited >= timeout_s:
            return why
        if logged_at is None or waited - logged_at >= LOG_EVERY_SECONDS:
            log.info(
                "waiting for the rendezvous store at %s (%.0f s of %.0f s): %s",
                endpoint,
                waited,
                timeout_s,
                why,
            )
            logged_at = waited
        sleep(min(delay, max(timeout_s - waited, 0.0)))
        delay = min(delay * 2, MAX_DELAY_SECONDS)
    if logged_at is not None:
        log.info("the rendezvous store at %s accepts connections after %.1f s", endpoint, clock() - start)
    return None


def unreachable_message(endpoint: Endpoint, timeout_s: float, why: str) -> str:
    return (
        f"the rendezvous store at {endpoint} (node 0) was not reachable within {timeout_s:.0f} s: {why}. "
        "Node 0's pod is the one to look at (pending, pulling its image, or failed)."
    )
