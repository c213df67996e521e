"""Status conditions the way Go operators write them.

One condition per type. `lastTransitionTime` changes only when a condition's status flips. The phase
conditions (Pending, Running, Restarting, Succeeded, Failed, Suspended) are exclusive: the one for the
current phase is True and any other that exists turns False; `Created` stays True once set. Conditions
are added when first needed, never pre-filled with False.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

from torchjob_core import constants

CREATED = "Created"
EXCLUSIVE_TYPES = tuple(phase for phase in constants.PHASES if phase != CREATED)
TERMINAL_PHASES = constants.TERMINAL_PHASES

Status = dict[str, Any]
Condition = dict[str, Any]


def timestamp(now: dt.datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes it."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def find(conditions: list[Condition], ctype: str) -> Condition | None:
    return next((c for c in conditions if c.get("type") == ctype), None)


def set_condition(
    conditions: list[Condition],
    ctype: str,
    status: str,
    *,
    reason: str,
    message: str,
    now: dt.datetime,
    generation: int,
) -> list[Condition]:
    """Return a new list with `ctype` set; lastTransitionTime moves only if the status flips."""
    out = copy.deepcopy(conditions)
    cond = find(out, ctype)
    if cond is None:
        out.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": timestamp(now),
                "observedGeneration": generation,
            }
        )
        return out
    if cond.get("status") != status:
        cond["lastTransitionTime"] = timestamp(now)
    cond.update(status=status, reason=reason, message=message, observedGeneration=generation)
    return out


def with_phase(
    status: Mapping[str, Any], phase: str, reason: str, message: str, *, now: dt.datetime, generation: int
) -> Status:
    """A copy of `status` in `phase`, with the phase conditions updated to match."""
    out: Status = copy.deepcopy(dict(status))
    conditions: list[Condition] = list(out.get("conditions") or [])
    if phase == CREATED or find(conditions, CREATED) is None:
        conditions = set_condition(
            conditions, CREATED, "True", reason=reason, message=message, now=now, generation=generation
        )
    for ctype in EXCLUSIVE_TYPES:
        if ctype == phase:
            conditions = set_condition(
                conditions, ctype, "True", reason=reason, message=message, now=now, generation=generation
            )
        else:
            existing = find(conditions, ctype)
            if existing is not None and existing.get("status") == "True":
                conditions = set_condition(
                    conditions,
                    ctype,
                    "False",
                    reason=reason,
                    message=f"Now {phase}: {message}",
                    now=now,
                    generation=generation,
                )
    out.update(phase=phase, reason=reason, message=message, conditions=conditions)
    return out


def is_true(status: Mapping[str, Any], ctype: str) -> bool:
    cond = find(list(status.get("conditions") or []), ctype)
    return cond is not None and cond.get("status") == "True"
