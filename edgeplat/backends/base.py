"""The one interface every fleet backend implements, and the small values it trades in.

The rollout sensor and jobs call ``deploy`` (one phase's devices), ``rollback`` and
``status`` without knowing which platform is behind them. Every operation is idempotent:
the promotion sensor may retry a step after a crash, so repeating ``deploy`` for the same
(rollout, phase) must not create a second deployment, and repeating ``rollback`` must not
roll back twice.

Phases are cumulative (a device never leaves an earlier phase): a device passed again in a
later phase keeps the phase it was first deployed in.

Blue/green staging (``stage``: install on the inactive slot, do not activate) is a capability:
backends whose devices have A/B slots set ``staging_unsupported = None`` and implement it;
the others keep the default (a reason string) and the controller falls back to installing
at each phase's switch, recording that reason in the rollout's events.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SLOTS = ("a", "b")
SlotChoice = Literal["a", "b", "inactive"]
# What a device last reported, for a backend's status: (tenant, device) -> (version, slot,
# desired-state revision) or None; the lakehouse health data answers it.
Reported = Callable[[str, str], "tuple[str | None, str | None, int | None] | None"]


class BackendError(RuntimeError):
    """A fleet backend call failed; the message names the backend, the call and the fix."""


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """One device as a backend sees it: who owns it, which platform runs it, its tags."""

    tenant_id: str
    device_id: str
    platform: str = "edge_agent"
    tags: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant_id, self.device_id)


@dataclass(frozen=True, slots=True)
class GreengrassComponent:
    """The Greengrass v2 component (name and semantic version) a release ships."""

    component: str
    version: str


@dataclass(frozen=True, slots=True)
class IotEdgeModule:
    """The Azure IoT Edge module (name and container image) a release ships."""

    module: str
    image: str


@dataclass(frozen=True, slots=True)
class ReleaseSpec:
    """What a rollout ships: a name and version, and per platform what to install."""

    name: str
    version: str
    greengrass: GreengrassComponent | None = None
    iot_edge: IotEdgeModule | None = None

    @classmethod
    def of(cls, release: Any) -> ReleaseSpec:
        """Convert anything with the same attributes (the rollout spec's pydantic ``Release``,
        a mapping from YAML/JSON) to a ``ReleaseSpec``."""
        if isinstance(release, ReleaseSpec):
            return release
        get = _getter(release)
        try:
            name, version = get(release, "name"), get(release, "version")
        except (KeyError, AttributeError) as exc:
            raise TypeError(
                f"a release needs 'name' and 'version' (got {type(release).__name__}: {release!r})"
            ) from exc
        gg = _optional(release, "greengrass")
        edge = _optional(release, "iot_edge")
        return cls(
            name=str(name),
            version=str(version),
            greengrass=GreengrassComponent(str(_getter(gg)(gg, "component")), str(_getter(gg)(gg, "version")))
            if gg is not None
            else None,
            iot_edge=IotEdgeModule(str(_getter(edge)(edge, "module")), str(_getter(edge)(edge, "image")))
            if edge is not None
            else None,
        )


def _getter(obj: Any) -> Any:
    return (lambda o, k: o[k]) if isinstance(obj, Mapping) else getattr


def _optional(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


@dataclass(frozen=True, slots=True)
class DeployResult:
    """What one ``deploy`` or ``rollback`` call did.

    ``changed`` lists the devices whose desired state this call changed (empty when the call
    repeated an earlier one); ``deployments`` names the platform objects created or updated
    (deployment ids, configuration ids, document keys); ``skipped`` maps devices this
    backend does not manage (wrong platform) to the reason; ``failed`` maps devices the
    platform did not accept (throttled, outage) to the error, to be retried. Accepted:
    ``targeted`` minus ``failed``.
    """

    backend: str
    action: Literal["deploy", "rollback", "stage"]
    rollout_id: str
    phase: int | None
    targeted: tuple[tuple[str, str], ...]
    changed: tuple[tuple[str, str], ...] = ()
    deployments: tuple[str, ...] = ()
    skipped: Mapping[tuple[str, str], str] = field(default_factory=dict)
    failed: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @property
    def accepted(self) -> tuple[tuple[str, str], ...]:
        """Devices the backend took the action for (a repeat counts: it is idempotent)."""
        return tuple(k for k in self.targeted if k not in self.failed)

    @property
    def noop(self) -> bool:
        """True if nothing changed (a repeat of an earlier call)."""
        return not self.changed and not self.deployments


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One device's desired release against what it acknowledged and reports."""

    tenant_id: str
    device_id: str
    rollout_id: str | None
    phase: int | None
    desired_version: str | None
    acknowledged: bool
    reported_version: str | None = None
    state: str = "pending"  # backend-specific: pending, in_progress, succeeded, failed, rolled_back
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """Per-device status of one rollout (or of every rollout the backend knows)."""

    backend: str
    rollout_id: str | None
    devices: tuple[DeviceStatus, ...]

    def by_device(self) -> dict[tuple[str, str], DeviceStatus]:
        return {(d.tenant_id, d.device_id): d for d in self.devices}

    @property
    def acknowledged(self) -> int:
        return sum(d.acknowledged for d in self.devices)


