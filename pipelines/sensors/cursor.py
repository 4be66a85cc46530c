"""Sensor cursors: JSON with a version field, so a cursor of another shape starts afresh."""

import json
from typing import Any

CURSOR_VERSION = 1


def read_cursor(text: str | None) -> dict[str, Any]:
    """The cursor's fields, or a fresh cursor when it is empty, unreadable or of another version."""
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {"v": CURSOR_VERSION}
    return data if isinstance(data, dict) and data.get("v") == CURSOR_VERSION else {"v": CURSOR_VERSION}


def write_cursor(**fields: Any) -> str:
    return json.dumps({"v": CURSOR_VERSION, **fields})
