"""Health gates: the distribution functions against known values, and the verdicts'
false-fail rate and power on simulated fleets."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from edgeplat.rollouts.gates import COLUMNS, CohortSample, GateReport, Verdict, evaluate_gates
from edgeplat.rollouts.spec import Gate, load_spec
from edgeplat.rollouts.stats import (
    betainc,
    binom_lower,
    binom_sf,
    binom_upper,
    gammainc,
    norm_ppf,
    norm_sf,
    poisson_sf,
    poisson_upper,
    t_ppf,
    t_sf,
)

ROOT = Path(__file__).resolve().parents[2]
FIRST_PHASE_GATES = load_spec(ROOT / "examples/rollouts/canary-good.yaml").gates_for(0)


# ---------------------------------------------------------------- distribution functions


@pytest.mark.parametrize(
    "got,want",
    [
        (lambda: norm_ppf(0.975), 1.959963984540054),
        (lambda: norm_ppf(0.01), -2.3263478740408408),
        (lambda: norm_sf(1.0), 0.15865525393145707),
        (lambda: betainc(2, 3, 0.4), 0.5248),  # = P(Binomial(4, 0.4) >= 2)
        (lambda: betainc(0.5, 0.5, 0.25), 1 / 3),  # arcsine law: (2/pi) asin(sqrt(x))
        (lambda: gammainc(1, 2.0), 1 - math.exp(-2)),
        (lambda: gammainc(0.5, 2.0), math.erf(math.sqrt(2))),
        (lambda: poisson_sf(3, 1.0), 0.0803013970713942),
        (lambda: t_ppf(0.975, 10), 2.2281388519649385),
        (lambda: t_ppf(0.99, 3), 4.540702858698419),
        (lambda: t_sf(2.0, 5), 0.050969739414929),
        (lambda: t_sf(-1.0, 1), 0.75),  # Cauchy
        (lambda: binom_upper(0, 10, 0.05), 1 - 0.05**0.1),
        (lambda: binom_lower(10, 10, 0.05), 0.05**0.1),
        (lambda: poisson_upper(0, 0.05), -math.log(0.05)),
        (lambda: poisson_upper(5, 0.025), 11.668332079322),  # Garwood 95% two-sided upper for 5 events
    ],
)
def test_special_functions_known_values(got, want):
    assert got() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_binomial_tail_matches_exact_sum():
    for n, p in ((20, 0.2), (50, 0.03), (7, 0.9)):
        for k in range(n + 1):
            exact = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))
            assert binom_sf(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-14)


def test_poisson_tail_matches_exact_sum():
    for mu in (0.3, 4.0, 60.0):
        for k in range(0, 90, 7):
            exact = 1 - sum(math.exp(-mu + j * math.log(mu) - math.lgamma(j + 1)) for j in range(k))
            assert poisson_sf(k, mu) == pytest.approx(exact, rel=1e-8, abs=1e-12)


# ---------------------------------------------------------------- simulated fleets


def simulate(
    rng, n_devices=2000, canary_share=0.01, error_mult=1.0, base_error=0.01, minutes=60, spread=4.0
) -> dict:
    """Per-device aggregates over ``minutes`` of one-a-minute health samples.

    Device error rates vary around ``base_error`` (gamma, shape ``spread``: CV 50% at 4), as
    real devices do; that overdispersion is what makes naive pooled tests misfire.
    """
    n_c = round(n_devices * canary_share)
    n = n_devices
    requests = rng.poisson(20 * minutes, n)  # ~20 requests a minute
    p = base_error * rng.gamma(spread, 1 / spread, n)
    p[:n_c] *= error_mult
    return {
        "cohort": np.array(["canary"] * n_c + ["baseline"] * (n - n_c)),
        "samples": np.full(n, minutes),
        "hours": np.full(n, minutes / 60),
        "requests": requests,
        "errors": rng.binomial(requests, np.clip(p, 0, 1)),
        "crash_count": rng.poisson(0.02 * rng.gamma(2.0, 0.5, n) * minutes / 60),
        "heartbeats": minutes - rng.binomial(minutes, 0.01, n),
        "expected_heartbeats": np.full(n, minutes),
        "cpu_pct": rng.normal(35, 8, n),
    }


def verdicts(gates, runs, seed, sequential=True, **kw) -> Counter:
    rng = np.random.default_rng(seed)
    return Counter(
        evaluate_gates(gates, simulate(rng, **kw), sequential=sequential).verdict for _ in range(runs)
    )


def test_healthy_release_rarely_fails_first_phase():
    got = verdicts(FIRST_PHASE_GATES, 200, seed=11)
    assert got[Verdict.FAIL] <= 4, got  # <= 2% false rollbacks
    assert got[Verdict.PASS] >= 100, got  # and mostly conclusive


def test_three_times_the_error_rate_fails_first_phase_at_one_look():
    # The fixed-sample test spends all of alpha on this one look; the sequential one keeps
    # alpha for every look of the bake, so a single look has a little less power.
    assert verdicts(FIRST_PHASE_GATES, 200, seed=12, error_mult=3.0, sequential=False)[Verdict.FAIL] == 200
    got = verdicts(FIRST_PHASE_GATES, 200, seed=12, error_mult=3.0)
    assert got[Verdict.FAIL] >= 196, got
    assert got[Verdict.PASS] == 0, got


def bake_looks(rng, gates, *, sequential, error_mult=1.0, n_devices=2000, looks=12, every=5) -> Verdict:
    """The first FAIL (or the last verdict) over ``looks`` evaluations of one bake's growing window."""
    n_c = round(n_devices * 0.01)
    p = 0.01 * rng.gamma(4.0, 0.25, n_devices)
    p[:n_c] *= error_mult
    cohort = np.array(["canary"] * n_c + ["baseline"] * (n_devices - n_c))
    requests = np.zeros(n_devices)
    errors = np.zeros(n_devices)
    verdict = Verdict.INCONCLUSIVE
    for k in range(1, looks + 1):
        new = rng.poisson(20 * every, n_devices)
        requests += new
        errors += rng.binomial(new, np.clip(p, 0, 1))
        minutes = k * every
        data = {
            "cohort": cohort,
            "samples": np.full(n_devices, minutes),
            "hours": np.full(n_devices, minutes / 60),
            "requests": requests,
            "errors": errors,
        }
        verdict = evaluate_gates(gates, data, sequential=sequential).verdict
        if verdict == Verdict.FAIL:
            return verdict
    return verdict


