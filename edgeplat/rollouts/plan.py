"""Will this rollout be able to decide? Each phase's cohorts sized at launch against its gates.

A gate gives no PASS until both cohorts hold ``min_devices`` devices and ``min_samples``
health samples; a phase whose canary cannot get there before its bake ends stays
inconclusive, and a healthy release stalls or is rolled back for lack of data. ``plan_rollout``
works out, from the target devices the spec selects now (and the share of them online:
``devices.status``, which the reconciliation sets to offline after ``offline_after_s``
without a batch), how
many devices each phase places per stratum (the selection's own rules: ``ceil(p * n)`` per
stratum, or ``min_devices`` split by stratum size), how many of those will report, with
``ASSURANCE`` confidence (binomial quantile: offline devices do not report), and when the
minimum sample is reached at one sample per device per ``sample_seconds``. A phase is
*undecidable* when its assured canary (or, for relative limits before the last phase, its
baseline) is below ``min_devices``, or its samples by the end of the bake are below
``min_samples``; ``PlanError`` then names the numbers and the fix (a ``min_devices`` or a
longer bake for that phase).

The CLI, the UI's launch job and the GitOps sensor launch through
``Controller.launch(..., require_plan=True)``, which refuses such a plan, and
``edgeplat rollout plan SPEC`` prints the plan without launching. A target with no devices
yet is not sized (devices that register later are placed by the same rule).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from scipy.stats import binom, norm

from edgeplat.rollouts.cohorts import BASELINE_MAX, DEFAULT_SAMPLE_SECONDS, target_devices
from edgeplat.rollouts.spec import Gate, RolloutSpec, format_duration

# A plan must reach the gates' minimum sample in this share of launches (online devices vary).
ASSURANCE = 0.99


class PlanError(ValueError):
    """A rollout plan that cannot reach a verdict: every problem with its numbers and fix."""

    def __init__(self, plan: RolloutPlan) -> None:
        self.plan = plan
        lines = "\n".join(f"  {p}" for p in plan.problems)
        super().__init__(
            f"rollout {plan.name!r} cannot reach a gate verdict on its target of {plan.devices} devices "
            f"({plan.online_fraction:.0%} online); launch refused:\n{lines}\n"
            f"(`edgeplat rollout plan SPEC` prints the plan)"
        )


@dataclass
class PhasePlan:
    """One phase: devices placed (cumulative) per stratum, how many will report, and when it can decide."""

    phase: int
    percent: float
    min_devices: int | None
    placed: int
    per_stratum: dict[str, int]
    online_expected: float
    online_assured: int  # canaries reporting in ASSURANCE of launches
    baseline_assured: int | None  # None: no baseline needed (the last phase)
    samples_per_minute: float
    need_devices: int  # the strictest gate's min_devices
    need_samples: int
    bake: timedelta
    min_sample_at: timedelta | None  # after the deploy; None: never (too few devices)
    verdict_by: timedelta | None  # earliest promotion: bake over and minimum sample met
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # may not PASS a healthy release in time

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("bake", "min_sample_at", "verdict_by"):
            d[k] = None if d[k] is None else format_duration(d[k])
        return d


@dataclass
class RolloutPlan:
    """The whole plan: the target, its online share, and every phase's sizing."""

    name: str
    devices: int
    online_fraction: float
    strata: dict[str, int]
    phases: list[PhasePlan]
    settle: timedelta  # wait before a bake starts when some target devices are offline
    spread: dict[str, Spread] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        return [p for ph in self.phases for p in ph.problems]

    @property
    def warnings(self) -> list[str]:
        return [w for ph in self.phases for w in ph.warnings]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "devices": self.devices,
            "online_fraction": self.online_fraction,
            "strata": self.strata,
            "settle": format_duration(self.settle),
            "ok": self.ok,
            "problems": self.problems,
            "warnings": self.warnings,
            "spread": {k: asdict(v) for k, v in self.spread.items()},
            "phases": [p.as_dict() for p in self.phases],
        }


