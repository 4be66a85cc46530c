"""Refuses live messages that were forged or replayed, per device and stream.

A device publishes each stream's rows in the order it recorded them (the agent offers a
published row under one lock and the publisher keeps that order), so per (tenant, device,
stream) each accepted row has a larger ``seq`` and a larger ``hlc`` than the last. A row
that does not is a replay (or a QoS 1 redelivery, which is the same row again) and is
refused with ``live_replayed``; the new rows of a message that overlaps are kept. The marks
start from what ``live_rows`` already holds, so a restarted subscriber refuses what it
stored before. A row refused here is not lost: its batch still delivers it.
"""

from __future__ import annotations

from edge_sync.identity import DeviceRegistry
from edge_sync.live_message import LiveBatch, LiveMessage, LiveMessageError, verify


class ReplayGuard:
    """Verifies each message's signature and each row's order against what was accepted before."""

    def __init__(
        self,
        registry: DeviceRegistry,
        seqs: dict[tuple[str, str, str], int] | None = None,
        hlcs: dict[tuple[str, str, str], int] | None = None,
    ) -> None:
        self.registry = registry
        self.seqs = dict(seqs or {})
        self.hlcs = dict(hlcs or {})

    def admit(self, batch: LiveBatch) -> tuple[list[LiveMessage], LiveMessageError | None]:
        """The rows of ``batch`` that are new (marked now), and the refusal of the others if any.

        Raises :class:`LiveMessageError` when the signature does not verify (nothing is kept).
        """
        verify(batch, self.registry.public_keys(batch.tenant_id, batch.device_id))
        key = (batch.tenant_id, batch.device_id, batch.stream)
        fresh, stale = [], []
        for row in batch.rows:
            if row.seq <= self.seqs.get(key, 0) or row.hlc <= self.hlcs.get(key, 0):
                stale.append(row)
                continue
            self.seqs[key], self.hlcs[key] = row.seq, row.hlc
            fresh.append(row)
        refusal = None
        if stale:
            refusal = LiveMessageError(
                "live_replayed",
                f"{len(stale)} rows (seq {stale[0].seq}..{stale[-1].seq}) at or below seq "
                f"{self.seqs.get(key, 0)} / hlc {self.hlcs.get(key, 0)} already accepted",
            )
        return fresh, refusal
