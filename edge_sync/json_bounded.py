"""JSON from untrusted bytes with its nesting bounded.

``json.loads`` recurses once per level of nesting, and so does everything that walks the
result afterwards (validation, canonical re-encoding for a signature check). A small object
of nested brackets therefore raises ``RecursionError``, which callers do not expect from
parsing. :func:`loads` turns that, and any document nested deeper than ``max_depth``, into
:class:`TooDeep`, a ``ValueError`` like every other parse failure.
"""

from __future__ import annotations

import json
from typing import Any

# Far above any manifest or desired-state document (a few levels), far below the interpreter's limit.
MAX_DEPTH = 32


class TooDeep(ValueError):
    """The JSON document is nested deeper than allowed."""


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(data)``, or :class:`TooDeep` if it nests more than ``max_depth`` levels."""
    try:
        doc = json.loads(data)
    except RecursionError:
        raise TooDeep(f"JSON nests deeper than the parser's recursion limit (allowed: {max_depth})") from None
    if depth(doc, stop=max_depth + 1) > max_depth:
        raise TooDeep(f"JSON nests more than {max_depth} levels deep")
    return doc


def depth(doc: Any, stop: int | None = None) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``[]`` is 1), without recursion; stops counting at ``stop``."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(doc, 0)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if stop is not None and deepest >= stop:
            return deepest
        todo.extend((child, level) for child in children)
    return deepest
