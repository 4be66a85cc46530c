"""A device its platform (or its own installer) reports broken on the release counts as failed.

Greengrass (component lifecycle BROKEN/ERRORED) and IoT Edge (module ``runtimeStatus``
backoff/failed) say outright that the release does not run on a device, before or without any
health row from it. Among the canary devices the platform reports on the rollout's release,
more than ``MAX_BROKEN_SHARE`` broken fails the phase's gates (one broken device out of a
small canary is enough); the check is added to the phase's gate report, so the rollback
decision and its event carry it like any other failed gate.

Edge agents say the same through their installer (``agent_updates``): a canary device whose
installer reverted or failed the release keeps running the old version, so by version alone
it would wait out its device timeout; ``installer_check`` counts it as failed at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from edgeplat.backends.feedback import BROKEN_STATES
from edgeplat.rollouts.agent_updates import UpdateFact
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
    observed, examples = 0, []
    for t, d, v, st in zip(*cols, strict=True):
        if st is None or v != version or f"{t}/{d}" not in sent:
            continue
        observed += 1
        if st in BROKEN_STATES:
            examples.append(f"{t}/{d} {st}")
    return _broken_share(
        "platform_state", "the platform reports broken", version, observed, examples, max_share
    )


def installer_check(
    updates: Mapping[str, UpdateFact],
    sent: Mapping[str, object],
    version: str,
    *,
    max_share: float = MAX_BROKEN_SHARE,
) -> CheckResult | None:
    """The ``agent_update`` check: canary devices whose installer gave ``version`` up, among the
    canary devices that reported any installer step about it (None before the first report)."""
    observed, examples = 0, []
    for key, fact in updates.items():
        if key not in sent:
            continue
        observed += 1
        if fact.gave_up:
            examples.append(f"{key} {fact.state}" + (f": {fact.reason}" if fact.reason else ""))
    if not observed:
        return None
    return _broken_share("agent_update", "the installer gave up", version, observed, examples, max_share)


def _broken_share(
    name: str, what: str, version: str, observed: int, examples: list[str], max_share: float
) -> CheckResult | None:
    if not observed:
        return None
    broken = len(examples)
    share = broken / observed
    fail = broken > 0 and share > max_share
    return CheckResult(
        name,
        "max",
        max_share,
        Verdict.FAIL if fail else Verdict.PASS,
        f"{broken} of {observed} canary devices {what} on {version}"
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
