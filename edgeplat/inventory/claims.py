"""What one source says about one device, and how several sources' claims become one row.

Sources, strongest first: ``operator`` (``edgeplat device register``), the platform
registries (``greengrass``: core devices and IoT things; ``iot_hub``: IoT Edge twins), then
``edge_agent`` (the platform and tags the device was enrolled with, carried in its signed
batch manifests). A weaker source never replaces a stronger one's value. When two sources
disagree (a device enrolled as ``edge_agent`` that IoT Hub lists as an IoT Edge device, a
device registered on both Greengrass and IoT Hub), the row keeps one value and records the
disagreement in ``conflicts``; a value already in the table is kept over an equally strong
newcomer, so a conflict never silently flips a device's platform. ``sources`` names where
each field came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RANK = {"operator": 3, "greengrass": 2, "iot_hub": 2, "edge_agent": 1}


@dataclass(frozen=True, slots=True)
class DeviceClaim:
    """One source's view of one device (None: the source says nothing about that field).

    ``connectivity`` is the source's own word: ``connected``/``disconnected`` (IoT Hub),
    ``healthy``/``unhealthy`` (Greengrass core device status), ``online`` (a batch arrived).
    """

    tenant_id: str
    device_id: str
    source: str
    platform: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    connectivity: str | None = None
    last_seen: datetime | None = None

    def __post_init__(self) -> None:
        if self.source not in RANK:
            raise ValueError(f"unknown inventory source {self.source!r}; use one of {sorted(RANK)}")

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant_id, self.device_id)


@dataclass
class Resolved:
    """The inventory fields of one ``devices`` row after folding in claims."""

    platform: str | None
    tags: dict[str, str]
    connectivity: str | None
    last_seen: datetime | None
    sources: dict[str, str]
    conflicts: list[dict[str, Any]]

    def columns(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "tags": json.dumps(self.tags, sort_keys=True) if self.tags else None,
            "connectivity": self.connectivity,
            "last_seen": self.last_seen,
            "sources": json.dumps(self.sources, sort_keys=True),
            "conflicts": json.dumps(self.conflicts, sort_keys=True) if self.conflicts else None,
        }


def current(row: Mapping[str, Any] | None) -> Resolved:
    """The inventory fields of a ``devices`` row as stored (a row the inventory never saw: sources empty;
    its platform and tags, set by whoever wrote it before, count as ``operator``'s)."""
    row = row or {}
    sources = _json(row.get("sources"), {})
    tags = {str(k): str(v) for k, v in _json(row.get("tags"), {}).items()}
    if not row.get("sources"):
        if row.get("platform"):
            sources["platform"] = "operator"
        sources.update({f"tags.{k}": "operator" for k in tags})
    return Resolved(
        row.get("platform"),
        tags,
        row.get("connectivity"),
        row.get("last_seen"),
        sources,
        _json(row.get("conflicts"), []),
    )


def resolve(row: Mapping[str, Any] | None, claims: Iterable[DeviceClaim]) -> Resolved:
    """Fold ``claims`` into the stored ``row`` (see module doc for the rules)."""
    out = current(row)
    claims = sorted(claims, key=lambda c: (-RANK[c.source], c.source))
    conflicts = {(c["field"]): c for c in out.conflicts}
    if any(c.platform for c in claims):
        _field(out, conflicts, "platform", out.platform, {c.source: c.platform for c in claims if c.platform})
    tag_names = sorted({k for c in claims for k in c.tags})
    for name in tag_names:
        value = _field(
            out,
            conflicts,
            f"tags.{name}",
            out.tags.get(name),
            {c.source: c.tags[name] for c in claims if name in c.tags},
        )
        if value is not None:
            out.tags[name] = value
    seen = [c for c in claims if c.last_seen is not None]
    latest = max(seen, key=lambda c: c.last_seen) if seen else None
    if latest is not None and (out.last_seen is None or latest.last_seen >= out.last_seen):
        out.last_seen = latest.last_seen
        out.sources["last_seen"] = latest.source
        if latest.connectivity is not None:
            out.connectivity = latest.connectivity
            out.sources["connectivity"] = latest.source
    elif out.connectivity is None:
        said = next((c for c in claims if c.connectivity), None)
        if said is not None:
            out.connectivity, out.sources["connectivity"] = said.connectivity, said.source
    out.conflicts = [conflicts[k] for k in sorted(conflicts)]
    return out


def _field(
    out: Resolved,
    conflicts: dict[str, dict[str, Any]],
    name: str,
    have: str | None,
    claimed: dict[str, str],
) -> str | None:
    """Pick ``name``'s value from the stored one and the claims; record a disagreement."""
    have_source = out.sources.get(name)
    candidates = dict(claimed)
    if have is not None and have_source is not None:
        candidates.setdefault(have_source, have)
    top = max(RANK[s] for s in candidates)
    strongest = {s: v for s, v in candidates.items() if RANK[s] == top}
    if have is not None and have_source in strongest:
        value, source = have, have_source  # an equally strong newcomer does not flip a stored value
    else:
        source = sorted(strongest)[0]
        value = strongest[source]
    if name == "platform":
        out.platform = value
    out.sources[name] = source
    # a source absent from this pass still claims what it claimed before (imports run per source)
    known = {**(conflicts.get(name) or {}).get("claims", {}), **candidates}
    if len(set(known.values())) > 1:
        conflicts[name] = {"field": name, "claims": dict(sorted(known.items())), "kept": value}
    else:
        conflicts.pop(name, None)
    return value


def _json(text: Any, default: Any) -> Any:
    if not text:
        return default
    if isinstance(text, dict | list):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default
