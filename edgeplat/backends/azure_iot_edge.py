"""Azure IoT Edge fleet backend: twin tags per phase and one layered deployment per (rollout, phase).

``deploy`` tags each device's twin ``tags.edgeplat.rollouts.<rollout> = "p<phase>"`` (a
device keeps the earliest phase it got) and creates the layered deployment (an IoT Hub
configuration) ``edgeplat-<rollout>-p<phase>``: ``$edgeAgent``
``properties.desired.modules.<module>`` with the release's image, targeting the devices of
phases 0..phase (``tags.edgeplat.rollouts.<rollout>='p0' OR ...``), at priority
``base_priority + 10 + phase`` so it wins over the base deployment and over earlier phases.
Repeating a deploy finds the configuration by id and only updates what may change (target
condition, priority, labels): IoT Hub forbids changing a deployment's content.

``rollback`` deletes the rollout's layers, so every targeted device (also one offline now,
when it reconnects) falls back to the base deployment, i.e. the previous release, and
replaces the phase tags by ``tags.edgeplat.rollbacks.<rollout>``; that marker stops a
retried ``deploy`` of the rolled-back rollout from putting the layer back.

``status`` finds the rollout's devices with an IoT Hub query on the tags and reads each
device's ``$edgeAgent`` module twin: the module image it reports is the reported version,
and reporting the desired image counts as acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable
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

PLATFORM = "iot_edge"
TAG_ROOT = "edgeplat"
CONFIG_PREFIX = "edgeplat-"


def rollout_tag(rollout_id: str) -> str:
    """The twin tag name for a rollout (twin property names may not contain '.', '$' or spaces)."""
    return sanitize_name(rollout_id, allowed="a-zA-Z0-9_-", max_len=64, replacement="_")


def configuration_id(rollout_id: str, phase: int) -> str:
    return f"{_config_prefix(rollout_id)}{phase}"


def _config_prefix(rollout_id: str) -> str:
    return f"{CONFIG_PREFIX}{sanitize_name(rollout_id.lower(), allowed='a-z0-9_-', max_len=100)}-p"


def target_condition(rollout_id: str, phase: int) -> str:
    tag = rollout_tag(rollout_id)
    return " OR ".join(f"tags.{TAG_ROOT}.rollouts.{tag}='p{k}'" for k in range(phase + 1))


class AzureIotEdgeBackend(FleetBackend):
    """Layered IoT Edge deployments selected by twin tags (see module doc)."""

    name = "azure_iot_edge"
    platform = PLATFORM
    artifact = ReleaseArtifact("iot_edge", "IoT Edge module", "module, image")
    staging_unsupported = (
        "IoT Edge replaces a module's container in place (no A/B slots to stage on); "
        "each phase's layered deployment pulls and starts the image"
    )

    def __init__(
        self,
        registry: Any,
        configurations: Any,
        *,
        base_priority: int = 0,
        hub_device_id: Callable[[DeviceRef], str] = lambda d: d.device_id,
        reported: Reported | None = None,
        create_options: str = "",
    ) -> None:
        """``registry``: an ``IoTHubRegistryManager`` (twins, queries); ``configurations``: an
        ``IoTHubConfigurationManager``. ``base_priority`` is the priority of the fleet's base
        deployment; layers go 10 + phase above it."""
        self.registry = registry
        self.configurations = configurations
        self.base_priority = base_priority
        self.hub_device_id = hub_device_id
        self.reported = reported
        self.create_options = create_options

    @classmethod
    def from_connection_string(cls, connection_string: str, *, base_url: str | None = None, **options: Any):
        """Managers from a service connection string. ``base_url`` (e.g. ``http://127.0.0.1:8443``)
        replaces the ``https://<HostName>`` the SDK derives, for a private endpoint or a test double;
        the SAS token is still made for the connection string's HostName."""
        from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager

        registry = IoTHubRegistryManager.from_connection_string(connection_string)
        configurations = IoTHubConfigurationManager.from_connection_string(connection_string)
        for manager in (registry, configurations):
            # msrest's urllib3 Retry backs off on 408/5xx; IoT Hub throttles with 429 (Retry-After honoured)
            # (and the registry query is a POST, which urllib3 2 does not retry by default: it reads only)
            policy = manager.protocol.config.retry_policy.policy
            policy.status_forcelist = sorted({*policy.status_forcelist, 429})
            policy.allowed_methods = frozenset({*(policy.allowed_methods or ()), "POST"})
            if base_url is not None:
                # msrest joins every operation path onto config.base_url
                manager.protocol.config.base_url = base_url.rstrip("/")
        return cls(registry, configurations, **options)

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
        tag = rollout_tag(rollout_id)
        twins = {d.key: self._call("get_twin", self.registry.get_twin, self.hub_device_id(d)) for d in ours}
        if any(_tags(t).get("rollbacks", {}).get(tag) for t in twins.values()):
            # the rollout was rolled back: a retried deploy must not bring the layer back
            return self._result("deploy", rollout_id, phase, ours, skipped=skipped)
        changed = []
        for d in ours:
            current = _tags(twins[d.key]).get("rollouts", {}).get(tag)
            if isinstance(current, str) and current[1:].isdigit() and int(current[1:]) <= phase:
                continue  # already in this or an earlier phase: a device never changes phase
            patch = {TAG_ROOT: {"tenant": d.tenant_id, "rollouts": {tag: f"p{phase}"}}}
            self._update_tags(d, patch, twins[d.key].etag)
            changed.append(d.key)
        deployments = self._ensure_layer(spec, rollout_id, phase)
        return self._result("deploy", rollout_id, phase, ours, changed, deployments, skipped)

    def rollback(self, devices: list[DeviceRef], *, rollout_id: str, to: ReleaseSpec | None) -> DeployResult:
        ours, skipped = self._split(devices)
        deleted = []
        for config in self._layers(rollout_id):
            self._call("delete_configuration", self.configurations.delete_configuration, config.id, "*")
            deleted.append(config.id)
        tag = rollout_tag(rollout_id)
        changed = []
        for d in ours:
            twin = self._call("get_twin", self.registry.get_twin, self.hub_device_id(d))
            if tag not in _tags(twin).get("rollouts", {}):
                continue
            back = ReleaseSpec.of(to).version if to is not None else "base"
            patch = {
                TAG_ROOT: {
                    "rollouts": {tag: None},
                    "rollbacks": {tag: sanitize_name(back, allowed="a-zA-Z0-9._-", max_len=64)},
                }
            }
            self._update_tags(d, patch, twin.etag)
            changed.append(d.key)
        return self._result("rollback", rollout_id, None, ours, changed, deleted, skipped)

    def status(self, rollout_id: str | None = None) -> BackendStatus:
        from azure.iot.hub.models import QuerySpecification

        paths = (
            [f"{TAG_ROOT}.rollouts", f"{TAG_ROOT}.rollbacks"]
            if rollout_id is None
            else [
                f"{TAG_ROOT}.rollouts.{rollout_tag(rollout_id)}",
                f"{TAG_ROOT}.rollbacks.{rollout_tag(rollout_id)}",
            ]
        )
        layers = {c.id: c for c in self._layers(rollout_id)}
        out: dict[tuple[str, str, str], DeviceStatus] = {}
        for path in paths:
            token = None
            while True:
                q = QuerySpecification(query=f"SELECT * FROM devices WHERE IS_DEFINED(tags.{path})")
                result = self._call("query_iot_hub", self.registry.query_iot_hub, q, token)
                for twin in result.items or []:
                    for st in self._twin_status(twin, rollout_id, layers):
                        out[(st.tenant_id, st.device_id, st.rollout_id or "")] = st
                token = result.continuation_token
                if not token:
                    break
        return BackendStatus(self.name, rollout_id, tuple(out[k] for k in sorted(out)))

    # ------------------------------------------------------------------ internals

    def _twin_status(self, twin: Any, rollout_id: str | None, layers: dict[str, Any]) -> list[DeviceStatus]:
        tags = (twin.get("tags") if isinstance(twin, dict) else twin.tags) or {}
        ours = tags.get(TAG_ROOT, {})
        device = twin["deviceId"] if isinstance(twin, dict) else twin.device_id
        tenant = ours.get("tenant", "")
        wanted = rollout_tag(rollout_id) if rollout_id is not None else None
        running = self._agent_images(device)
        reported = self.reported(tenant, device) if self.reported else None
        out = []
        for tag, value in {
            **ours.get("rollouts", {}),
            **{k: None for k in ours.get("rollbacks", {})},
        }.items():
            if wanted is not None and tag != wanted:
                continue
            phase = int(value[1:]) if isinstance(value, str) and value[1:].isdigit() else None
            image, desired = self._desired(layers, tag, phase)
            acked = image is not None and image in running.values()
            version = reported[0] if reported else (desired if acked else None)
            state = "rolled_back" if phase is None else ("succeeded" if acked else "pending")
            out.append(
                DeviceStatus(
                    tenant_id=tenant,
                    device_id=device,
                    rollout_id=rollout_id or tag,
                    phase=phase,
                    desired_version=desired,
                    acknowledged=acked,
                    reported_version=version,
                    state=state,
                    detail=f"running images: {sorted(running.values())}"
                    if running
                    else "no $edgeAgent report",
                )
            )
        return out

    def _desired(self, layers: dict[str, Any], tag: str, phase: int | None) -> tuple[str | None, str | None]:
        """(image, release version) of the layer that applies to a device of ``phase``."""
        if phase is None:
            return None, None
        # the highest-phase layer whose condition covers the device wins (highest priority)
        for config in sorted(layers.values(), key=lambda c: c.priority or 0, reverse=True):
            if f"tags.{TAG_ROOT}.rollouts.{tag}='p{phase}'" in (config.target_condition or ""):
                agent = (config.content.modules_content or {}).get("$edgeAgent", {})
                for key, module in agent.items():
                    if key.startswith("properties.desired.modules."):
                        return module.get("settings", {}).get("image"), (config.labels or {}).get(
                            "edgeplat-version"
                        )
        return None, None

    def _agent_images(self, device: str) -> dict[str, str]:
        try:
            twin = self._call("get_module_twin", self.registry.get_module_twin, device, "$edgeAgent")
        except BackendError as exc:
            if getattr(getattr(exc.__cause__, "response", None), "status_code", None) == 404:
                return {}
            raise
        modules = ((twin.properties.reported or {}) if twin.properties else {}).get("modules", {})
        return {
            name: m.get("settings", {}).get("image") for name, m in modules.items() if isinstance(m, dict)
        }

    def _ensure_layer(self, spec: ReleaseSpec, rollout_id: str, phase: int) -> tuple[str, ...]:
        from azure.iot.hub.models import Configuration, ConfigurationContent

        assert spec.iot_edge is not None
        cid = configuration_id(rollout_id, phase)
        module = {
            "settings": {"image": spec.iot_edge.image, "createOptions": self.create_options},
            "type": "docker",
            "status": "running",
            "restartPolicy": "always",
            "version": "1.0",
        }
        content = {"$edgeAgent": {f"properties.desired.modules.{spec.iot_edge.module}": module}}
        labels = {
            "edgeplat-rollout": rollout_id,
            "edgeplat-phase": str(phase),
            "edgeplat-release": spec.name,
            "edgeplat-version": spec.version,
        }
        config = Configuration(
            id=cid,
            schema_version="1.0",
            labels=labels,
            content=ConfigurationContent(modules_content=content),
            target_condition=target_condition(rollout_id, phase),
            priority=self.base_priority + 10 + phase,
        )
        existing = self._get_configuration(cid)
        if existing is None:
            self._call("create_configuration", self.configurations.create_configuration, config)
            return (cid,)
        if (existing.content.modules_content or {}) != content:
            raise BackendError(
                f"azure_iot_edge backend: deployment {cid} already exists with other content (another image for "
                f"module {spec.iot_edge.module}); IoT Hub cannot change a deployment's content: roll this rollout "
                "back and launch a new rollout for the new release"
            )
        if (existing.target_condition, existing.priority, existing.labels) == (
            config.target_condition,
            config.priority,
            labels,
        ):
            return ()
        self._call("update_configuration", self.configurations.update_configuration, config, existing.etag)
        return (cid,)

    def _get_configuration(self, cid: str) -> Any:
        try:
            return self._call("get_configuration", self.configurations.get_configuration, cid)
        except BackendError as exc:
            if getattr(getattr(exc.__cause__, "response", None), "status_code", None) == 404:
                return None
            raise

    def _layers(self, rollout_id: str | None) -> list[Any]:
        prefix = _config_prefix(rollout_id) if rollout_id is not None else CONFIG_PREFIX
        # get_configurations has no paging in the SDK: ask for the service maximum
        configs = self._call("get_configurations", self.configurations.get_configurations, 1000) or []
        return [
            c
            for c in configs
            if c.id.startswith(prefix) and (rollout_id is None or c.id[len(prefix) :].isdigit())
        ]

    def _update_tags(self, d: DeviceRef, tags: dict[str, Any], etag: str | None) -> None:
        from azure.iot.hub.models import Twin

        self._call("update_twin", self.registry.update_twin, self.hub_device_id(d), Twin(tags=tags), etag)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        from msrest.exceptions import ClientRequestError, HttpOperationError

        try:
            return fn(*args)
        except HttpOperationError as exc:
            status = getattr(exc.response, "status_code", "?")
            try:
                body = exc.response.json()
                detail = body.get("Message") or body.get("message") or exc.response.text
            except ValueError:
                detail = getattr(exc.response, "text", "")
            raise BackendError(
                f"azure_iot_edge backend: IoT Hub {what}({', '.join(map(repr, args[:1]))}) failed with HTTP "
                f"{status}: {detail}; " + _advice(status)
            ) from exc
        except ClientRequestError as exc:
            raise BackendError(
                f"azure_iot_edge backend: IoT Hub {what} could not reach the hub: {exc}; check the connection "
                "string's HostName (or base_url) and the network"
            ) from exc


def _tags(twin: Any) -> dict[str, Any]:
    return (twin.tags or {}).get(TAG_ROOT, {}) if twin is not None else {}


def _advice(status: Any) -> str:
    return {
        400: "the hub rejected the request: fix the named field (release.iot_edge module/image in the spec)",
        401: "the connection string's key is wrong or expired: use a service policy with registry write rights",
        404: "the device or deployment does not exist in this hub: register the device first",
        409: "a deployment with this id already exists",
        412: "the twin or deployment changed meanwhile (etag mismatch): the sensor retries on its next tick",
    }.get(status, "see the hub's message for the cause")
