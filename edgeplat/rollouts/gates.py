"""Health gates: is the canary cohort worse than its limits, judged with honest statistics?

The canary cohort (devices already on the release) is compared with a baseline cohort
(comparable devices not yet updated, same tenant/platform mix, same time window, chosen by
the caller) per gate metric, from per-device aggregates (``CohortSample`` rows, an Arrow
table or a dict of columns). Every limit of a gate becomes one *check* with a one-sided
confidence bound at level ``1 - alpha/m`` (Bonferroni over the ``m`` checks of the report,
so the chance that a healthy release fails *any* check stays below ``alpha``):

* FAIL when the data reject "canary is within the limit" (the bound clears the limit),
* PASS when the opposite bound is within the limit,
* INCONCLUSIVE otherwise, and whenever a cohort has fewer than ``min_devices`` devices or
  ``min_samples`` health samples.

Which test, and why:

* Rates of events over an exposure — ``error_rate`` (errors / requests), ``crash_count``
  (crashes per device-hour), ``heartbeat`` (missed / expected heartbeats) — are counts, so a
  t-test on per-sample rates would waste the information in the denominators. For
  ``max_ratio`` we use the conditional binomial test for a Poisson rate ratio: given the
  total ``N = x_c + x_b`` events, ``x_c ~ Binomial(N, pi)`` with
  ``pi0 = r e_c / (r e_c + e_b)`` at the boundary ``rate_c = r * rate_b``; it is exact, needs
  no normal approximation for small canary counts, and its Clopper-Pearson bounds invert to
  bounds on the ratio. Absolute ``max`` uses the exact binomial (proportions) or Poisson
  (crash rate) tail; ``max_increase`` uses an Agresti-Caffo adjusted normal interval on the
  difference. Real fleets are overdispersed (devices differ), which makes pooled-count tests
  fire far too often on healthy releases; so counts are divided by a quasi-Poisson dispersion
  ``phi >= 1`` estimated from the Pearson residuals of every device around its cohort's
  rate (the standard quasi-likelihood correction), which keeps the false-fail rate at alpha.
* Continuous metrics (``cpu_pct``, ``mem_mb``, ``queue_depth``; and ``error_rate`` when no
  request counts are available) use per-device means as the unit (samples of one device
  are not independent) and a Welch t-test / t bound on ``mean_c - r mean_b``,
  ``mean_c - mean_b - d`` or ``mean_c - max``.

The distribution functions behind these tests are in ``stats``.

Repeated looks: the rollout machine looks at every tick and acts on the first FAIL, so a
fixed-sample test repeated at every look fails a healthy release far more often than
``alpha`` over a bake. FAIL is therefore *sequential*: each check turns its estimate into an
excess over the limit with a variance (log rate ratio, log rate over ``max``, difference,
mean; the variance inflated by the same dispersion ``phi``) and FAILs only when Robbins'
normal-mixture likelihood ratio (``stats.msprt_log_lr``) reaches ``1/(2 alpha/m)``: an
always-valid test whose chance of ever crossing on a healthy release, however often it
looks, stays below ``alpha/m``. It needs no minimum sample: overwhelming evidence (a 3x error
rate) crosses within minutes, before ``min_devices``/``min_samples``; only a floor of
``EARLY_DEVICES`` devices per cohort guards the normal approximation. PASS, which promotes
once the bake has ended, keeps the fixed-sample bound and needs the full minimum sample; its
bound is at level ``1 - alpha`` per check (not ``alpha/m``): promoting a bad release needs the
bound of the limit it violates to pass wrongly, which has chance ``alpha`` on its own.
``sequential=False`` gives the previous fixed-sample FAIL at every look (the bench's baseline).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa

from edgeplat.rollouts.spec import RATE_METRICS, Gate, RolloutSpec
from edgeplat.rollouts.stats import (
    binom_sf,
    binom_upper,
    msprt_log_lr,
    norm_ppf,
    poisson_sf,
    poisson_upper,
    t_ppf,
    t_sf,
)

# The sequential FAIL needs this many devices per cohort (fewer when min_devices is lower):
# below it a per-device normal approximation is not trustworthy, whatever the counts say.
EARLY_DEVICES = 5
# Mixing scale of the sequential test, as an excess over the limit: a doubling of the rate
# beyond it for log-scale checks (ratio, absolute rate); the limit itself for differences.
LOG_TAU = math.log(2.0)

# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class CohortSample:
    """Per-device aggregates over the evaluation window (one row per device).

    ``cohort`` is ``"canary"`` or ``"baseline"``; ``samples`` is the number of health rows.
    Rates: ``errors``/``requests``, ``crash_count`` per ``hours`` (device-hours observed),
    missed heartbeats ``expected_heartbeats - heartbeats``. Continuous metrics are the
    device's mean over the window. ``error_rate`` (mean of per-sample rates) is only used when
    no request counts are available.
    """

    device_id: str
    cohort: str
    samples: int
    hours: float = 0.0
    requests: int = 0
    errors: int = 0
    crash_count: int = 0
    heartbeats: int = 0
    expected_heartbeats: int = 0
    cpu_pct: float | None = None
    mem_mb: float | None = None
    queue_depth: float | None = None
    error_rate: float | None = None


COLUMNS = tuple(f.name for f in fields(CohortSample))
_NUMERIC = COLUMNS[2:]


def _columns(samples: Any) -> dict[str, np.ndarray]:
    """Columnar numpy view of list[CohortSample] / Arrow table / dict of arrays."""
    if isinstance(samples, pa.Table):
        cols = {
            n: samples.column(n).combine_chunks().to_numpy(zero_copy_only=False) for n in samples.column_names
        }
    elif isinstance(samples, Mapping):
        cols = {k: np.asarray(v) for k, v in samples.items()}
    else:
        rows = list(samples)
        cols = {n: np.asarray([getattr(r, n) for r in rows], dtype=object) for n in COLUMNS}
    for need in ("cohort", "samples"):
        if need not in cols:
            raise ValueError(f"cohort samples need a {need!r} column; got {sorted(cols)}")
    n = len(cols["cohort"])
    out = {"cohort": np.asarray(cols["cohort"]).astype(str)}
    for name in _NUMERIC:
        col = cols.get(name)
        if col is None:
            out[name] = np.zeros(n)
        elif col.dtype.kind in "iufb":
            out[name] = col.astype(float)
        else:  # object columns may hold None for "not reported"
            out[name] = np.asarray([np.nan if v is None else v for v in col], dtype=float)
    return out


# ---------------------------------------------------------------- results


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"  # a relative limit with no baseline cohort (e.g. the 100% phase)


def overall_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """The verdict of several checks: FAIL > INCONCLUSIVE > PASS (skipped checks do not count)."""
    vs = set(verdicts)
    return (
        Verdict.FAIL
        if Verdict.FAIL in vs
        else Verdict.INCONCLUSIVE
        if Verdict.INCONCLUSIVE in vs
        else Verdict.PASS
    )


@dataclass(frozen=True)
class CheckResult:
    """One limit of one gate: its verdict, why, and the numbers behind it (for the event log)."""

    metric: str
    limit: str  # "max" | "max_ratio" | "max_increase"
    threshold: float
    verdict: Verdict
    reason: str
    inputs: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GateReport:
    """All checks of a phase's gates and the overall verdict: FAIL > INCONCLUSIVE > PASS."""

    verdict: Verdict
    checks: tuple[CheckResult, ...]
    since: str | None = None  # ISO start of the window the aggregates cover

    @property
    def reasons(self) -> list[str]:
        return [f"{c.metric} {c.limit}: {c.reason}" for c in self.checks if c.verdict != Verdict.PASS]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["verdict"] = str(self.verdict)
        d["checks"] = [{**asdict(c), "verdict": str(c.verdict)} for c in self.checks]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateReport:
        checks = tuple(CheckResult(**{**c, "verdict": Verdict(c["verdict"])}) for c in d.get("checks", ()))
        return cls(Verdict(d["verdict"]), checks, d.get("since"))


