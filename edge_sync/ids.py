"""Validation of tenant, device and stream ids before they become part of a path or key.

Ids end up in object-store keys (``tenant=T/device=D/...``), key-file names and SQL
partition values, so every id passes through :func:`validate_id` first. The rule is a
conservative allow-list: a letter or digit first, then letters, digits, ``.``, ``_`` or
``-``, at most 128 characters, and never ``..``. That excludes ``/``, ``\\``, ``=``,
whitespace and control characters, so an id can never escape its folder or forge a
``key=value`` path segment.
"""

from __future__ import annotations

import re

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ID_RULE = (
    "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit, without '..' "
    "(no '/', '\\', '=' or whitespace)"
)
ID_KINDS = ("tenant", "device", "stream", "node")
# AWS IoT thing names; a device whose S3 credentials come from the IoT credentials provider
# is its own thing (thing name = device id), so its id must also match this
THING_NAME_PATTERN = re.compile(r"[a-zA-Z0-9:_-]{1,128}")


def validate_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a safe id of the given kind, else raise ``ValueError``.

    ``kind`` is one of ``tenant``, ``device``, ``stream``, ``node`` and names the id in the
    error so the caller can tell which input to fix.
    """
    if kind not in ID_KINDS:
        raise ValueError(f"unknown id kind {kind!r}; expected one of {', '.join(ID_KINDS)}")
    if not isinstance(value, str):
        raise ValueError(f"{kind} id must be a string, got {type(value).__name__} {value!r}")
    if not ID_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(f"invalid {kind} id {value!r}: {kind} ids must be {ID_RULE}")
    return value


def is_valid_id(value: object) -> bool:
    """True if ``value`` would pass :func:`validate_id` (for filtering listings)."""
    return isinstance(value, str) and bool(ID_PATTERN.fullmatch(value)) and ".." not in value
