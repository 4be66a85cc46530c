"""State-merge test rules: a field for every built-in rule and one for a registered custom resolver."""

from __future__ import annotations

from edge_sync.resolvers import canonical_json, register_resolver


@register_resolver("test_lexmax")
def lexmax(a, b):
    """Greatest value by canonical JSON text: a commutative, associative, idempotent pick."""
    return max(a, b, key=canonical_json)


# field -> rule in namespace "config"; fields not named here take the rule set's default
EVERY_RULE = {
    "hi": "max",
    "lo": "min",
    "n": "counter",
    "tags": "set_union",
    "pin": "prefer_central",
    "cal": "prefer_device",
    "lbl": "custom:test_lexmax",
}