def test_sequential_fail_keeps_alpha_over_every_look_of_a_bake():
    # At the null boundary (max_ratio 1.0), twelve looks of a one-hour bake: the fixed-sample
    # test repeated at every look fails well above alpha, the always-valid one stays below it.
    gate = [Gate(metric="error_rate", max_ratio=1.0, min_devices=15, min_samples=600, alpha=0.05)]
    rng = np.random.default_rng(21)
    seq = Counter(bake_looks(rng, gate, sequential=True) for _ in range(300))
    rng = np.random.default_rng(21)
    fixed = Counter(bake_looks(rng, gate, sequential=False) for _ in range(300))
    assert seq[Verdict.FAIL] <= 15, seq  # alpha 5% of 300
    assert fixed[Verdict.FAIL] > seq[Verdict.FAIL], (fixed, seq)


def test_test_is_calibrated_at_the_boundary_despite_overdispersion():
    # max_ratio 1.0 on a healthy fleet is exactly the null boundary: FAIL must stay near alpha.
    # Without the dispersion correction, this fires in ~12% of runs.
    gate = [Gate(metric="error_rate", max_ratio=1.0, min_devices=15, min_samples=600, alpha=0.01)]
    got = verdicts(gate, 300, seed=13)
    assert got[Verdict.FAIL] <= 9, got  # <= 3%


