"""Read the platforms' device registries, page by page, into ``DeviceClaim`` values.

Greengrass: ``greengrassv2.list_core_devices`` (status, last status update) joined with the
IoT things' attributes (``iot.list_things``: ``tenant_id``/``device_id``, the rest become
tags) and thing-group membership (``iot.list_thing_groups`` + ``list_things_in_thing_group``,
tag ``thing_group.<name>``; the rollouts' own ``edgeplat-`` groups are skipped). Every call
is a paginated list through boto3's paginators (a 100,000-device account costs a few
thousand calls, never one per device); throttling is retried by the client's retry mode.

IoT Hub: one registry query, ``SELECT * FROM devices WHERE capabilities.iotEdge = true``,
paged with continuation tokens: twin tags (``tenant`` or ``edgeplat.tenant`` names the
tenant; other string tags are kept), ``connectionState`` and ``lastActivityTime``.

A device whose tenant the registry does not name is counted in ``Unassigned`` and left out
(``default_tenant`` assigns one), so an import never invents ownership.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgeplat.inventory.claims import DeviceClaim

GREENGRASS_PLATFORM = "greengrass"
IOT_EDGE_PLATFORM = "iot_edge"
ROLLOUT_GROUP_PREFIX = "edgeplat-"
EDGE_QUERY = "SELECT * FROM devices WHERE capabilities.iotEdge = true"


@dataclass
class Unassigned:
    """Devices a registry listed without a tenant (by source), and how many pages were read."""

    devices: dict[str, list[str]] = field(default_factory=dict)
    pages: dict[str, int] = field(default_factory=dict)

    def add(self, source: str, device: str) -> None:
        self.devices.setdefault(source, []).append(device)

    def page(self, source: str) -> None:
        self.pages[source] = self.pages.get(source, 0) + 1


def _pages(client: Any, method: str, key: str, seen: Unassigned, source: str, **kwargs: Any) -> Iterator[Any]:
    for page in client.get_paginator(method).paginate(**kwargs):
        seen.page(source)
        yield from page.get(key, [])


def greengrass_claims(
    iot: Any, gg: Any, *, default_tenant: str | None = None, seen: Unassigned | None = None
) -> Iterator[DeviceClaim]:
    """Claims for every Greengrass core device of the account (see module doc)."""
    seen = seen if seen is not None else Unassigned()
    attrs: dict[str, dict[str, str]] = {}
    for thing in _pages(iot, "list_things", "things", seen, "greengrass", PaginationConfig={"PageSize": 250}):
        attrs[thing["thingName"]] = thing.get("attributes") or {}
    groups: dict[str, list[str]] = {}
    for g in _pages(
        iot, "list_thing_groups", "thingGroups", seen, "greengrass", PaginationConfig={"PageSize": 250}
    ):
        name = g["groupName"]
        if name.startswith(ROLLOUT_GROUP_PREFIX):
            continue
        for thing in _pages(
            iot,
            "list_things_in_thing_group",
            "things",
            seen,
            "greengrass",
            thingGroupName=name,
            PaginationConfig={"PageSize": 250},
        ):
            groups.setdefault(thing, []).append(name)
    for core in _pages(
        gg, "list_core_devices", "coreDevices", seen, "greengrass", PaginationConfig={"PageSize": 100}
    ):
        thing = core["coreDeviceThingName"]
        a = attrs.get(thing, {})
        tenant = a.get("tenant_id") or default_tenant
        if not tenant:
            seen.add("greengrass", thing)
            continue
        tags = {
            k: v for k, v in a.items() if k not in ("tenant_id", "device_id") and not k.startswith("edgeplat")
        }
        tags.update({f"thing_group.{g}": "true" for g in groups.get(thing, [])})
        status = core.get("status")
        yield DeviceClaim(
            tenant,
            a.get("device_id") or thing,
            "greengrass",
            platform=GREENGRASS_PLATFORM,
            tags=tags,
            connectivity=status.lower() if isinstance(status, str) else None,
            last_seen=_utc(core.get("lastStatusUpdateTimestamp")),
        )


def iot_edge_claims(
    registry: Any, *, default_tenant: str | None = None, page_size: int = 1000, seen: Unassigned | None = None
) -> Iterator[DeviceClaim]:
    """Claims for every IoT Edge device of the hub (see module doc)."""
    from azure.iot.hub.models import QuerySpecification

    seen = seen if seen is not None else Unassigned()
    token = None
    while True:
        result = registry.query_iot_hub(QuerySpecification(query=EDGE_QUERY), token, page_size)
        seen.page("iot_hub")
        for twin in result.items or []:
            claim = _twin_claim(twin, default_tenant)
            if claim is None:
                seen.add("iot_hub", _get(twin, "device_id", "deviceId"))
            else:
                yield claim
        token = result.continuation_token
        if not token:
            return


def _twin_claim(twin: Any, default_tenant: str | None) -> DeviceClaim | None:
    tags = _get(twin, "tags", "tags") or {}
    ours = tags.get("edgeplat") if isinstance(tags.get("edgeplat"), dict) else {}
    tenant = tags.get("tenant") or ours.get("tenant") or default_tenant
    if not isinstance(tenant, str) or not tenant:
        return None
    flat = {k: v for k, v in tags.items() if isinstance(v, str) and k != "tenant"}
    state = _get(twin, "connection_state", "connectionState")
    return DeviceClaim(
        tenant,
        _get(twin, "device_id", "deviceId"),
        "iot_hub",
        platform=IOT_EDGE_PLATFORM,
        tags=flat,
        connectivity=state.lower() if isinstance(state, str) else None,
        last_seen=_utc(_get(twin, "last_activity_time", "lastActivityTime")),
    )


def _get(obj: Any, attr: str, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, attr, None)


def _utc(value: Any) -> datetime | None:
    """A timestamp from an API (datetime, epoch seconds or ISO text) in UTC; the epoch 0 the
    hub reports for 'never' is None."""
    if value is None:
        return None
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return None if value.year < 1971 else value.astimezone(UTC)
