"""AWS IoT Greengrass v2 fleet backend: one thing group and one deployment per (rollout, phase).

``deploy`` ensures an IoT thing per device (attributes ``tenant_id``/``device_id``), a thing
group ``edgeplat-<rollout>-p<phase>`` (sanitised to IoT's name rules) holding the phase's
new devices, and a ``greengrassv2`` deployment of the release's component to that group,
with failure handling ``ROLLBACK`` and the IoT job rollout, abort and timeout settings of a
``JobPolicy`` (built from the rollout spec with ``JobPolicy.from_spec``). A device already in
an earlier phase's group of the rollout stays there (phases are cumulative).

Idempotent: before creating, ``list_deployments`` on the group is searched for a deployment
of the same name, and the create carries a deterministic ``clientToken``; a device added
to a group after its deployment exists receives that deployment from Greengrass itself.

``rollback`` works per thing group (whole phases, which is how Greengrass targets): it
cancels the rollout's active deployments and creates a ``-rollback`` deployment per group:
the ``to`` component version, or no components. With no ``to``, each device then gets back
the component version it ran before the rollout: ``deploy`` records it (from
``list_installed_components``, before the device joins the phase group) in the thing
attribute ``edgeplat_prev`` (``<rollout hash>:<version>``, empty version: none installed),
and ``rollback`` creates one thing-targeted ``-restore`` deployment per device with that
version (a thing deployment is merged with its groups' deployments on the device). Offline
devices get it when they reconnect: deployments are durable in the service.

Clients built by ``from_clients`` use botocore's ``standard`` retry mode (throttling and
transient errors retried with exponential backoff and jitter inside each call).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from edgeplat.backends.base import (
    BackendError,
    BackendStatus,
    DeployResult,
    DeviceRef,
    DeviceStatus,
    FleetBackend,
    ReleaseArtifact,
    ReleaseSpec,
    Reported,
    sanitize_name,
)

PLATFORM = "greengrass"
DEFAULT_DEVICE_TIMEOUT = timedelta(minutes=30)
GROUP_PREFIX = "edgeplat-"
PREVIOUS_ATTR = "edgeplat_prev"  # thing attribute: the component version before the rollout
_NAME_CHARS = "a-zA-Z0-9:_-"  # IoT thing and thing group names
_ATTR_CHARS = "a-zA-Z0-9_.,@/:#-"  # IoT attribute values
ACKED = {"IN_PROGRESS", "SUCCEEDED", "COMPLETED", "FAILED", "REJECTED", "CANCELED"}
_STATES = {
    "SUCCEEDED": "succeeded",
    "COMPLETED": "succeeded",
    "FAILED": "failed",
    "REJECTED": "failed",
    "TIMED_OUT": "timed_out",
    "CANCELED": "canceled",
    "IN_PROGRESS": "in_progress",
    "QUEUED": "pending",
}


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """IoT job settings of a Greengrass deployment: rollout rate, abort criteria, device timeout."""

    maximum_per_minute: int = 1000
    abort_failure_percent: float = 10.0  # cancel the job once this share of executions failed
    abort_min_executed: int = 10  # ... counted only after this many devices executed it
    device_timeout: timedelta = DEFAULT_DEVICE_TIMEOUT
    component_update_timeout_s: int = 60

    @classmethod
    def from_spec(cls, spec: Any, **overrides: Any) -> JobPolicy:
        """From a rollout spec: the per-device timeout, and the smallest gate ``min_devices``
        as the number of executions before an abort may fire."""
        gates = list(getattr(spec, "gates", []) or [])
        for phase in getattr(getattr(spec, "strategy", None), "phases", []) or []:
            gates += list(getattr(phase, "gates", None) or [])
        fields: dict[str, Any] = {"device_timeout": getattr(spec, "device_timeout", DEFAULT_DEVICE_TIMEOUT)}
        if gates:
            fields["abort_min_executed"] = max(1, min(g.min_devices for g in gates))
        return cls(**{**fields, **overrides})

    def job_configuration(self) -> dict[str, Any]:
        return {
            "jobExecutionsRolloutConfig": {"maximumPerMinute": self.maximum_per_minute},
            "abortConfig": {
                "criteriaList": [
                    {
                        "failureType": "ALL",
                        "action": "CANCEL",
                        "thresholdPercentage": self.abort_failure_percent,
                        "minNumberOfExecutedThings": self.abort_min_executed,
                    }
                ]
            },
            "timeoutConfig": {
                "inProgressTimeoutInMinutes": max(1, math.ceil(self.device_timeout.total_seconds() / 60))
            },
        }


def default_thing_name(device: DeviceRef) -> str:
    """``<tenant>_<device>``, sanitised: thing names are account-wide, so the tenant is part of it."""
    return sanitize_name(f"{device.tenant_id}_{device.device_id}", allowed=_NAME_CHARS, max_len=128)


def group_name(rollout_id: str, phase: int) -> str:
    return f"{_group_prefix(rollout_id)}{phase}"


def _group_prefix(rollout_id: str) -> str:
    return f"{GROUP_PREFIX}{sanitize_name(rollout_id, allowed=_NAME_CHARS, max_len=100)}-p"


def _rollout_mark(rollout_id: str) -> str:
    return hashlib.sha256(rollout_id.encode()).hexdigest()[:12]


def _token(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:64]


class GreengrassBackend(FleetBackend):
    """Greengrass v2 deployments to per-(rollout, phase) thing groups (see module doc)."""

    name = "greengrass"
    platform = PLATFORM
    artifact = ReleaseArtifact("greengrass", "Greengrass component", "component, version")
    staging_unsupported = (
        "Greengrass v2 deploys a component version in place (no A/B slots to stage on); "
        "each phase's deployment installs and activates it"
    )

    def __init__(
        self,
        iot: Any,
        greengrass: Any,
        *,
        job_policy: JobPolicy | Callable[[str], JobPolicy] = JobPolicy(),
        thing_name: Callable[[DeviceRef], str] = default_thing_name,
        reported: Reported | None = None,
    ) -> None:
        self.iot = iot
        self.gg = greengrass
        self._policy = job_policy
        self.thing_name = thing_name
        self.reported = reported
        self._components: dict[str, str] = {}
        self._policies: dict[str, JobPolicy] = {}

    @classmethod
    def from_clients(
        cls,
        *,
        region: str = "us-east-1",
        iot_endpoint_url: str | None = None,
        greengrass_endpoint_url: str | None = None,
        session: Any = None,
        **options: Any,
    ) -> GreengrassBackend:
        """Build the boto3 ``iot`` and ``greengrassv2`` clients (credentials from the environment)."""
        import boto3
        from botocore.config import Config

        session = session or boto3.session.Session()
        config = Config(retries={"mode": "standard", "max_attempts": 6})
        iot = session.client("iot", region_name=region, endpoint_url=iot_endpoint_url, config=config)
        gg = session.client(
            "greengrassv2", region_name=region, endpoint_url=greengrass_endpoint_url, config=config
        )
        return cls(iot, gg, **options)

    def policy(self, rollout_id: str) -> JobPolicy:
        if rollout_id in self._policies:
            return self._policies[rollout_id]
        return self._policy(rollout_id) if callable(self._policy) else self._policy

    def configure_rollout(self, rollout_id: str, spec: Any) -> None:
        """Use the rollout spec's job policy (device timeout, abort threshold) for this rollout."""
        self._policies[rollout_id] = JobPolicy.from_spec(spec)

    # ------------------------------------------------------------------ FleetBackend

    def _deploy(
        self,
        ours: list[DeviceRef],
        skipped: dict[tuple[str, str], str],
        spec: ReleaseSpec,
        rollout_id: str,
        phase: int,
        slot: str | None,
    ) -> DeployResult:
        assert spec.greengrass is not None  # deploy refuses a release without one
        group = group_name(rollout_id, phase)
        group_arn = self._ensure_group(group, rollout_id, phase)
        existing = {d["deploymentName"] for d in self._deployments(group_arn)}
        if f"{group}-rollback" in existing:
            # the rollout was rolled back: a retried deploy must not bring the release back
            return self._result("deploy", rollout_id, phase, ours, skipped=skipped)
        changed = []
        for d in ours:
            thing = self._ensure_thing(d)
            prefix = _group_prefix(rollout_id)
            phases = {
                int(g[len(prefix) :])
                for g in self._groups_of(thing)
                if g.startswith(prefix) and g[len(prefix) :].isdigit()
            }
            if any(p <= phase for p in phases):
                continue  # already in this phase or an earlier one: a device never changes phase
            self._record_previous(thing, spec.greengrass.component, rollout_id)
            self._call(self.iot, "add_thing_to_thing_group", thingGroupName=group, thingName=thing)
            changed.append(d.key)
        name = f"{group}-{spec.greengrass.component}-{spec.greengrass.version}"[:256]
        created: tuple[str, ...] = ()
        if name not in existing:
            out = self._call(
                self.gg,
                "create_deployment",
                targetArn=group_arn,
                deploymentName=name,
                components={spec.greengrass.component: {"componentVersion": spec.greengrass.version}},
                deploymentPolicies={
                    "failureHandlingPolicy": "ROLLBACK",
                    "componentUpdatePolicy": {
                        "timeoutInSeconds": self.policy(rollout_id).component_update_timeout_s,
                        "action": "NOTIFY_COMPONENTS",
                    },
                },
                iotJobConfiguration=self.policy(rollout_id).job_configuration(),
                tags={
                    "edgeplat:rollout": rollout_id[:256],
                    "edgeplat:phase": str(phase),
                    "edgeplat:release": f"{spec.name}@{spec.version}"[:256],
                },
                clientToken=_token("deploy", group_arn, name),
            )
            created = (out["deploymentId"],)
        return self._result("deploy", rollout_id, phase, ours, changed, created, skipped)

    def rollback(self, devices: list[DeviceRef], *, rollout_id: str, to: ReleaseSpec | None) -> DeployResult:
        target = ReleaseSpec.of(to) if to is not None else None
        ours, skipped = self._split(devices)
        components = (
            {target.greengrass.component: {"componentVersion": target.greengrass.version}}
            if target is not None and target.greengrass is not None
            else {}
        )
        created = []
        for group, arn in self._rollout_groups(rollout_id):
            deployments = self._deployments(arn)
            name = f"{group}-rollback"
            if any(d["deploymentName"] == name for d in deployments):
                continue
            for d in deployments:
                if d["deploymentStatus"] == "ACTIVE":
                    self._call(self.gg, "cancel_deployment", deploymentId=d["deploymentId"])
            out = self._call(
                self.gg,
                "create_deployment",
                targetArn=arn,
                deploymentName=name,
                components=components,
                deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"},
                iotJobConfiguration=self.policy(rollout_id).job_configuration(),
                tags={"edgeplat:rollout": rollout_id[:256], "edgeplat:action": "rollback"},
                clientToken=_token("rollback", arn, name),
            )
            created.append(out["deploymentId"])
        if target is None:
            created += self._restore_previous(ours, rollout_id)
        changed = [d.key for d in ours] if created else []
        return self._result("rollback", rollout_id, None, ours, changed, created, skipped)

    def status(self, rollout_id: str | None = None) -> BackendStatus:
        prefix = _group_prefix(rollout_id) if rollout_id is not None else GROUP_PREFIX
        out = []
        for group, arn in self._groups(prefix):
            latest = [d for d in self._deployments(arn) if d["isLatestForTarget"]]
            deployment = (
                self._call(self.gg, "get_deployment", deploymentId=latest[0]["deploymentId"])
                if latest
                else None
            )
            rollout, phase = self._group_rollout(group)
            for thing in self._members(group):
                out.append(self._device_status(thing, rollout, phase, deployment))
        return BackendStatus(self.name, rollout_id, tuple(out))

    # ------------------------------------------------------------------ internals

    def _device_status(
        self, thing: str, rollout: str | None, phase: int | None, deployment: Any
    ) -> DeviceStatus:
        attrs = self._call(self.iot, "describe_thing", thingName=thing).get("attributes", {})
        tenant, device = attrs.get("tenant_id", ""), attrs.get("device_id", thing)
        components = (deployment or {}).get("components") or {}
        desired = next(iter(components.values()))["componentVersion"] if len(components) == 1 else None
        execution = None
        if deployment is not None:
            for e in self._effective(thing):
                if e["deploymentId"] == deployment["deploymentId"]:
                    execution = e["coreDeviceExecutionStatus"]
        rollback = deployment is not None and deployment.get("deploymentName", "").endswith("-rollback")
        state = _STATES.get(execution or "QUEUED", "pending")
        if rollback:
            state = "rolled_back" if state == "succeeded" else "rolling_back"
        reported = self.reported(tenant, device) if self.reported else None
        return DeviceStatus(
            tenant_id=tenant,
            device_id=device,
            rollout_id=rollout,
            phase=phase,
            desired_version=desired,
            acknowledged=execution in ACKED,
            reported_version=reported[0] if reported else None,
            state=state,
            detail=f"thing {thing}, deployment {deployment['deploymentId']}"
            if deployment
            else f"thing {thing}",
        )

    def _record_previous(self, thing: str, component: str, rollout_id: str) -> None:
        """Store in the thing's ``edgeplat_prev`` attribute the ``component`` version it runs now,
        once per rollout: a retried deploy, after the new version landed, must not overwrite it."""
        mark = _rollout_mark(rollout_id)
        attrs = self._call(self.iot, "describe_thing", thingName=thing).get("attributes", {})
        if attrs.get(PREVIOUS_ATTR, "").split(":", 1)[0] == mark:
            return
        version = self.installed_version(thing, component) or ""
        self._call(
            self.iot,
            "update_thing",
            thingName=thing,
            attributePayload={
                "attributes": {
                    PREVIOUS_ATTR: f"{mark}:{sanitize_name(version, allowed=_ATTR_CHARS, max_len=700)}"
                },
                "merge": True,
            },
        )

    def installed_version(self, thing: str, component: str) -> str | None:
        """The ``component`` version installed on the core device ``thing`` (None: not installed
        or not a registered core device)."""
        try:
            for c in self._pages(
                self.gg, "list_installed_components", "installedComponents", coreDeviceThingName=thing
            ):
                if c.get("componentName") == component:
                    return c.get("componentVersion")
        except BackendError as exc:
            if exc.__cause__ is not None and _code(exc.__cause__) == "ResourceNotFoundException":
                return None
            raise
        return None

    def _restore_previous(self, devices: list[DeviceRef], rollout_id: str) -> list[str]:
        """One thing deployment per device back to the component version recorded at deploy time."""
        mark = _rollout_mark(rollout_id)
        created = []
        for d in devices:
            thing = self.thing_name(d)
            try:
                described = self._call(self.iot, "describe_thing", thingName=thing)
            except BackendError as exc:
                if exc.__cause__ is not None and _code(exc.__cause__) == "ResourceNotFoundException":
                    continue
                raise
            recorded = described.get("attributes", {}).get(PREVIOUS_ATTR, "")
            got, _, version = recorded.partition(":")
            component = self._rollout_component(rollout_id)
            if got != mark or not version or component is None:
                continue  # nothing recorded for this rollout, or nothing ran before: the group rollback removed it
            name = f"edgeplat-{mark}-restore-{thing}"[:256]
            out = self._call(
                self.gg,
                "create_deployment",
                targetArn=described["thingArn"],
                deploymentName=name,
                components={component: {"componentVersion": version}},
                deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"},
                tags={"edgeplat:rollout": rollout_id[:256], "edgeplat:action": "restore"},
                clientToken=_token("restore", thing, rollout_id),
            )
            created.append(out["deploymentId"])
        return created

    def _rollout_component(self, rollout_id: str) -> str | None:
        """The component the rollout deployed (from its phase deployments' tags and components)."""
        if rollout_id in self._components:
            return self._components[rollout_id]
        for _, arn in self._rollout_groups(rollout_id):
            for d in self._deployments(arn):
                if d["deploymentName"].endswith("-rollback"):
                    continue
                got = self._call(self.gg, "get_deployment", deploymentId=d["deploymentId"])
                names = list((got.get("components") or {}).keys())
                if len(names) == 1:
                    self._components[rollout_id] = names[0]
                    return names[0]
        return None

    def _ensure_group(self, group: str, rollout_id: str, phase: int) -> str:
        try:
            return self._call(self.iot, "describe_thing_group", thingGroupName=group)["thingGroupArn"]
        except BackendError as exc:
            if exc.__cause__ is None or _code(exc.__cause__) != "ResourceNotFoundException":
                raise
        out = self._call(
            self.iot,
            "create_thing_group",
            thingGroupName=group,
            thingGroupProperties={
                "thingGroupDescription": f"edgeplat rollout {rollout_id} phase {phase}"[:2028],
                "attributePayload": {
                    "attributes": {
                        "rollout": sanitize_name(rollout_id, allowed=_ATTR_CHARS, max_len=800),
                        "phase": str(phase),
                    }
                },
            },
            tags=[{"Key": "edgeplat:rollout", "Value": rollout_id[:256]}],
        )
        return out["thingGroupArn"]

    def _ensure_thing(self, d: DeviceRef) -> str:
        thing = self.thing_name(d)
        try:
            self._call(self.iot, "describe_thing", thingName=thing)
        except BackendError as exc:
            if exc.__cause__ is None or _code(exc.__cause__) != "ResourceNotFoundException":
                raise
            self._call(
                self.iot,
                "create_thing",
                thingName=thing,
                attributePayload={
                    "attributes": {
                        "tenant_id": sanitize_name(d.tenant_id, allowed=_ATTR_CHARS, max_len=800),
                        "device_id": sanitize_name(d.device_id, allowed=_ATTR_CHARS, max_len=800),
                    }
                },
            )
        return thing

    def _groups_of(self, thing: str) -> set[str]:
        return {
            g["groupName"]
            for g in self._pages(self.iot, "list_thing_groups_for_thing", "thingGroups", thingName=thing)
        }

    def _groups(self, prefix: str) -> list[tuple[str, str]]:
        groups = self._pages(self.iot, "list_thing_groups", "thingGroups", namePrefixFilter=prefix)
        return sorted((g["groupName"], g["groupArn"]) for g in groups)

    def _rollout_groups(self, rollout_id: str) -> list[tuple[str, str]]:
        prefix = _group_prefix(rollout_id)
        return [(g, a) for g, a in self._groups(prefix) if g[len(prefix) :].isdigit()]

    def _group_rollout(self, group: str) -> tuple[str | None, int | None]:
        attrs = (
            self._call(self.iot, "describe_thing_group", thingGroupName=group)
            .get("thingGroupProperties", {})
            .get("attributePayload", {})
            .get("attributes", {})
        )
        phase = attrs.get("phase")
        return attrs.get("rollout"), int(phase) if phase and phase.isdigit() else None

    def _members(self, group: str) -> list[str]:
        return sorted(self._pages(self.iot, "list_things_in_thing_group", "things", thingGroupName=group))

    def _deployments(self, target_arn: str) -> list[dict[str, Any]]:
        return list(
            self._pages(self.gg, "list_deployments", "deployments", targetArn=target_arn, historyFilter="ALL")
        )

    def _effective(self, thing: str) -> list[dict[str, Any]]:
        try:
            return list(
                self._pages(
                    self.gg, "list_effective_deployments", "effectiveDeployments", coreDeviceThingName=thing
                )
            )
        except BackendError as exc:
            if exc.__cause__ is not None and _code(exc.__cause__) == "ResourceNotFoundException":
                return []  # not (yet) registered as a Greengrass core device
            raise

    def _pages(self, client: Any, method: str, key: str, **kwargs: Any) -> Iterator[Any]:
        token = None
        while True:
            out = self._call(client, method, **kwargs, **({"nextToken": token} if token else {}))
            yield from out.get(key, [])
            token = out.get("nextToken")
            if not token:
                return

    def _call(self, client: Any, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(client, method)(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            fields = exc.response.get("fields") or []
            where = "; ".join(f"{f.get('name')}: {f.get('message')}" for f in fields if isinstance(f, dict))
            raise BackendError(
                f"greengrass backend: {client.meta.service_model.service_name}.{method} failed with "
                f"{err.get('Code')}: {err.get('Message')}{f' ({where})' if where else ''}; "
                + _advice(err.get("Code"))
            ) from exc
        except BotoCoreError as exc:
            raise BackendError(
                f"greengrass backend: {client.meta.service_model.service_name}.{method} failed: {exc}; check the "
                "endpoint URL, region and credentials"
            ) from exc


def _code(exc: BaseException) -> str | None:
    return getattr(exc, "response", {}).get("Error", {}).get("Code")


def _advice(code: str | None) -> str:
    return {
        "ValidationException": "the request does not match the API's rules: fix the named field in the rollout "
        "spec (release.greengrass component name/version) or the backend settings",
        "AccessDeniedException": "grant the platform's IAM role greengrass:* and iot:* on the fleet's things",
        "ResourceNotFoundException": "the named resource does not exist in this account/region",
        "ThrottlingException": "the API throttled the call; the sensor retries on its next tick",
    }.get(code or "", "see the message for the cause")