def test_too_few_devices_or_samples_is_inconclusive():
    rng = np.random.default_rng(5)
    small = simulate(rng, n_devices=1000)  # a healthy release on 10 canaries < min_devices 15
    report = evaluate_gates(FIRST_PHASE_GATES, small)
    assert report.verdict == Verdict.INCONCLUSIVE
    assert any("min_devices 15" in r for r in report.reasons)
    # ... while overwhelming evidence (10x the error rate) fails before the minimum sample
    worse = simulate(rng, n_devices=1000, error_mult=10.0)
    assert evaluate_gates(FIRST_PHASE_GATES, worse).verdict == Verdict.FAIL
    assert evaluate_gates(FIRST_PHASE_GATES, worse, sequential=False).verdict == Verdict.INCONCLUSIVE
    short = simulate(rng, minutes=20)  # 20 canaries x 20 samples = 400 < min_samples 600
    report = evaluate_gates(FIRST_PHASE_GATES, short)
    assert report.verdict == Verdict.INCONCLUSIVE
    assert any("min_samples 600" in r for r in report.reasons)


def test_continuous_metric_welch():
    rng = np.random.default_rng(8)
    data = simulate(rng)
    gate = [Gate(metric="cpu_pct", max_increase=10, min_devices=10, min_samples=100)]
    assert evaluate_gates(gate, data).verdict == Verdict.PASS
    hot = dict(data)
    hot["cpu_pct"] = data["cpu_pct"] + np.where(data["cohort"] == "canary", 30.0, 0.0)
    report = evaluate_gates(gate, hot)
    assert report.verdict == Verdict.FAIL
    check = report.checks[0]
    assert check.inputs["canary_mean"] - check.inputs["baseline_mean"] > 20


def test_absolute_limits_and_missed_heartbeats():
    rng = np.random.default_rng(9)
    data = simulate(rng)
    lost = dict(data)
    lost["heartbeats"] = np.where(data["cohort"] == "canary", 30, data["heartbeats"])  # half missed
    gate = [Gate(metric="heartbeat", max=0.1, min_devices=10, min_samples=100)]
    assert evaluate_gates(gate, data).verdict == Verdict.PASS
    assert evaluate_gates(gate, lost).verdict == Verdict.FAIL
    crashes = [Gate(metric="crash_count", max=1.0, min_devices=10, min_samples=100)]
    assert evaluate_gates(crashes, data).verdict == Verdict.PASS
    looping = dict(data)
    looping["crash_count"] = np.where(data["cohort"] == "canary", 6, data["crash_count"])
    assert evaluate_gates(crashes, looping).verdict == Verdict.FAIL


def test_no_baseline_at_100_percent_skips_relative_limits_only():
    rng = np.random.default_rng(10)
    data = simulate(rng, canary_share=1.0)
    report = evaluate_gates(FIRST_PHASE_GATES, data, baseline_required=False)
    kinds = {(c.limit, c.verdict) for c in report.checks}
    assert ("max_ratio", Verdict.SKIPPED) in kinds
    assert report.verdict == Verdict.PASS
    assert (
        evaluate_gates(FIRST_PHASE_GATES, data).verdict == Verdict.INCONCLUSIVE
    )  # baseline required by default


def test_inputs_accept_dataclasses_and_arrow_and_report_round_trips():
    rows = [CohortSample(f"c{i}", "canary", 60, 1.0, 1200, 12, cpu_pct=30.0 + i % 3) for i in range(20)]
    rows += [CohortSample(f"b{i}", "baseline", 60, 1.0, 1200, 12, cpu_pct=30.0 + i % 3) for i in range(200)]
    gates = [
        Gate(metric="error_rate", max_ratio=2.0, min_devices=10, min_samples=100),
        Gate(metric="cpu_pct", max_increase=5),
    ]
    a = evaluate_gates(gates, rows)
    table = pa.table({name: [getattr(r, name) for r in rows] for name in COLUMNS})
    b = evaluate_gates(gates, table)
    assert a.verdict == b.verdict == Verdict.PASS
    assert GateReport.from_dict(a.to_dict()) == a
    ratio = a.checks[0].inputs
    assert (
        ratio["canary_events"] == 240
        and ratio["baseline_events"] == 2400
        and ratio["ratio"] == pytest.approx(1.0)
    )
    assert ratio["alpha"] == pytest.approx(0.01 / 2)  # Bonferroni over the report's two checks
    with pytest.raises(ValueError, match="cohort must be"):
        evaluate_gates(gates, {"cohort": np.array(["test"]), "samples": np.array([1])})
