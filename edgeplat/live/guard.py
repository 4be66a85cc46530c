"""Refuses live messages that were forged or replayed, per device.

A device publishes its rows in the order it recorded them (the agent offers a published
row under one lock), so per (tenant, device, stream) each accepted message has a larger
``seq`` than the last, and per device a larger ``hlc``. A message that does not is a replay
(or a QoS 1 redelivery, which is the same row again): refused with ``live_replayed``. The
marks start from what ``live_rows`` already holds, so a restarted subscriber refuses what
it stored before. A row refused here is not lost: its batch still delivers it.
"""

from __future__ import annotations

from collections.abc import Callable

from edge_sync.identity import DeviceRegistry
from edge_sync.live_message import LiveMessage, LiveMessageError, verify


class ReplayGuard:
    """Verifies each message's signature and order against what this subscriber accepted before."""

    def __init__(
        self,
        registry: DeviceRegistry,
        seqs: dict[tuple[str, str, str], int] | None = None,
        hlcs: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.registry = registry
        self.seqs = dict(seqs or {})
        self.hlcs = dict(hlcs or {})

    def admit(self, message: LiveMessage, keys: Callable[[str, str], list] | None = None) -> None:
        """Raise :class:`LiveMessageError` unless ``message`` is signed by its device and new; then mark it."""
        lookup = keys or self.registry.public_keys
        verify(message, lookup(message.tenant_id, message.device_id))
        stream_key = (message.tenant_id, message.device_id, message.stream)
        device_key = (message.tenant_id, message.device_id)
        last_seq = self.seqs.get(stream_key, 0)
        last_hlc = self.hlcs.get(device_key, 0)
        if message.seq <= last_seq:
            raise LiveMessageError("live_replayed", f"seq {message.seq} <= {last_seq} already accepted")
        if message.hlc <= last_hlc:
            raise LiveMessageError("live_replayed", f"hlc {message.hlc} <= {last_hlc} already accepted")
        self.seqs[stream_key] = message.seq
        self.hlcs[device_key] = message.hlc