def _strata(spec: RolloutSpec, targets: pa.Table) -> list[str]:
    by = spec.selection.stratify_by
    n = targets.num_rows
    if by is None:
        return ["*"] * n
    if by == "tenant":
        return [str(t) for t in targets.column("tenant_id").to_pylist()]
    tag = by[4:]
    return [str(_tags(t).get(tag, "")) for t in targets.column("tags").to_pylist()]


def _tags(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _online(targets: pa.Table) -> list[bool]:
    if "status" not in targets.column_names:
        return [True] * targets.num_rows
    return [s != "offline" for s in targets.column("status").to_pylist()]


def _assured(n: int, p: float) -> int:
    """At least this many of ``n`` devices, each reporting with chance ``p``, in ASSURANCE of launches."""
    if n <= 0 or p <= 0:
        return 0
    return int(binom.ppf(1 - ASSURANCE, n, min(p, 1.0)))


def _devices_needed(need: int, p: float, limit: int) -> int | None:
    """The fewest placed devices that give ``need`` reporting ones in ASSURANCE of launches."""
    for n in range(max(need, math.floor(need / max(p, 1e-9))), limit + 1):  # none below need / p
        if _assured(n, p) >= need:
            return n
    return None


def _need(gates: list[Gate], last: bool) -> tuple[int, int, bool]:
    relative = any(g.max_ratio is not None or g.max_increase is not None for g in gates) and not last
    return (
        max((g.min_devices for g in gates), default=0),
        max((g.min_samples for g in gates), default=0),
        relative,
    )


@dataclass(frozen=True)
class Spread:
    """How a rate metric varies between devices now: its mean events per device-minute and the
    coefficient of variation of the devices' own rates (Poisson noise taken out)."""

    events_per_minute: float
    cv: float


# A healthy release should PASS a relative rate limit by the end of its bake this often.
PASS_POWER = 0.95


def healthy_pass_chance(gate: Gate, limit: float, devices: int, minutes: float, spread: Spread) -> float:
    """Chance that a release exactly as healthy as the fleet PASSes ``max_ratio: limit`` after
    ``minutes`` on ``devices`` reporting canaries: the log-ratio bound must clear ``log(limit)``,
    its standard error set by the devices' spread and the events counted (normal approximation)."""
    if devices <= 0 or minutes <= 0 or limit <= 1:
        return 0.0
    events = spread.events_per_minute * devices * minutes
    var = spread.cv**2 / devices + (1 / events if events > 0 else math.inf)
    if not math.isfinite(var):
        return 0.0
    return float(norm.cdf(math.log(limit) / math.sqrt(var) - norm.ppf(1 - gate.alpha)))


def _power_warnings(
    gates: list[Gate],
    assured: int,
    frac: float,
    n: int,
    bake: timedelta,
    spread: dict[str, Spread],
    where: str,
) -> list[str]:
    out = []
    minutes = bake.total_seconds() / 60
    for g in gates:
        sp = spread.get(g.metric)
        if g.max_ratio is None or sp is None:
            continue
        chance = healthy_pass_chance(g, g.max_ratio, assured, minutes, sp)
        if chance >= PASS_POWER:
            continue
        need = next(
            (
                d
                for d in range(assured + 1, n + 1)
                if healthy_pass_chance(g, g.max_ratio, d, minutes, sp) >= PASS_POWER
            ),
            None,
        )
        fix = _devices_needed(need, frac, n) if need else None
        out.append(
            f"{where}: a release as healthy as the fleet passes {g.metric} max_ratio {g.max_ratio:g} by the end "
            f"of the bake in ~{chance:.0%} of launches (devices' {g.metric} spread {sp.cv:.0%}); "
            + (f"give the phase min_devices: {fix}" if fix else "widen the target or loosen the limit")
            + " so it is not left inconclusive"
        )
    return out


def plan_rollout(
    spec: RolloutSpec,
    targets: pa.Table,
    *,
    sample_seconds: float = DEFAULT_SAMPLE_SECONDS,
    spread: dict[str, Spread] | None = None,
) -> RolloutPlan:
    """Size every phase of ``spec`` on ``targets`` (``cohorts.target_devices`` rows; see module doc).

    ``spread``: per rate metric, how devices vary now (``fleet_spread``); with it, a phase whose
    relative rate limit a healthy release would not PASS by the end of its bake in
    ``PASS_POWER`` of launches gets a warning (not a refusal: the spread is an estimate)."""
    spread = spread or {}
    labels = _strata(spec, targets)
    online = _online(targets)
    n = len(labels)
    sizes: dict[str, int] = {}
    up: dict[str, int] = {}
    for label, on in zip(labels, online, strict=True):
        sizes[label] = sizes.get(label, 0) + 1
        up[label] = up.get(label, 0) + on
    frac = sum(online) / n if n else 1.0
    settle = spec.device_timeout if frac < 1 else timedelta(0)
    rate = 60.0 / sample_seconds
    phases: list[PhasePlan] = []
    stratified = spec.selection.stratify_by is not None
    for k, ph in enumerate(spec.phases):
        last = ph.percent >= 100
        m = ph.min_devices or 0
        per: dict[str, int] = {}
        for label, size in sorted(sizes.items()):
            if last:
                per[label] = size
            elif stratified:
                share = math.ceil(m * size / n - 1e-9) if n else 0
                per[label] = min(size, max(math.ceil(ph.percent * size / 100 - 1e-9), share))
            else:  # hash thresholds: p% of the target on average, at least min_devices
                per[label] = min(size, max(round(ph.percent * size / 100), m))
        placed = sum(per.values())
        expected = sum(per[s] * up[s] / sizes[s] for s in per) if n else 0.0
        if last or stratified or placed == m:
            assured = _assured(placed, frac)
        else:  # unstratified placement is itself a binomial draw of the target
            assured = _assured(n, frac * ph.percent / 100)
        gates = spec.gates_for(k)
        need_dev, need_samp, relative = _need(gates, last)
        base_left = min(n - placed, BASELINE_MAX)
        base_assured = _assured(base_left, frac) if relative else None
        per_min = assured * rate
        if gates and per_min > 0 and assured >= need_dev:
            at = timedelta(minutes=math.ceil(need_samp / per_min))
        else:
            at = None if gates else timedelta(0)
        verdict_by = None if at is None else max(at, settle + ph.bake)
        problems: list[str] = []
        if gates and n:
            where = f"phase {k} ({ph.percent:g}%{f', min_devices {m}' if m else ''})"
            if assured < need_dev:
                fix = _devices_needed(need_dev, frac, n)
                if fix is None or (relative and n - fix < need_dev):
                    how = (
                        "the target is too small for these gates: widen the target or lower the gates' "
                        "min_devices"
                    )
                else:
                    how = f"give the phase min_devices: {fix} (or a percent of at least {100 * fix / n:.2g})"
                problems.append(
                    f"{where}: places {placed} devices, {assured} sure to report ({frac:.0%} online) < "
                    f"the gates' min_devices {need_dev}; {how}"
                )
            elif per_min * ph.bake.total_seconds() / 60 < need_samp:
                bake_needed = timedelta(minutes=math.ceil(need_samp / per_min))
                more = _devices_needed(math.ceil(need_samp / (rate * ph.bake.total_seconds() / 60)), frac, n)
                problems.append(
                    f"{where}: {assured} reporting devices give {per_min * ph.bake.total_seconds() / 60:.0f} "
                    f"samples in its {format_duration(ph.bake)} bake < the gates' min_samples {need_samp}; "
                    f"bake at least {format_duration(bake_needed)}"
                    + (f" or give the phase min_devices: {more}" if more else "")
                )
            if base_assured is not None and base_assured < need_dev:
                problems.append(
                    f"{where}: leaves {base_left} baseline devices, {base_assured} sure to report < the gates' "
                    f"min_devices {need_dev} for relative limits; lower this phase's percent or min_devices"
                )
        warnings = (
            _power_warnings(gates, assured, frac, n, ph.bake, spread, where)
            if gates and n and not last and not problems
            else []
        )
        phases.append(
            PhasePlan(
                k,
                ph.percent,
                ph.min_devices,
                placed,
                per,
                round(expected, 1),
                assured,
                base_assured,
                per_min,
                need_dev,
                need_samp,
                ph.bake,
                at,
                verdict_by,
                problems,
                warnings,
            )
        )
    return RolloutPlan(spec.name, n, frac, dict(sorted(sizes.items())), phases, settle, spread)


def plan_on_lake(
    con: duckdb.DuckDBPyConnection, spec: RolloutSpec, *, sample_seconds: float = DEFAULT_SAMPLE_SECONDS
) -> RolloutPlan:
    """``plan_rollout`` on the target devices the lakehouse holds now, and their spread over the
    last hour of health."""
    targets = target_devices(con, spec)
    return plan_rollout(
        spec, targets, sample_seconds=sample_seconds, spread=fleet_spread(con, spec.target.tenants, targets)
    )


def fleet_spread(
    con: duckdb.DuckDBPyConnection,
    tenants: list[str],
    targets: pa.Table,
    window: timedelta = timedelta(hours=1),
) -> dict[str, Spread]:
    """``Spread`` of error_rate (errors per request) over the target devices' last ``window`` of health
    (empty when there is none)."""
    rows = con.execute(
        """WITH h AS (SELECT tenant_id, device_id, ts, errors, requests FROM health
                      WHERE tenant_id IN (SELECT unnest(?::VARCHAR[])))
           SELECT tenant_id, device_id, sum(errors), sum(requests), count(*) FROM h
           WHERE ts >= (SELECT max(ts) FROM h) - ?::INTERVAL GROUP BY ALL""",
        [list(tenants), f"{int(window.total_seconds())} seconds"],
    ).fetchall()
    keys = set(
        zip(targets.column("tenant_id").to_pylist(), targets.column("device_id").to_pylist(), strict=True)
    )
    x, e, minutes = [], [], 0.0
    for t, d, errors, requests, count in rows:
        if (t, d) in keys and requests:
            x.append(float(errors or 0))
            e.append(float(requests))
            minutes += count * 1.0
    if len(x) < 5 or sum(x) <= 0:
        return {}
    xs, es = np.asarray(x), np.asarray(e)
    mean = xs.sum() / es.sum()
    rates = xs / es
    # the devices' own spread: the variance of their rates less what Poisson counting adds
    var = max(0.0, float(np.var(rates, ddof=1)) - float(np.mean(mean / es)))
    return {"error_rate": Spread(float(xs.sum() / minutes), math.sqrt(var) / mean)}


def require_decidable(plan: RolloutPlan) -> RolloutPlan:
    """``plan`` itself, or ``PlanError`` when a phase cannot reach a verdict."""
    if not plan.ok:
        raise PlanError(plan)
    return plan


def plan_rows(plan: RolloutPlan) -> tuple[list[str], list[tuple]]:
    """The plan as table rows (one per phase and stratum) for the CLI: devices placed, devices sure
    to report (99% of launches), the gates' min_devices/min_samples, when the minimum sample is
    reached and the earliest verdict (after the phase's deploy), and ok or REFUSED."""
    header = [
        "phase",
        "%",
        "min_dev",
        "stratum",
        "devices",
        "report",
        "needs",
        "sample at",
        "verdict",
        "plan",
    ]
    rows = []
    for ph in plan.phases:
        first = True
        for label, count in ph.per_stratum.items():
            rows.append(
                (
                    ph.phase if first else "",
                    f"{ph.percent:g}" if first else "",
                    (ph.min_devices or "-") if first else "",
                    label,
                    count,
                    ph.online_assured if first else "",
                    f"{ph.need_devices}/{ph.need_samples}" if first else "",
                    ("never" if ph.min_sample_at is None else f"+{format_duration(ph.min_sample_at)}")
                    if first
                    else "",
                    ("never" if ph.verdict_by is None else f"+{format_duration(ph.verdict_by)}")
                    if first
                    else "",
                    ("REFUSED" if ph.problems else "ok") if first else "",
                )
            )
            first = False
    return header, rows
