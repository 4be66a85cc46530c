"""Hybrid logical clocks: the timestamps that order rows and state edits across devices.

An HLC is one 64-bit integer: the high 48 bits are physical milliseconds since the Unix
epoch, the low 16 bits a logical counter. Ties between equal HLCs break by node id (the
device id, or ``central``), so every pair of edits has one deterministic order.

A device's wall clock never decides alone: the clock only moves forward (``now`` never
returns a smaller value than before, whatever the wall clock does) and ``observe`` pulls
it forward past any timestamp it has seen from elsewhere (for example a central edit in
the downlink), so causally later edits always carry larger HLCs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_PHYSICAL_MS = (1 << 48) - 1
CENTRAL_NODE = "central"


def pack(physical_ms: int, logical: int) -> int:
    """Build an HLC from its physical milliseconds and logical counter."""
    if not 0 <= physical_ms <= MAX_PHYSICAL_MS:
        raise ValueError(f"HLC physical time {physical_ms} ms is outside 48 bits")
    if not 0 <= logical <= LOGICAL_MASK:
        raise ValueError(f"HLC logical counter {logical} is outside 16 bits")
    return (physical_ms << LOGICAL_BITS) | logical


def physical_ms(hlc: int) -> int:
    """The wall-clock part of an HLC, in milliseconds since the epoch."""
    return hlc >> LOGICAL_BITS


def logical(hlc: int) -> int:
    """The logical counter of an HLC."""
    return hlc & LOGICAL_MASK


def order_key(hlc: int, node_id: str) -> tuple[int, str]:
    """Total order of edits: HLC first, node id breaks ties."""
    return (hlc, node_id)


class HybridLogicalClock:
    """A thread-safe HLC for one node.

    ``wall_ms`` is injectable so tests and the simulator can skew or freeze the clock.
    ``last`` restores the clock after a restart (the cache persists the last HLC it issued),
    so a device whose wall clock jumped backwards across a reboot stays monotonic.
    """

    def __init__(self, node_id: str, wall_ms: Callable[[], int] | None = None, last: int = 0) -> None:
        if not node_id:
            raise ValueError("an HLC needs a non-empty node id (the device id, or 'central')")
        self.node_id = node_id
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self._last = int(last)
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        """A fresh HLC, strictly greater than every HLC this clock issued or observed."""
        with self._lock:
            self._last = self._advance(self._last, self._wall_ms())
            return self._last

    def reserve(self, n: int) -> tuple[int, int]:
        """Issue ``n`` consecutive HLCs at once (for a batch of rows); returns (first, last)."""
        if n <= 0:
            raise ValueError("reserve needs a positive count")
        with self._lock:
            first = self._advance(self._last, self._wall_ms())
            last = first + n - 1
            # Overflowing the 16-bit counter carries into the millisecond part, which keeps
            # the order and only moves the clock a little ahead of wall time.
            self._last = last
            return first, last

    def observe(self, remote_hlc: int) -> int:
        """Merge a timestamp received from another node; returns the new local HLC."""
        with self._lock:
            base = max(self._last, int(remote_hlc))
            self._last = self._advance(base, self._wall_ms())
            return self._last

    @staticmethod
    def _advance(last: int, wall: int) -> int:
        candidate = pack(max(0, min(wall, MAX_PHYSICAL_MS)), 0)
        return candidate if candidate > last else last + 1