# ---------------------------------------------------------------- checks


@dataclass
class _Counts:
    """Events over exposure for one cohort: per device and pooled."""

    x: np.ndarray
    e: np.ndarray

    @property
    def total(self) -> tuple[float, float]:
        return float(self.x.sum()), float(self.e.sum())


def _counts(cols: dict[str, np.ndarray], mask: np.ndarray, metric: str) -> _Counts | None:
    if metric == "error_rate":
        x, e = cols["errors"][mask], cols["requests"][mask]
    elif metric == "crash_count":
        x, e = cols["crash_count"][mask], cols["hours"][mask]
    else:  # heartbeat: missed heartbeats out of expected
        e = cols["expected_heartbeats"][mask]
        x = np.clip(e - cols["heartbeats"][mask], 0, None)
    keep = np.isfinite(x) & np.isfinite(e) & (e > 0)
    if not keep.any():
        return None
    return _Counts(x[keep], e[keep])


def _dispersion(cohorts: Sequence[_Counts], proportion: bool) -> float:
    """Quasi-Poisson/binomial dispersion from Pearson residuals, floored at 1."""
    chi2, n, k = 0.0, 0, 0
    for c in cohorts:
        xs, es = c.total
        rate = xs / es
        if rate <= 0 or (proportion and rate >= 1):
            continue
        var = c.e * rate * ((1 - rate) if proportion else 1)
        chi2 += float(np.sum((c.x - c.e * rate) ** 2 / var))
        n += len(c.x)
        k += 1
    if n - k < 2:
        return 1.0
    return max(1.0, chi2 / (n - k))