@dataclass(frozen=True, slots=True)
class ReleaseArtifact:
    """What of a release a platform backend installs, named as the rollout spec names it."""

    attr: str  # the release field: "greengrass" or "iot_edge"
    label: str  # for people: "Greengrass component"
    keys: str  # the field's keys in the spec: "component, version"


class StagingNotSupported(BackendError):
    """``stage`` on a backend without A/B slots (see ``FleetBackend.staging_unsupported``)."""


class FleetBackend(ABC):
    """Deploys releases to devices, rolls them back and reports per-device status.

    ``deploy`` checks its arguments, the release and the devices the same way for every
    backend, then hands over to the backend's ``_deploy``.
    """

    name: str
    # None: the backend can stage (blue/green); else why not, recorded with the fallback.
    staging_unsupported: str | None = "this backend has no A/B slots to stage a release on"
    # The one platform whose devices the backend manages (None: devices of any platform).
    platform: str | None = None
    # What of a release the backend installs (None: the release itself).
    artifact: ReleaseArtifact | None = None

    def deploy(
        self,
        devices: list[DeviceRef],
        release: ReleaseSpec,
        *,
        rollout_id: str,
        phase: int,
        slot: str | None = None,
    ) -> DeployResult:
        """Make ``release`` the desired release of ``devices`` as phase ``phase`` of the rollout.

        ``slot`` (blue/green): ``"a"``, ``"b"`` or ``"inactive"`` (the slot the device is not
        running); ``None`` installs in place. Idempotent per (rollout, phase, device).
        """
        check_deploy_args(devices, rollout_id, phase, slot)
        spec = ReleaseSpec.of(release)
        art = self.artifact
        if art is not None and getattr(spec, art.attr) is None:
            raise BackendError(
                f"release {spec.name} {spec.version} has no {art.label}: add release.{art.attr} {{{art.keys}}} "
                "to the rollout spec, or target other platforms"
            )
        ours, skipped = self._split(devices)
        return self._deploy(ours, skipped, spec, rollout_id, phase, slot)

    @abstractmethod
    def _deploy(
        self,
        devices: list[DeviceRef],
        skipped: dict[tuple[str, str], str],
        release: ReleaseSpec,
        rollout_id: str,
        phase: int,
        slot: str | None,
        /,
    ) -> DeployResult:
        """``deploy`` once its arguments are checked: ``devices`` are the ones this backend manages
        (each once), ``skipped`` the others with the reason, ``release`` has the artifact."""

    @abstractmethod
    def rollback(self, devices: list[DeviceRef], *, rollout_id: str, to: ReleaseSpec | None) -> DeployResult:
        """Undo the rollout on ``devices``: back to ``to`` (the previous release), or to what
        the device ran before (``None``). Idempotent; devices offline get it when they return."""

    def stage(self, devices: list[DeviceRef], release: ReleaseSpec, *, rollout_id: str) -> DeployResult:
        """Install ``release`` on the inactive slot of ``devices`` without activating it (blue/green).

        A later ``deploy(..., slot="inactive")`` of the same rollout switches to the staged slot
        and keeps the old one as ``previous``, so ``rollback`` is a switch back. Idempotent per
        (rollout, device); raises ``StagingNotSupported`` when ``staging_unsupported`` is set.
        """
        raise StagingNotSupported(
            f"{self.name} backend cannot stage releases: {self.staging_unsupported}; "
            "use the canary strategy or let the controller install at each switch"
        )

    @abstractmethod
    def status(self, rollout_id: str | None = None) -> BackendStatus:
        """Per device: desired version, whether it acknowledged, the reported version if known."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release network clients."""

    def _result(
        self,
        action: Literal["deploy", "rollback", "stage"],
        rollout_id: str,
        phase: int | None,
        devices: Iterable[DeviceRef],
        changed: Iterable[tuple[str, str]] = (),
        deployments: Iterable[str] = (),
        skipped: Mapping[tuple[str, str], str] | None = None,
    ) -> DeployResult:
        """What one call of this backend did: ``devices`` are the ones it targeted."""
        return DeployResult(
            backend=self.name,
            action=action,
            rollout_id=rollout_id,
            phase=phase,
            targeted=tuple(d.key for d in devices),
            changed=tuple(changed),
            deployments=tuple(deployments),
            skipped=skipped if skipped is not None else {},
        )

    def _split(self, devices: Iterable[DeviceRef]) -> tuple[list[DeviceRef], dict[tuple[str, str], str]]:
        """The devices this backend manages (each once, in order), and why it skips each other one."""
        ours, skipped = [], {}
        for d in unique_devices(devices):
            if self.platform is None or d.platform == self.platform:
                ours.append(d)
            else:
                skipped[d.key] = f"platform {d.platform!r} is not managed by the {self.name} backend"
        return ours, skipped


