"""The local store's arrival journal: one appended line per object written, the local stand-in for S3
event notifications.

A ``LocalObjectStore`` appends a record after every successful put when its root holds the
journal file (the platform enables it with :func:`enable_journal`; a device's spool has none, so
it writes nothing). The file sits in the store's root under the reserved temp-file prefix, so
listing never shows it and no key can collide with it.

Each record is ``"\\n<crc32 hex> <json>\\n"``, written with one ``write`` on an ``O_APPEND``
descriptor and fsynced. The leading newline closes a line torn by a crash mid-write, so the torn
fragment becomes one damaged line (the reader quarantines it) instead of corrupting the next
record; a crash between an object's publication and its record loses only the notification,
which the central listing backstop finds. Readers keep their own offset (:func:`read_records`)
and notice rotation (:func:`rotate_journal`: new inode) or truncation (file shorter than their
offset).
"""

from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

# under edge_sync.objectstore.TMP_PREFIX (not imported: that module imports this one), so listing
# skips the file and validate_key refuses it as a key
JOURNAL_NAME = ".objstore-tmp-arrivals.journal"
ROTATED_SUFFIX = ".1"


def journal_path(root: Path | str) -> Path:
    return Path(root) / JOURNAL_NAME


def enable_journal(root: Path | str) -> Path:
    """Create the (empty) journal in a local store's root, so every later put is recorded there."""
    path = journal_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.close(fd)
    return path


def encode_record(key: str, size: int, at_ms: int) -> bytes:
    body = json.dumps({"key": key, "size": size, "at": at_ms}, separators=(",", ":"), sort_keys=True)
    return f"\n{zlib.crc32(body.encode()):08x} {body}\n".encode()


def append_record(root: Path, key: str, size: int, *, fsync: bool = True) -> bool:
    """Record that ``key`` was written; False (and nothing written) when the store has no journal."""
    try:
        fd = os.open(journal_path(root), os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return False
    try:
        os.write(fd, encode_record(key, size, int(time.time() * 1000)))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return True


def rotate_journal(root: Path | str) -> Path:
    """Move the journal aside (``.1``, replacing an older one) and start an empty one (readers see
    a new inode and start it from the beginning)."""
    path = journal_path(root)
    rotated = path.with_name(path.name + ROTATED_SUFFIX)
    os.replace(path, rotated)
    enable_journal(root)
    return rotated


@dataclass(frozen=True, slots=True)
class JournalLine:
    """One complete line of the journal: its offset, and its key or why it cannot be read."""

    offset: int
    end: int  # offset just after the line's newline
    key: str | None
    problem: str | None  # set when the line is damaged (key is then None)
    raw: bytes


def parse_line(offset: int, line: bytes) -> JournalLine:
    end = offset + len(line) + 1
    crc, _, body = line.partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body) or len(crc) != 8:
            return JournalLine(
                offset, end, None, "journal record checksum mismatch (torn or damaged write)", line
            )
        doc = json.loads(body)
    except ValueError:
        return JournalLine(offset, end, None, "journal record is not '<crc32> <json>'", line)
    key = doc.get("key") if isinstance(doc, dict) else None
    if not isinstance(key, str) or not key:
        return JournalLine(offset, end, None, "journal record has no 'key' string", line)
    return JournalLine(offset, end, key, None, line)


def read_records(path: Path, offset: int, max_lines: int, *, max_bytes: int = 4 << 20) -> list[JournalLine]:
    """Up to ``max_lines`` complete, non-empty lines from ``offset`` (an incomplete last line waits
    for its newline)."""
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read(max_bytes)
    out: list[JournalLine] = []
    pos = 0
    while len(out) < max_lines:
        nl = chunk.find(b"\n", pos)
        if nl < 0:
            break
        if nl > pos:
            out.append(parse_line(offset + pos, chunk[pos:nl]))
        pos = nl + 1
    if not out and pos == 0 and len(chunk) == max_bytes:
        # no newline in max_bytes: not a record; skip it whole so the reader never stalls on it
        out.append(
            JournalLine(
                offset, offset + len(chunk), None, f"journal line longer than {max_bytes} bytes", chunk[:200]
            )
        )
    return out
