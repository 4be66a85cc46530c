"""The rollout state machine under test: a spec of four canary phases, and a controller loop
(``Driver``) that folds the event log, decides and records, one tick of five minutes at a time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from edgeplat.rollouts.commands import command
from edgeplat.rollouts.decide import Decision, Observation, decide, new_events
from edgeplat.rollouts.events import TERMINAL, Event, RolloutState, created_event
from edgeplat.rollouts.gates import GateReport, Verdict
from edgeplat.rollouts.spec import RolloutSpec, load_spec

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TICK = timedelta(minutes=5)
PASS = GateReport(Verdict.PASS, ())


def make_spec(**over) -> RolloutSpec:
    data = {
        "name": "r1",
        "release": {
            "name": "app",
            "version": "2.0.0",
            "greengrass": {"component": "com.acme.App", "version": "2.0.0"},
        },
        "target": {"tenants": ["acme"]},
        "strategy": {
            "type": "canary",
            "phases": [
                {"percent": 1, "bake": "1h"},
                {"percent": 10, "bake": "1h"},
                {"percent": 50, "bake": "1h", "approval": "manual"},
                {"percent": 100, "bake": "30m"},
            ],
        },
        "gates": [{"metric": "error_rate", "max_ratio": 1.5}],
        "progress_deadline": "3h",
        "device_timeout": "30m",
        "gate_interval": "5m",
        "max_inconclusive": 3,
    }
    data.update(over)
    return load_spec(data)


World = Callable[[RolloutState, datetime], Observation]


def passing(state: RolloutState, now: datetime) -> Observation:
    return Observation(gates=PASS, phase=state.phase)


class Driver:
    """A controller loop: fold the log, decide, record. Remembers each tick for restart checks."""

    def __init__(self, spec: RolloutSpec, start: datetime = T0):
        self.log: list[Event] = [created_event(spec, "uuid-1", start, "alice")]
        self.now = start
        self.ticks: list[tuple[int, Observation, datetime]] = []

    @property
    def state(self) -> RolloutState:
        return RolloutState.from_events(self.log)

    def tick(self, world: World = passing, keep: int | None = None) -> list[Decision]:
        st = self.state
        obs = world(st, self.now)
        decisions = decide(st, obs, self.now)
        self.ticks.append((len(self.log), obs, self.now))
        events = new_events(st, decisions, self.now)
        self.log += events if keep is None else events[:keep]  # keep < len: crash mid-tick
        self.now += TICK
        return decisions

    def cmd(self, kind: str, **kw) -> None:
        self.log.append(command(self.state, kind, "bob", self.now, **kw))

    def run(
        self,
        world: World = passing,
        until: Callable[[RolloutState], bool] = lambda s: False,
        max_ticks: int = 400,
    ) -> None:
        for _ in range(max_ticks):
            st = self.state
            if st.status in TERMINAL or until(st):
                return
            self.tick(world)
        raise AssertionError(f"did not get there in {max_ticks} ticks: {self.state.status}")

    def kinds(self) -> list[str]:
        return [e.kind for e in self.log]

    def first(self, kind: str, phase: int | None = None) -> Event:
        return next(e for e in self.log if e.kind == kind and (phase is None or e.phase == phase))
