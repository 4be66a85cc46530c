"""End-to-end calibration over fresh rollout ids: the example specs on simulated 1,000- and
10,000-device fleets (10% offline, per-device error rates spread as in test_gates), driven by
the rollout's own policy (``decide``, placement, gates) on a vectorised fleet.

A release with 3x the error rate must be rolled back in phase 0 at every launch, with no
device beyond phase 0 ever running it; a healthy release must (almost) never be rolled back.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from edgeplat.rollouts.plan import plan_rollout
from edgeplat.rollouts.spec import load_spec
from edgeplat.simulator.rollout_sim import SimFleet, simulate_rollout

ROOT = Path(__file__).resolve().parents[2]
LAUNCHES = 200
# The user story: the example spec with its maintenance window removed (approvals are
# given by the simulated operator as soon as asked).
GOOD = load_spec(ROOT / "examples/rollouts/canary-good.yaml").model_copy(update={"maintenance_window": None})
BAD = load_spec(ROOT / "examples/rollouts/canary-bad.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1_000, 10_000])
def test_three_times_the_error_rate_is_rolled_back_in_phase_0_at_every_launch(devices):
    outcomes = [
        simulate_rollout(BAD, SimFleet(devices, offline_fraction=0.1, seed=i), error_mult=3.0)
        for i in range(LAUNCHES)
    ]
    got = Counter((o.status, o.phase, o.cause) for o in outcomes)
    assert got == {("rolled_back", 0, "gate"): LAUNCHES}, got
    assert sum(o.beyond_phase_0 for o in outcomes) == 0
    assert len({o.rollout_id for o in outcomes}) == LAUNCHES  # a fresh id (fresh canaries) each time
    assert max(o.rolled_back_at for o in outcomes) <= 60  # within the first phase's bake


@pytest.mark.slow
@pytest.mark.parametrize("devices,through_phase", [(1_000, 1), (10_000, 0)])
def test_a_healthy_release_is_not_rolled_back(devices, through_phase):
    # Every look of phase 0's bake (and phase 1's on the small fleet, where cohorts are smallest)
    # counts: the run stops once the next phase is deployed.
    outcomes = [
        simulate_rollout(
            GOOD, SimFleet(devices, offline_fraction=0.1, seed=10_000 + i), until_phase=through_phase + 1
        )
        for i in range(LAUNCHES)
    ]
    rolled = [o for o in outcomes if o.rolled_back]
    assert len(rolled) <= 2, [o.events[-3:] for o in rolled]
    promoted = sum(o.deployed_phase == through_phase + 1 for o in outcomes)
    assert promoted >= LAUNCHES - 2


@pytest.mark.parametrize("name", ["canary-good.yaml", "canary-bad.yaml", "blue-green.yaml"])
def test_every_example_launches_and_decides_on_a_1000_device_fleet(name):
    spec = load_spec(ROOT / "examples/rollouts" / name).model_copy(update={"maintenance_window": None})
    for i in range(10):
        fleet = SimFleet(1_000, offline_fraction=0.1, seed=20_000 + i)
        assert plan_rollout(spec, fleet.targets(spec)[1]).ok  # launch would not refuse it
        healthy = simulate_rollout(spec, fleet)
        assert healthy.status == "completed", healthy.events[-3:]
        bad = simulate_rollout(spec, fleet, error_mult=3.0)
        assert (bad.status, bad.phase, bad.cause) == ("rolled_back", 0, "gate"), bad.events[-3:]
