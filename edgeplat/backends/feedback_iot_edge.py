"""IoT Edge feedback: the module image and ``runtimeStatus`` each device's ``$edgeAgent`` reports.

One registry query, ``SELECT * FROM devices.modules WHERE moduleId = '$edgeAgent'``, paged
(``page_size`` module twins a page, each page one call of the pass's ``PassBudget``), reads
every edge agent's reported properties: ``modules.<module>.settings.image`` and
``runtimeStatus`` (running, backoff, failed, stopped, unknown). The image maps to a release
version through ``versions`` (image -> version: the rollout's release and the ones it replaced);
an unknown image reports its tag. A device that reports the desired image acknowledged the
rollout's layered deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from edgeplat.backends.base import DeviceRef
from edgeplat.backends.feedback import PassBudget, PlatformFact
from edgeplat.backends.feedback_greengrass import Observed

AGENT_QUERY = "SELECT * FROM devices.modules WHERE moduleId = '$edgeAgent'"


class IotEdgeObserver:
    """Reads what IoT Hub's edge agents report for a rollout's devices (see module doc)."""

    def __init__(
        self,
        registry: Any,
        *,
        hub_device_id: Callable[[DeviceRef], str] = lambda d: d.device_id,
        page_size: int = 1000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.registry, self.hub_device_id, self.page_size, self.clock = (
            registry,
            hub_device_id,
            page_size,
            clock,
        )

    def observe(
        self,
        devices: Sequence[DeviceRef],
        *,
        module: str,
        desired_image: str,
        versions: Mapping[str, str],
        budget: PassBudget,
    ) -> Observed:
        from azure.iot.hub.models import QuerySpecification

        out = Observed()
        wanted = {self.hub_device_id(d): d for d in devices}
        found: set[str] = set()
        token = None
        while True:
            if not budget.take():
                out.left = [d for hub_id, d in wanted.items() if hub_id not in found]
                return out
            result = self.registry.query_iot_hub(QuerySpecification(query=AGENT_QUERY), token, self.page_size)
            out.calls += 1
            for twin in result.items or []:
                hub_id = _get(twin, "device_id", "deviceId")
                d = wanted.get(hub_id)
                if d is None:
                    continue
                found.add(hub_id)
                out.facts.append(self._fact(d, twin, module, desired_image, versions))
            token = result.continuation_token
            if not token:
                break
        for hub_id, d in wanted.items():
            if hub_id not in found:  # no $edgeAgent twin yet: the device never connected
                out.facts.append(
                    PlatformFact(
                        d.tenant_id, d.device_id, None, None, False, self.clock(), "no $edgeAgent report"
                    )
                )
        return out

    def _fact(
        self, d: DeviceRef, twin: Any, module: str, desired_image: str, versions: Mapping[str, str]
    ) -> PlatformFact:
        props = _get(twin, "properties", "properties")
        reported = (
            props.get("reported") if isinstance(props, dict) else getattr(props, "reported", None)
        ) or {}
        m = (reported.get("modules") or {}).get(module)
        if not isinstance(m, dict):
            return PlatformFact(
                d.tenant_id, d.device_id, None, None, False, self.clock(), f"no module {module}"
            )
        image = (m.get("settings") or {}).get("image")
        version = versions.get(image) if image else None
        if version is None and isinstance(image, str) and ":" in image.rsplit("/", 1)[-1]:
            version = image.rsplit(":", 1)[1]
        return PlatformFact(
            d.tenant_id,
            d.device_id,
            version,
            m.get("runtimeStatus"),
            image == desired_image,
            self.clock(),
            f"image {image}",
        )


def _get(obj: Any, attr: str, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, attr, None)
