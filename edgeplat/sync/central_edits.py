"""Central state edits: merge them into ``device_state`` and send them down to the device.

An operator (the ``edit_device_state`` job, or Python) sets fields of a device's state
record. Each edit is stamped with a central HLC (node id ``central``, origin ``central``)
that is first pulled past every HLC already merged for that device, so a central edit is
causally after everything central has seen; it is merged with the same
:class:`edge_sync.merge.StateMerger` the device uses, under the same rules, so device and
central converge. Edits from a device whose clock runs ahead are deferred at ingest
(``hlc_too_far_ahead``) and never pull the central clock forward.

The edits reach the device through its signed desired-state document
(``DesiredStatePublisher.add_state_edits``) when a publisher is given.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from edge_sync.desired import StateEdit
from edge_sync.hlc import CENTRAL_NODE, HybridLogicalClock
from edge_sync.ids import validate_id
from edge_sync.merge import EDIT_SCHEMA
from edge_sync.rules import RuleSet
from edgeplat.lakehouse import Lakehouse, retried
from edgeplat.sync.central_state import STATE_TABLE, central_merger
from edgeplat.sync.env import wall_ms

Publish = Callable[[str, str, list[StateEdit]], object]


@dataclass(frozen=True)
class CentralEdit:
    """Set ``namespace``/``key``/``field`` of one device's state to ``value`` (JSON text)."""

    tenant_id: str
    device_id: str
    namespace: str
    key: str
    field: str
    value: str

    def __post_init__(self) -> None:
        validate_id("tenant", self.tenant_id)
        validate_id("device", self.device_id)
        for name in ("namespace", "key", "field"):
            if not getattr(self, name):
                raise ValueError(f"central edit needs a non-empty {name}")
        try:
            json.loads(self.value)
        except ValueError:
            raise ValueError(
                f"central edit value {self.value!r} for {self.namespace}.{self.field} is not JSON text; "
                'quote strings, e.g. "\\"blue\\"", and write numbers as 42'
            ) from None


@dataclass(frozen=True)
class CentralEditResult:
    """What applying central edits did."""

    edits: int
    hlcs: tuple[int, ...]
    conflicts: dict[str, int]
    published_devices: int


def apply_central_edits(
    lakehouse: Lakehouse,
    edits: Sequence[CentralEdit],
    rules: RuleSet,
    *,
    publish: Publish | None = None,
    wall: Callable[[], int] = wall_ms,
) -> CentralEditResult:
    """Stamp, merge and (with ``publish``) send down central state edits; returns their HLCs in order.

    ``publish(tenant_id, device_id, [StateEdit, ...])`` is typically
    ``DesiredStatePublisher(store, signer).add_state_edits``.
    """
    edits = list(edits)
    if not edits:
        return CentralEditResult(0, (), {}, 0)
    with lakehouse.session() as con:
        devices = sorted({(e.tenant_id, e.device_id) for e in edits})
        seen = con.execute(
            f"SELECT coalesce(max(hlc), 0) FROM {STATE_TABLE} WHERE (tenant_id || '/' || device_id) IN "
            f"({', '.join('?' for _ in devices)})",
            [f"{t}/{d}" for t, d in devices],
        ).fetchone()[0]
        clock = HybridLogicalClock(CENTRAL_NODE, wall_ms=wall)
        clock.observe(int(seen))
        hlcs = [clock.now() for _ in edits]
        table = pa.table(
            {
                "tenant_id": [e.tenant_id for e in edits],
                "device_id": [e.device_id for e in edits],
                "namespace": [e.namespace for e in edits],
                "key": [e.key for e in edits],
                "field": [e.field for e in edits],
                "value": [e.value for e in edits],
                "hlc": pa.array(hlcs, pa.int64()),
                "node_id": [CENTRAL_NODE] * len(edits),
                "origin": ["central"] * len(edits),
            },
            schema=EDIT_SCHEMA,
        )
        merger = central_merger(con, rules)
        stats = retried(
            con,
            lambda c: merger.merge(table),
            what="central edits",
            transaction=False,
            max_retries=lakehouse.config.max_retries,
        )
    published = 0
    if publish is not None:
        for (tenant, device), group in _by_device(edits, hlcs):
            publish(tenant, device, group)
            published += 1
    return CentralEditResult(len(edits), tuple(hlcs), dict(Counter(stats.conflicts_by_rule)), published)


def _by_device(
    edits: Iterable[CentralEdit], hlcs: Iterable[int]
) -> list[tuple[tuple[str, str], list[StateEdit]]]:
    groups: dict[tuple[str, str], list[StateEdit]] = {}
    for e, h in zip(edits, hlcs, strict=True):
        groups.setdefault((e.tenant_id, e.device_id), []).append(
            StateEdit(namespace=e.namespace, key=e.key, field=e.field, value=e.value, hlc=h)
        )
    return sorted(groups.items())