# --------------------------------------------------------------------------- helpers


def check_deploy_args(devices: Iterable[DeviceRef], rollout_id: str, phase: int, slot: str | None) -> None:
    """Reject bad arguments before any platform call, with an error naming the fix."""
    if not isinstance(rollout_id, str) or not rollout_id:
        raise ValueError(f"rollout_id must be a non-empty string, got {rollout_id!r}")
    if not isinstance(phase, int) or isinstance(phase, bool) or phase < 0:
        raise ValueError(f"phase must be a non-negative integer (phases count from 0), got {phase!r}")
    if slot not in (None, "a", "b", "inactive"):
        raise ValueError(f"slot must be None (in place), 'a', 'b' or 'inactive', got {slot!r}")
    for d in devices:
        if not isinstance(d, DeviceRef):
            raise TypeError(f"devices must be DeviceRef values, got {type(d).__name__}: {d!r}")


def unique_devices(devices: Iterable[DeviceRef]) -> list[DeviceRef]:
    """Devices in order, each (tenant, device) once."""
    seen: set[tuple[str, str]] = set()
    out = []
    for d in devices:
        if d.key not in seen:
            seen.add(d.key)
            out.append(d)
    return out


def sanitize_name(text: str, *, allowed: str, max_len: int, replacement: str = "-") -> str:
    """``text`` with characters outside the ``allowed`` regex class replaced; when anything
    was replaced or cut, a short hash of the original is appended so two different inputs
    never map to the same name."""
    cleaned = re.sub(f"[^{allowed}]", replacement, text)
    if cleaned == text and len(text) <= max_len:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{cleaned[: max_len - 9]}{replacement}{digest}"
