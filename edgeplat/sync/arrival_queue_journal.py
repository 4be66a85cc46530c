"""The arrival queue on the local store's journal (``edge_sync.objectstore_journal``).

The journal is append-only, so "in flight" and "acked" are kept as two offsets in the sensor's
cursor (``checkpoint``): ``read``, the end of what was handed out, and ``floor``, the first line
not known to be acked. Lines in ``[floor, read)`` are in flight; like an SQS visibility timeout,
they are handed out again (from the floor) once ``visibility_timeout_s`` has passed, and the
floor moves past the leading acked ones. A damaged line is poison and goes to a dead-letter file
beside the journal. A journal with a new inode (rotated) or shorter than ``read`` (truncated)
is read again from its start; what the old file held past ``read`` is found by the listing
backstop, and ``restarted`` says why so the sensor can run the backstop at once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_sync.objectstore_journal import JournalLine, journal_path, read_records
from edgeplat.sync.arrival_queue import (
    DEFAULT_VISIBILITY_TIMEOUT_S,
    ArrivalMessage,
    QueueUnavailable,
    excerpt,
)

DEAD_LETTER_NAME = ".objstore-tmp-arrivals.dead-letter"  # beside the journal, never listed as a key


class JournalArrivalQueue:
    """Object-created records of a local store's journal (see the module docstring)."""

    def __init__(
        self,
        root: Path | str,
        position: dict | None = None,
        *,
        visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.path = journal_path(self.root)
        self.url = self.path.as_uri()
        self.dead_letter_path = self.root / DEAD_LETTER_NAME
        self.visibility_timeout_s = visibility_timeout_s
        self._now = now
        pos = position or {}
        self._inode = pos.get("inode")
        self._floor = int(pos.get("floor", 0))
        self._read = int(pos.get("read", 0))
        self._redeliver_at = float(pos.get("redeliver_at", 0.0))
        self.restarted: str | None = None
        self._delivered: list[JournalLine] = []
        self._from_floor = False
        self._acked: set[int] = set()

    def _check_file(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise QueueUnavailable(
                f"the local store {self.root} has no arrival journal {self.path.name}: enable it "
                "(edge_sync.objectstore_journal.enable_journal, done by the platform's local resources)"
            ) from None
        if self._inode is None:
            self._inode = st.st_ino
        elif st.st_ino != self._inode:
            self.restarted = f"journal {self.path} was rotated (new file): reading it from the start"
        elif st.st_size < self._read:
            self.restarted = f"journal {self.path} is shorter than the read offset {self._read} (truncated)"
        if self.restarted:
            self._inode, self._floor, self._read, self._redeliver_at = st.st_ino, 0, 0, 0.0

    def receive(self, max_messages: int) -> list[ArrivalMessage]:
        self._check_file()
        self._from_floor = self._floor < self._read and self._now() >= self._redeliver_at
        start = self._floor if self._from_floor else self._read
        try:
            self._delivered = read_records(self.path, start, max_messages)
        except OSError as exc:
            raise QueueUnavailable(f"cannot read the arrival journal {self.path}: {exc}") from exc
        return [self._message(line) for line in self._delivered]

    def _message(self, line: JournalLine) -> ArrivalMessage:
        return ArrivalMessage(
            message_id=f"{self._inode}:{line.offset}",
            receipt=line.offset,
            keys=(line.key,) if line.key else (),
            problem=line.problem,
            body=excerpt(line.raw),
            receive_count=2 if line.offset < self._read else 1,
        )

    def ack(self, messages: Sequence[ArrivalMessage]) -> None:
        self._acked.update(int(m.receipt) for m in messages)

    def dead_letter(self, messages: Sequence[ArrivalMessage]) -> None:
        if messages:
            lines = "".join(
                json.dumps(
                    {
                        "journal": str(self.path),
                        "offset": m.receipt,
                        "reason": m.problem,
                        "body": m.body,
                        "at": self._now(),
                    },
                    sort_keys=True,
                )
                + "\n"
                for m in messages
            )
            fd = os.open(self.dead_letter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, lines.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        self.ack(messages)

    def checkpoint(self) -> dict | None:
        """The new position: ``floor`` past the leading acked lines, ``read`` past all handed out."""
        if self._delivered:
            end = self._delivered[-1].end
            unacked = [ln.offset for ln in self._delivered if ln.offset not in self._acked]
            now = self._now()
            if self._from_floor:
                self._floor = unacked[0] if unacked else end
                self._read = max(self._read, end)
                # everything re-checked was settled but more is in flight: re-check that next tick
                self._redeliver_at = (
                    now if (not unacked and end < self._read) else now + self.visibility_timeout_s
                )
            else:
                if self._floor == self._read:
                    self._floor = unacked[0] if unacked else end
                    self._redeliver_at = now + self.visibility_timeout_s
                self._read = end
            self._delivered = []
        return {
            "inode": self._inode,
            "floor": self._floor,
            "read": self._read,
            "redeliver_at": self._redeliver_at,
        }

    @property
    def in_flight_bytes(self) -> int:
        return self._read - self._floor

    def close(self) -> None:
        pass
