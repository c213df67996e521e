"""Check the collectives' network interfaces against the ones this pod has, before anything starts.

`spec.networkInterface` sets GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME (an env entry of the same name
wins). A name the pod does not have fails late and obscurely: gloo raises at `init_process_group`
("Unable to find address for: eth1"), NCCL warns "no socket interface found" and the first collective
fails or hangs. The launcher checks both variables first and exits with one line that names the
variable, the missing names and the interfaces the pod has.

The two read their lists differently: gloo opens every comma-separated name exactly, so each must
exist; NCCL matches names by prefix, `=` before the list makes it exact and `^` excludes the names
instead, so it needs one interface that matches (and an exclusion list is not checked).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence

GLOO, NCCL = "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"


def _names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def gloo_missing(value: str, available: Sequence[str]) -> list[str]:
    return [n for n in _names(value) if n not in available]


def nccl_matches(value: str, available: Sequence[str]) -> bool:
    if value.startswith("^"):
        return True  # an exclusion list: NCCL picks among the rest
    exact = value.startswith("=")
    wanted = _names(value.removeprefix("="))
    return any(a == w if exact else a.startswith(w) for a in available for w in wanted)


def problems(env: Mapping[str, str], available: Sequence[str]) -> list[str]:
    """One line per variable whose names this pod cannot satisfy (none when all is well or unset)."""
    have = ", ".join(available) or "none"
    out = []
    if env.get(GLOO) and (missing := gloo_missing(env[GLOO], available)):
        out.append(f"{GLOO}={env[GLOO]}: no interface {', '.join(missing)} in this pod (it has: {have})")
    if env.get(NCCL) and not nccl_matches(env[NCCL], available):
        out.append(f"{NCCL}={env[NCCL]}: matches no interface in this pod (it has: {have})")
    return out


def local_interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def check(env: Mapping[str, str], available: Callable[[], list[str]] = local_interfaces) -> str | None:
    """The error message when a socket-interface variable names what this pod lacks, else None."""
    if not (env.get(GLOO) or env.get(NCCL)):
        return None
    found = problems(env, available())
    if not found:
        return None
    return "; ".join(found) + ". Fix spec.networkInterface (or the job's env entry of that name)."