@dataclass(frozen=True)
class _Look:
    """How one look may conclude: sequential FAIL or not, and whether the minimum sample is met."""

    sequential: bool = True
    sized: bool = True  # min_devices/min_samples met: PASS (and fixed-sample FAIL) allowed
    pass_alpha: float = 0.01  # level of the bound a PASS needs (see evaluate_gates)


def _verdict(fail: bool, ok: bool, look: _Look, seq_fail: bool | None = None) -> Verdict:
    if look.sequential and seq_fail is not None:
        fail = seq_fail
    elif not look.sized:
        fail = False
    return Verdict.FAIL if fail else Verdict.PASS if ok and look.sized else Verdict.INCONCLUSIVE


def _sequential(excess: float, var: float, tau: float, a: float, inputs: dict[str, float]) -> bool:
    """The always-valid one-sided FAIL (see the module doc); records its numbers in ``inputs``."""
    llr = msprt_log_lr(excess, var, tau * tau) if math.isfinite(var) else 0.0
    p_av = 1.0 if excess <= 0 else min(1.0, 0.5 * math.exp(-llr)) if math.isfinite(llr) else 0.0
    inputs.update(excess_over_limit=excess, sequential_log_lr=llr, always_valid_p=p_av)
    return excess > 0 and p_av < a


