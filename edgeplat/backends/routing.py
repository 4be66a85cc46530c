"""Mixed-platform rollouts: one ``FleetBackend`` over several, each device sent to its platform's.

A fleet of edge agents, Greengrass core devices and IoT Edge devices is rolled out by one
controller through ``RoutingBackend([edge_agent, greengrass, azure_iot_edge])``: a device
goes to the backend whose ``platform`` is the device's, else to the backend that manages
any platform (``platform = None``: the edge agent, which runs on any host), else it is
skipped with the reason.

A backend that fails (its client already retried throttling with backoff: botocore's
``standard`` mode, msrest's retry policy) does not stall the others: its devices are
returned in ``DeployResult.failed`` with the error (the controller records them as not
sent, and sends them again on a later tick), and the backend is left alone for a backoff
window (exponential from ``backoff_base`` seconds, capped at ``backoff_max``); calls inside
the window fail its devices at once with the time left. A success closes the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edgeplat.backends.base import (
    BackendError,
    BackendStatus,
    DeployResult,
    DeviceRef,
    FleetBackend,
    ReleaseSpec,
    StagingNotSupported,
    check_deploy_args,
    unique_devices,
)


@dataclass
class _Outage:
    failures: int
    until: float
    error: str


class RoutingBackend(FleetBackend):
    """Routes each device to its platform's backend; isolates a failing backend (see module doc)."""

    name = "routing"
    platform = None
    artifact = None

    def __init__(
        self,
        backends: Sequence[FleetBackend],
        *,
        backoff_base: float = 5.0,
        backoff_max: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not backends:
            raise ValueError("RoutingBackend needs at least one backend (EDGEPLAT_FLEET_BACKENDS lists them)")
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backends listed twice: {names}; name each kind once")
        self.backends = list(backends)
        self.backoff_base, self.backoff_max, self.clock = backoff_base, backoff_max, clock
        self.outages: dict[str, _Outage] = {}
        stagers = [b for b in backends if b.staging_unsupported is None]
        self.staging_unsupported = (
            None
            if stagers
            else "; ".join(f"{b.name}: {b.staging_unsupported}" for b in backends if b.staging_unsupported)
        )

    def backend_for(self, device: DeviceRef) -> FleetBackend | None:
        for b in self.backends:
            if b.platform is not None and b.platform == device.platform:
                return b
        return next((b for b in self.backends if b.platform is None), None)

    # ------------------------------------------------------------------ FleetBackend

    def deploy(
        self,
        devices: list[DeviceRef],
        release: ReleaseSpec,
        *,
        rollout_id: str,
        phase: int,
        slot: str | None = None,
    ) -> DeployResult:
        check_deploy_args(devices, rollout_id, phase, slot)
        spec = ReleaseSpec.of(release)
        return self._fan_out(
            "deploy",
            rollout_id,
            phase,
            devices,
            lambda b, devs: b.deploy(devs, spec, rollout_id=rollout_id, phase=phase, slot=slot),
        )

    def _deploy(self, *args: Any) -> DeployResult:  # pragma: no cover - deploy is overridden
        raise NotImplementedError

    def stage(self, devices: list[DeviceRef], release: ReleaseSpec, *, rollout_id: str) -> DeployResult:
        spec = ReleaseSpec.of(release)

        def call(b: FleetBackend, devs: list[DeviceRef]) -> DeployResult:
            if b.staging_unsupported is not None:
                # this platform installs at each phase's switch instead
                reason = f"{b.name} cannot stage: {b.staging_unsupported}"
                return DeployResult(
                    b.name, "stage", rollout_id, None, (), skipped={d.key: reason for d in devs}
                )
            return b.stage(devs, spec, rollout_id=rollout_id)

        if self.staging_unsupported is not None:
            raise StagingNotSupported(f"no configured backend can stage: {self.staging_unsupported}")
        return self._fan_out("stage", rollout_id, None, devices, call)

    def rollback(self, devices: list[DeviceRef], *, rollout_id: str, to: ReleaseSpec | None) -> DeployResult:
        return self._fan_out(
            "rollback",
            rollout_id,
            None,
            devices,
            lambda b, devs: b.rollback(devs, rollout_id=rollout_id, to=to),
            # a rollback is tried even inside a backoff window: it is the call that must get through
            respect_backoff=False,
        )

    def status(self, rollout_id: str | None = None) -> BackendStatus:
        out = []
        for b in self.backends:
            out += b.status(rollout_id).devices
        return BackendStatus(self.name, rollout_id, tuple(out))

    def configure_rollout(self, rollout_id: str, spec: Any) -> None:
        for b in self.backends:
            configure = getattr(b, "configure_rollout", None)
            if callable(configure):
                configure(rollout_id, spec)

    def close(self) -> None:
        for b in self.backends:
            b.close()

    # ------------------------------------------------------------------ internals

    def _fan_out(
        self,
        action: Literal["deploy", "rollback", "stage"],
        rollout_id: str,
        phase: int | None,
        devices: Iterable[DeviceRef],
        call: Callable[[FleetBackend, list[DeviceRef]], DeployResult],
        *,
        respect_backoff: bool = True,
    ) -> DeployResult:
        groups: dict[str, list[DeviceRef]] = {}
        skipped: dict[tuple[str, str], str] = {}
        for d in unique_devices(devices):
            b = self.backend_for(d)
            if b is None:
                skipped[d.key] = (
                    f"no configured backend manages platform {d.platform!r}: add it to EDGEPLAT_FLEET_BACKENDS"
                )
            else:
                groups.setdefault(b.name, []).append(d)
        targeted: list[tuple[str, str]] = []
        changed: list[tuple[str, str]] = []
        deployments: list[str] = []
        failed: dict[tuple[str, str], str] = {}
        for b in self.backends:
            devs = groups.get(b.name)
            if not devs:
                continue
            outage = self.outages.get(b.name)
            now = self.clock()
            if respect_backoff and outage is not None and now < outage.until:
                targeted += [d.key for d in devs]
                reason = f"{b.name} backing off for {outage.until - now:.0f}s after: {outage.error}"
                failed.update({d.key: reason for d in devs})
                continue
            try:
                res = call(b, devs)
            except BackendError as exc:
                n = (outage.failures if outage else 0) + 1
                delay = min(self.backoff_max, self.backoff_base * 2 ** (n - 1))
                self.outages[b.name] = _Outage(n, now + delay, str(exc))
                targeted += [d.key for d in devs]
                failed.update({d.key: f"{b.name}: {exc}" for d in devs})
                continue
            self.outages.pop(b.name, None)
            targeted += res.targeted
            changed += res.changed
            deployments += res.deployments
            skipped.update(res.skipped)
            failed.update(res.failed)
        return DeployResult(
            self.name,
            action,
            rollout_id,
            phase,
            tuple(targeted),
            tuple(changed),
            tuple(deployments),
            skipped,
            failed,
        )
