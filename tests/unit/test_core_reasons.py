"""Condition and Event reasons: one declaration each, with the flags that decide an Event's type."""

from __future__ import annotations

from torchjob_core import reasons


def test_every_reason_is_declared_once_and_is_warning_or_quiet_at_most() -> None:
    named = [r for r in reasons.ALL if r.reason]
    assert not [r for r in reasons.ALL if r.warning and r.quiet]
    # One reason string may serve two templates (JobSucceeded), never with different flags.
    flags: dict[str, tuple[bool, bool]] = {}
    for r in named:
        assert flags.setdefault(r.reason, (r.warning, r.quiet)) == (r.warning, r.quiet), r.reason


def test_failures_and_blocked_jobs_are_warnings_and_progress_is_quiet() -> None:
    assert {
        reasons.BACKOFF_LIMIT.reason,
        reasons.GANG_SCHEDULER_MISSING.reason,
        reasons.DEVICE_CLAIMS_MISSING.reason,
        reasons.CHECKPOINTS_IN_EMPTYDIR.reason,
    } <= reasons.WARNING_REASONS
    assert reasons.PODS_PENDING.reason in reasons.QUIET_PENDING_REASONS
    assert reasons.SUCCEEDED.reason not in reasons.WARNING_REASONS
