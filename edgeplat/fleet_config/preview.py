"""The operator's preview of a ``fleet/`` tree before pushing: one device's resolved values.

The same parse, checks and resolution the platform applies (``layers``, ``resolve``), run on a
working directory, so what the preview shows is what a push of that tree would set, and an
error it lists is one the platform would refuse the commit for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_sync.rules import RuleSet
from edgeplat.fleet_config.layers import FleetError, parse_tree
from edgeplat.fleet_config.resolve import Inventory, Resolution, check


@dataclass
class Preview:
    """One device's resolved values (with the layer each comes from) and the tree's errors."""

    tenant_id: str
    device_id: str
    tags: dict[str, Any]
    values: Resolution
    errors: list[FleetError]

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(namespace, key, field, value, layer file) sorted by field."""
        return [(*k, s.value, s.path) for k, s in sorted(self.values.items())]

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "device_id": self.device_id,
            "tags": self.tags,
            "values": [
                {
                    "namespace": ns,
                    "key": k,
                    "field": f,
                    "value": json.loads(s.value),
                    "layer": s.path,
                    "kind": s.kind.label,
                }
                for (ns, k, f), s in sorted(self.values.items())
            ],
            "errors": [e.as_dict() for e in self.errors],
        }


def preview(
    files: Mapping[str, str],
    inventory: Inventory,
    rules: RuleSet,
    tenant_id: str,
    device_id: str,
    tags: Mapping[str, str] | None = None,
) -> Preview:
    """Resolve ``device_id`` from ``files`` with its inventory tags, ``tags`` laid over them
    (a device not yet registered may be previewed with ``tags`` alone)."""
    inv = {t: dict(devices) for t, devices in inventory.items()}
    device_tags = {**inv.get(tenant_id, {}).get(device_id, {}), **(tags or {})}
    if tags is not None or device_id in inv.get(tenant_id, {}):
        inv.setdefault(tenant_id, {})[device_id] = device_tags
    tree = parse_tree(dict(files))
    resolved = check(tree, inv, rules)
    return Preview(
        tenant_id, device_id, device_tags, resolved.get(tenant_id, {}).get(device_id, {}), tree.errors
    )