def _rate_check(
    gate: Gate, limit: str, thr: float, can: _Counts, base: _Counts | None, a: float, look: _Look
) -> CheckResult:
    metric = gate.metric
    proportion = metric != "crash_count"
    phi = _dispersion([c for c in (can, base) if c is not None], proportion)
    xc, ec = can.total
    inputs: dict[str, float] = {
        "canary_events": xc,
        "canary_exposure": ec,
        "canary_rate": xc / ec,
        "dispersion": phi,
        "alpha": a,
    }
    if base is not None:
        xb, eb = base.total
        inputs.update(baseline_events=xb, baseline_exposure=eb, baseline_rate=xb / eb)
    if limit == "max":
        # Dividing counts (and exposure) by phi keeps the rate and inflates the variance by phi.
        if proportion:
            p_fail = binom_sf(xc / phi, ec / phi, thr)
            upper = binom_upper(xc / phi, ec / phi, look.pass_alpha)
        else:
            p_fail = poisson_sf(xc / phi, thr * ec / phi)
            upper = poisson_upper(xc / phi, look.pass_alpha) * phi / ec
        inputs.update(p_value=p_fail, upper=upper)
        # Log rate over the limit; the variance is the one at the limit (a score test), so a
        # canary far above it is not judged on its own, smaller, relative noise.
        excess = math.log((xc + 0.5) / ec) - math.log(thr) if thr > 0 else math.inf
        seq = _sequential(excess, phi / max(thr * ec, 0.5), LOG_TAU, a, inputs) if thr > 0 else xc > 0
        v = _verdict(p_fail < a, upper <= thr, look, seq)
        return CheckResult(
            metric,
            limit,
            thr,
            v,
            f"canary {xc / ec:.4g} vs max {thr:g} (upper bound {upper:.4g}, p={p_fail:.2g}, "
            f"always-valid p={inputs.get('always_valid_p', 0.0):.2g})",
            inputs,
        )
    assert base is not None
    xb, eb = base.total
    if limit == "max_ratio":
        n = (xc + xb) / phi
        k = xc / phi
        pi0 = thr * ec / (thr * ec + eb)
        p_fail = binom_sf(k, n, pi0) if n > 0 else 1.0
        pi_u = binom_upper(k, n, look.pass_alpha) if n > 0 else 1.0
        ratio_u = math.inf if pi_u >= 1 else (pi_u / (1 - pi_u)) * (eb / ec)
        ratio = (xc / ec) / (xb / eb) if xb > 0 else math.inf if xc > 0 else 1.0
        inputs.update(p_value=p_fail, ratio=ratio, ratio_upper=ratio_u)
        excess = math.log((xc + 0.5) / ec) - math.log((xb + 0.5) / eb) - math.log(thr)
        seq = _sequential(excess, phi * (1 / (xc + 0.5) + 1 / (xb + 0.5)), LOG_TAU, a, inputs)
        v = _verdict(p_fail < a, ratio_u <= thr, look, seq)
        return CheckResult(
            metric,
            limit,
            thr,
            v,
            f"ratio {ratio:.3g} vs max_ratio {thr:g} (upper bound {ratio_u:.3g}, p={p_fail:.2g}, "
            f"always-valid p={inputs['always_valid_p']:.2g})",
            inputs,
        )
    # max_increase: Agresti-Caffo style adjusted rates, normal bound on the difference.
    if proportion:
        pc, pb = (xc + 1) / (ec + 2), (xb + 1) / (eb + 2)
        se = math.sqrt(phi * (pc * (1 - pc) / (ec + 2) + pb * (1 - pb) / (eb + 2)))
    else:
        pc, pb = (xc + 0.5) / ec, (xb + 0.5) / eb
        se = math.sqrt(phi * (pc / ec + pb / eb))
    diff = pc - pb
    lower, upper = diff - norm_ppf(1 - a) * se, diff + norm_ppf(1 - look.pass_alpha) * se
    inputs.update(difference=diff, lower=lower, upper=upper)
    seq = _sequential(diff - thr, se * se, max(thr, pb, 1e-6), a, inputs)
    v = _verdict(lower > thr, upper <= thr, look, seq)
    return CheckResult(
        metric,
        limit,
        thr,
        v,
        f"increase {diff:.4g} vs max_increase {thr:g} (bounds {lower:.4g}..{upper:.4g})",
        inputs,
    )


