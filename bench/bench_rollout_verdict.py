"""Rollout verdicts: how soon a bad release is rolled back, how soon a healthy one is promoted,
and how often a healthy one is rolled back, against the evaluation the gates did before.

Both sides run the rollout's own policy on the same vectorised simulated fleets and seeds
(``edgeplat.simulator.rollout_sim``: 10% offline, per-device error rates spread with CV 50%,
uploads every 30 minutes at each device's own offset, a look every 5 minutes). *Today* is the
evaluation before the sequential gates: the example spec as it was (phase 0 = 1% with no
``min_devices``), a fixed-sample test at every look (``evaluate_gates(sequential=False)``),
and a long-inconclusive phase rolled back. *Now* is the sized example spec with the
always-valid sequential FAIL. Times are simulated minutes from the phase-0 deploy.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.harness import Result
from edgeplat.rollouts.spec import Gate, RolloutSpec, load_spec
from edgeplat.simulator.rollout_sim import SimFleet, simulate_rollout

ROOT = Path(__file__).resolve().parents[1]


def _example(name: str) -> RolloutSpec:
    return load_spec(ROOT / "examples/rollouts" / name).model_copy(update={"maintenance_window": None})


def _today(spec: RolloutSpec) -> RolloutSpec:
    """The spec as the example was before: no min_devices, inconclusive rolls back."""
    phases = [p.model_copy(update={"min_devices": None}) for p in spec.phases]
    strategy = spec.strategy.model_copy(update={"phases": phases})
    return spec.model_copy(update={"strategy": strategy, "on_inconclusive": "rollback"})


def _runs(spec, devices, n, *, sequential, error_mult=1.0, until_phase=None, seed0=0, offline=0.1):
    return [
        simulate_rollout(
            spec,
            SimFleet(devices, offline_fraction=offline, seed=seed0 + i),
            error_mult=error_mult,
            sequential=sequential,
            until_phase=until_phase,
            rollout_id=f"{spec.name}-bench{seed0 + i:05d}",
            seed=seed0 + i,
        )
        for i in range(n)
    ]


def _median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _rollback_minutes(outcomes, cap: float) -> list[float]:
    """Minutes to the rollback (a rollout never rolled back counts as ``cap``)."""
    return [o.rolled_back_at if o.rolled_back_at is not None else cap for o in outcomes]


def run(quick: bool) -> list[Result]:
    n = 60 if quick else 200
    # The user story: canary-good.yaml (both tenants) shipping a release with 3x the errors.
    bad_now = good_now = _example("canary-good.yaml")
    bad_today, good_today = _today(bad_now), _today(good_now)
    cap = 12 * 60.0
    out: list[Result] = []

    # 1. a 3x-error release on 2,000 devices: the example spec now vs today's
    now = _runs(bad_now, 2000, n, sequential=True, error_mult=3.0)
    today = _runs(bad_today, 2000, n, sequential=False, error_mult=3.0)
    same_spec = _runs(bad_today, 2000, n, sequential=True, error_mult=3.0)
    m_now, m_today = _median(_rollback_minutes(now, cap)), _median(_rollback_minutes(today, cap))
    out.append(
        Result(
            "rollout.rollback_3x_2000_median",
            m_now,
            "min",
            "today: 1% phase, fixed-sample gates",
            m_today,
            0.5,
            higher_is_better=False,
            note=f"{n} launches; phase-0 rollbacks now {sum(o.phase == 0 and o.rolled_back for o in now)}/{n}, "
            f"today {sum(o.phase == 0 and o.rolled_back for o in today)}/{n}",
        )
    )
    out.append(
        Result(
            "rollout.rollback_3x_2000_median_same_spec",
            _median(_rollback_minutes(same_spec, cap)),
            "min",
            "same 1% spec, fixed-sample gates",
            m_today,
            1.0,
            higher_is_better=False,
            note="the sequential test alone, on today's spec (20 canaries)",
        )
    )

    # the 35-40 minutes were measured with every device online (the demo fleet)
    now = _runs(bad_now, 2000, n, sequential=True, error_mult=3.0, offline=0.0, seed0=500)
    today = _runs(bad_today, 2000, n, sequential=False, error_mult=3.0, offline=0.0, seed0=500)
    out.append(
        Result(
            "rollout.rollback_3x_2000_all_online_median",
            _median(_rollback_minutes(now, cap)),
            "min",
            "today: 1% phase, fixed-sample gates",
            _median(_rollback_minutes(today, cap)),
            0.5,
            higher_is_better=False,
            note=f"{n} launches, no device offline",
        )
    )

    # 2. a 3x-error release on 1,000 devices: the sized plan vs today's (inconclusive at 10 canaries)
    now = _runs(bad_now, 1000, n, sequential=True, error_mult=3.0, seed0=1000)
    today = _runs(bad_today, 1000, n, sequential=False, error_mult=3.0, seed0=1000)
    mins_now = sorted(_rollback_minutes(now, cap))
    p95 = mins_now[min(len(mins_now) - 1, int(0.95 * len(mins_now)))]
    causes = sorted({o.cause for o in today})
    out.append(
        Result(
            "rollout.rollback_3x_1000_p95",
            p95,
            "min",
            "today: 1% phase, fixed-sample gates (median)",
            _median(_rollback_minutes(today, cap)),
            0.25,
            higher_is_better=False,
            note=f"target <= 30 min; now median {_median(mins_now):.0f}, max {mins_now[-1]:.0f} min, "
            f"{sum(o.cause == 'gate' for o in now)}/{n} by a gate; today's causes {causes}",
        )
    )

    # 3. a healthy release on 2,000 devices: time to the first promotion, and rollbacks
    now = _runs(good_now, 2000, n, sequential=True, until_phase=1, seed0=2000)
    today = _runs(good_today, 2000, n, sequential=False, until_phase=1, seed0=2000)
    promo_now = _median([o.promoted_at for o in now if o.promoted_at is not None])
    promo_today = _median([o.promoted_at for o in today if o.promoted_at is not None])
    out.append(
        Result(
            "rollout.promote_healthy_2000_median",
            promo_now,
            "min",
            "today",
            promo_today,
            1.1,
            higher_is_better=False,
            note=f"phase 0 promoted now {sum(o.promoted_at is not None for o in now)}/{n}, "
            f"today {sum(o.promoted_at is not None for o in today)}/{n}; rolled back now "
            f"{sum(o.rolled_back for o in now)}, today {sum(o.rolled_back for o in today)}",
        )
    )

    # 4. false rollbacks over a whole bake, every look counted: the same gates, same seeds,
    # sequential vs fixed-sample at every look; at the null boundary (a release exactly at its
    # limit: max_ratio 1.0), where a test's level shows.
    boundary = [Gate(metric="error_rate", max_ratio=1.0, min_devices=15, min_samples=600, alpha=0.05)]
    spec = good_now.model_copy(update={"gates": boundary, "on_inconclusive": "pause"})
    seq = _runs(spec, 2000, n, sequential=True, until_phase=1, seed0=3000)
    fixed = _runs(spec, 2000, n, sequential=False, until_phase=1, seed0=3000)
    rate_seq = sum(o.rolled_back and o.cause == "gate" for o in seq) / n
    rate_fixed = sum(o.rolled_back and o.cause == "gate" for o in fixed) / n
    looks = _median([o.looks for o in seq])
    out.append(
        Result(
            "rollout.false_rollback_boundary_whole_bake",
            rate_seq,
            "rate",
            "fixed-sample at every look",
            rate_fixed,
            1.0,
            higher_is_better=False,
            note=f"alpha 0.05, {n} launches, ~{looks:.0f} looks in phase 0 (bake, inconclusive pause to the "
            "deadline); target: now <= alpha",
        )
    )
    # and with the example's own gates on a healthy release (alpha 0.01 split over 5 checks)
    seq = _runs(good_today, 2000, n, sequential=True, until_phase=1, seed0=4000)
    fixed = _runs(good_today, 2000, n, sequential=False, until_phase=1, seed0=4000)
    out.append(
        Result(
            "rollout.false_rollback_example_gates_whole_bake",
            sum(o.rolled_back and o.cause == "gate" for o in seq) / n,
            "rate",
            "fixed-sample at every look",
            max(sum(o.rolled_back and o.cause == "gate" for o in fixed) / n, 1 / n),
            None,
            higher_is_better=False,
            note=f"healthy release, today's 1% spec, gate FAILs only; baseline floored at 1/{n}",
        )
    )
    return out
