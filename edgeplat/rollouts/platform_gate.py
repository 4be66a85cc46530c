"""A device its platform reports broken on the new release counts as failed for the gates.

Greengrass (component lifecycle BROKEN/ERRORED) and IoT Edge (module ``runtimeStatus``
backoff/failed) say outright that the release does not run on a device, before or without any
health row from it. Among the canary devices the platform reports on the rollout's release,
more than ``MAX_BROKEN_SHARE`` broken fails the phase's gates (one broken device out of a
small canary is enough); the check is added to the phase's gate report, so the rollback
decision and its event carry it like any other failed gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from edgeplat.backends.feedback import BROKEN_STATES
from edgeplat.rollouts.gates import CheckResult, GateReport, Verdict

MAX_BROKEN_SHARE = 0.02


def platform_check(
    targets: object, sent: Mapping[str, object], version: str, *, max_share: float = MAX_BROKEN_SHARE
) -> CheckResult | None:
    """The ``platform_state`` check over the canary (``sent``: tenant/device keys), or None when no
    platform reports on any canary device yet."""
    cols = [
        targets.column(c).to_pylist()
        for c in ("tenant_id", "device_id", "platform_version", "platform_state")
    ]
    observed = broken = 0
    examples = []
    for t, d, v, st in zip(*cols, strict=True):
        if st is None or v != version or f"{t}/{d}" not in sent:
            continue
        observed += 1
        if st in BROKEN_STATES:
            broken += 1
            examples.append(f"{t}/{d} {st}")
    if not observed:
        return None
    share = broken / observed
    fail = broken > 0 and share > max_share
    return CheckResult(
        "platform_state",
        "max",
        max_share,
        Verdict.FAIL if fail else Verdict.PASS,
        f"{broken} of {observed} canary devices the platform reports broken on {version}"
        + (f" ({', '.join(examples[:5])})" if examples else ""),
        {"broken": float(broken), "observed": float(observed), "share": share},
    )


def with_platform_check(
    report: GateReport | None, check: CheckResult | None, since: datetime | None
) -> GateReport | None:
    """``report`` with the platform check added (a failed check fails the report; a passing one
    never turns an inconclusive report into a pass, nor creates a report by itself)."""
    if check is None:
        return report
    if report is None:
        return (
            GateReport(Verdict.FAIL, (check,), since.isoformat() if since else None)
            if check.verdict == Verdict.FAIL
            else None
        )
    verdict = Verdict.FAIL if check.verdict == Verdict.FAIL else report.verdict
    return GateReport(verdict, (*report.checks, check), report.since)