def _mean_check(
    gate: Gate, limit: str, thr: float, can: np.ndarray, base: np.ndarray | None, a: float, look: _Look
) -> CheckResult:
    metric = gate.metric
    nc, mc = len(can), float(can.mean())
    vc = float(can.var(ddof=1)) / nc if nc > 1 else math.nan
    inputs: dict[str, float] = {"canary_devices": nc, "canary_mean": mc, "alpha": a}
    if limit == "max":
        d, var, df = mc - thr, vc, nc - 1
        tau = max(abs(thr), 1e-6)
    else:
        assert base is not None
        nb, mb = len(base), float(base.mean())
        vb = float(base.var(ddof=1)) / nb if nb > 1 else math.nan
        r = thr if limit == "max_ratio" else 1.0
        d = mc - r * mb - (thr if limit == "max_increase" else 0.0)
        vb *= r * r
        var = vc + vb
        df = var**2 / ((vc**2 / (nc - 1) if nc > 1 else 0) + (vb**2 / (nb - 1) if nb > 1 else 0) or math.inf)
        inputs.update(baseline_devices=nb, baseline_mean=mb)
        tau = max(abs(r * mb) if limit == "max_ratio" else abs(thr), 1e-6)
    if math.isnan(var) or df < 1:
        return CheckResult(
            metric,
            limit,
            thr,
            Verdict.INCONCLUSIVE,
            "need at least 2 devices per cohort for a variance",
            inputs,
        )
    if var == 0:
        v = _verdict(d > 0, d <= 0, look, d > 0)
        inputs.update(excess=d)
        return CheckResult(metric, limit, thr, v, f"excess over the limit {d:.4g} (no variance)", inputs)
    se = math.sqrt(var)
    tq = t_ppf(1 - look.pass_alpha, df)
    p_fail = t_sf(d / se, df)
    inputs.update(excess=d, se=se, df=df, p_value=p_fail, upper=d + tq * se)
    seq = _sequential(d, var, tau, a, inputs)
    v = _verdict(p_fail < a, d + tq * se <= 0, look, seq)
    return CheckResult(
        metric,
        limit,
        thr,
        v,
        f"mean excess over the {limit} limit {d:.4g} ± {tq * se:.3g} (p={p_fail:.2g})",
        inputs,
    )


def _cohort_size(cols: dict[str, np.ndarray], mask: np.ndarray) -> tuple[int, int]:
    s = cols["samples"][mask]
    return int(np.sum(s > 0)), int(np.nansum(s))


def evaluate_gates(
    gates: Sequence[Gate],
    samples: Any,
    *,
    baseline_required: bool = True,
    since: str | None = None,
    sequential: bool = True,
) -> GateReport:
    """The verdict of ``gates`` on per-device aggregates of both cohorts.

    ``baseline_required=False`` (the 100% phase, where no device is left on the old
    release) skips relative limits instead of calling them inconclusive. ``sequential=False``:
    the fixed-sample FAIL of earlier versions (not valid under repeated looks; kept as a baseline).
    """
    cols = _columns(samples)
    is_can = cols["cohort"] == "canary"
    is_base = cols["cohort"] == "baseline"
    unknown = set() if (is_can | is_base).all() else set(np.unique(cols["cohort"])) - {"canary", "baseline"}
    if unknown:
        raise ValueError(f"cohort must be 'canary' or 'baseline'; got {sorted(unknown)}")
    can_dev, can_samp = _cohort_size(cols, is_can)
    base_dev, base_samp = _cohort_size(cols, is_base)
    plan = [
        (g, lim, getattr(g, lim))
        for g in gates
        for lim in ("max", "max_ratio", "max_increase")
        if getattr(g, lim) is not None
    ]
    relative_skipped = not baseline_required and base_dev == 0
    m = sum(1 for _, lim, _ in plan if not (relative_skipped and lim != "max")) or 1
    checks = []
    for gate, lim, thr in plan:
        a = gate.alpha / m
        sizes = {
            "canary_devices": can_dev,
            "canary_samples": can_samp,
            "baseline_devices": base_dev,
            "baseline_samples": base_samp,
        }
        relative = lim != "max"
        if relative and relative_skipped:
            checks.append(
                CheckResult(
                    gate.metric,
                    lim,
                    thr,
                    Verdict.SKIPPED,
                    "no baseline cohort (every device is updated)",
                    sizes,
                )
            )
            continue
        short = _shortfall(gate, can_dev, can_samp, base_dev, base_samp, relative)
        early = min(EARLY_DEVICES, gate.min_devices)
        can_look = can_dev >= early and (not relative or base_dev >= early)
        if short and not (sequential and can_look):
            checks.append(CheckResult(gate.metric, lim, thr, Verdict.INCONCLUSIVE, "; ".join(short), sizes))
            continue
        # A false FAIL on any check rolls back, so FAIL splits alpha over the m checks; a PASS
        # is wrong only if a violated limit's own bound passes, so each bound takes alpha.
        look = _Look(sequential=sequential, sized=not short, pass_alpha=gate.alpha if sequential else a)
        res = _check(gate, lim, thr, cols, is_can, is_base if relative else None, a, look)
        if short and res.verdict == Verdict.INCONCLUSIVE:
            res = CheckResult(res.metric, res.limit, res.threshold, res.verdict, "; ".join(short), res.inputs)
        checks.append(res)
    return GateReport(overall_verdict(c.verdict for c in checks), tuple(checks), since)


