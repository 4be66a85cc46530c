"""A loopback double of the AWS IoT registry's listing calls, for inventories too big for moto.

Serves ``ListThings``, ``ListThingGroups`` and ``ListThingsInThingGroup`` with the same request
checks as ``greengrass_double`` (routes, members and values from botocore's ``iot`` model, SigV4
header for service ``iot``), paging in O(page) as the service does: moto re-scans its whole
registry for every page, which at 50,000 things costs more than the code under measurement.
Things and groups are set directly (``things``, ``groups``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import botocore.session

from tests.support.greengrass_double import ACCOUNT, REGION, GreengrassDouble, _page, _respond
from tests.support.http_double import serving


@dataclass
class IotRegistryDouble(GreengrassDouble):
    """Things (name -> attributes) and thing groups (name -> member things)."""

    model: Any = field(default_factory=lambda: botocore.session.get_session().get_service_model("iot"))
    operations: tuple[str, ...] = ("ListThings", "ListThingGroups", "ListThingsInThingGroup")
    signing_name: str = "iot"
    things: dict[str, dict[str, str]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)

    def _list_things(self, p: dict[str, Any]) -> dict[str, Any]:
        start = int(p.get("nextToken", 0))
        size = p.get("maxResults", 50)
        names = list(self.things)[start : start + size]
        out: dict[str, Any] = {
            "things": [
                {
                    "thingName": n,
                    "thingArn": f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/{n}",
                    "attributes": self.things[n],
                    "version": 1,
                }
                for n in names
            ]
        }
        if start + size < len(self.things):
            out["nextToken"] = str(start + size)
        return out

    def _list_thing_groups(self, p: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {"groupName": g, "groupArn": f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/{g}"}
            for g in self.groups
            if g.startswith(p.get("namePrefixFilter", ""))
        ]
        return _page(rows, p, "thingGroups")

    def _list_things_in_thing_group(self, p: dict[str, Any]) -> dict[str, Any]:
        start = int(p.get("nextToken", 0))
        size = p.get("maxResults", 50)
        members = self.groups.get(p["thingGroupName"], [])
        out: dict[str, Any] = {"things": members[start : start + size]}
        if start + size < len(members):
            out["nextToken"] = str(start + size)
        return out


@contextmanager
def running_iot_registry_double() -> Iterator[tuple[str, IotRegistryDouble]]:
    """Yield (endpoint URL, double) for an IoT registry double on loopback; stop it on exit."""
    double = IotRegistryDouble()
    with serving(_respond(double), name="iot-registry-double") as url:
        yield url, double
