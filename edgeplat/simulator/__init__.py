"""The fleet simulator: many devices running the real edge agent over simulated time.

``simulate(SimulationConfig(...))`` runs a whole simulation and returns the ground truth
and a summary; ``SimulatedFleet`` steps a fleet through time (``advance(minutes)``), for
rollout demos that assign releases between steps and watch health follow the release
profiles. ``edgeplat simulate`` is the command line over the same API.
"""

from edgeplat.simulator.config import SimulationConfig
from edgeplat.simulator.engine import Fleet, SimulatedFleet, SimulationResult, simulate
from edgeplat.simulator.fleet import SimDevice
from edgeplat.simulator.profiles import ReleaseProfile, ReleaseProfiles
from edgeplat.simulator.truth import check_against_store, delivered_seqs, write_truth

__all__ = [
    "Fleet",
    "ReleaseProfile",
    "ReleaseProfiles",
    "SimDevice",
    "SimulatedFleet",
    "SimulationConfig",
    "SimulationResult",
    "check_against_store",
    "delivered_seqs",
    "simulate",
    "write_truth",
]