def _shortfall(
    gate: Gate, can_dev: int, can_samp: int, base_dev: int, base_samp: int, relative: bool
) -> list[str]:
    """Why the cohorts are below the gate's minimum sample (empty: they are not)."""
    short = [f"canary has {can_dev} devices < min_devices {gate.min_devices}"] * (can_dev < gate.min_devices)
    short += [f"canary has {can_samp} samples < min_samples {gate.min_samples}"] * (
        can_samp < gate.min_samples
    )
    if relative:
        short += [f"baseline has {base_dev} devices < min_devices {gate.min_devices}"] * (
            base_dev < gate.min_devices
        )
        short += [f"baseline has {base_samp} samples < min_samples {gate.min_samples}"] * (
            base_samp < gate.min_samples
        )
    return short


def evaluate_phase(
    spec: RolloutSpec, phase: int, samples: Any, since: datetime, *, sequential: bool = True
) -> GateReport | None:
    """The report of ``phase``'s gates on cohort aggregates over the window from ``since`` (None:
    the phase has no gates). The last phase leaves no baseline, so its relative limits are skipped."""
    gates = spec.gates_for(phase)
    if not gates:
        return None
    last = spec.phases[phase].percent >= 100
    return evaluate_gates(
        gates, samples, baseline_required=not last, since=since.isoformat(), sequential=sequential
    )


def _check(
    gate: Gate,
    lim: str,
    thr: float,
    cols: dict[str, np.ndarray],
    is_can: np.ndarray,
    is_base: np.ndarray | None,
    a: float,
    look: _Look,
) -> CheckResult:
    metric = gate.metric
    # error_rate is judged as a count only when request counts were reported.
    use_counts = metric in RATE_METRICS and (
        metric != "error_rate" or np.nansum(cols["requests"][is_can]) > 0
    )
    if use_counts:
        can = _counts(cols, is_can, metric)
        base = _counts(cols, is_base, metric) if is_base is not None else None
        if can is None or (is_base is not None and base is None):
            return CheckResult(
                metric,
                lim,
                thr,
                Verdict.INCONCLUSIVE,
                "no exposure (requests, hours or expected heartbeats) reported",
            )
        return _rate_check(gate, lim, thr, can, base, a, look)
    c = cols[metric][is_can]
    c = c[np.isfinite(c)]
    b = None
    if is_base is not None:
        b = cols[metric][is_base]
        b = b[np.isfinite(b)]
    if len(c) == 0 or (b is not None and len(b) == 0):
        return CheckResult(metric, lim, thr, Verdict.INCONCLUSIVE, f"no {metric} values reported")
    return _mean_check(gate, lim, thr, c, b, a, look)
