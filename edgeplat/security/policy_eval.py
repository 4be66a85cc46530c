"""Evaluate an IAM identity policy for one request, with policy variables substituted as IAM does.

The storage checker (:mod:`edgeplat.security.storage_policy`) reads a policy's shape; a
device-scoped policy needs more: its resources name ``${credentials-iot:ThingName}``, so
whether a device may write a sibling's prefix depends on what IAM substitutes at request
time. moto enforces policies but evaluates neither policy variables nor conditions, so this
evaluator is what proves the scope (``edgeplat.security.device_scopes``).

What it follows from the IAM policy evaluation logic, for one identity policy:

- an explicit Deny wins over any Allow; with no matching Allow the request is refused;
- ``Action``/``NotAction`` match case-insensitively, ``Resource``/``NotResource`` case-
  sensitively, ``*`` any run of characters (``/`` included) and ``?`` one character;
- ``${key}`` takes the request context's value, ``${key, 'default'}`` the default when the
  key is missing; a resource naming a missing key without a default matches no request, so
  a device that sends no thing name gets nothing from a thing-scoped statement;
  ``${*}``, ``${?}`` and ``${$}`` are the literal characters.

Conditions are not evaluated. Instead each question is asked from the safe side:
:func:`may_allow` counts a conditional Allow as granting and a conditional Deny as not
denying (so "refused" is proven whatever the conditions say), :func:`surely_allows` the
other way round.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_DEFAULT = re.compile(r"^\s*([^,\s]+)\s*,\s*'([^']*)'\s*$")
_ESCAPES = {"*": "*", "?": "?", "$": "$"}


class _Missing(Exception):
    """A policy variable whose key the request context does not have (and no default)."""


def _pattern(text: str, context: Mapping[str, str], *, case: bool) -> re.Pattern[str]:
    """``text`` (an Action or Resource value) as a regex, variables substituted literally."""
    lowered = {k.lower(): v for k, v in context.items()}
    out, pos = [], 0
    for m in _VARIABLE.finditer(text):
        out.append(_glob(text[pos : m.start()]))
        body = m.group(1).strip()
        if body in _ESCAPES:
            out.append(re.escape(_ESCAPES[body]))
        else:
            d = _DEFAULT.match(body)
            key, default = (d.group(1), d.group(2)) if d else (body, None)
            value = lowered.get(key.lower(), default)
            if value is None:
                raise _Missing(key)
            out.append(re.escape(value))
        pos = m.end()
    out.append(_glob(text[pos:]))
    return re.compile("".join(out), 0 if case else re.IGNORECASE)


def _glob(text: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, dict | bytes):
        return [v for v in value if isinstance(v, str)]
    return []


def _matches(values: list[str], subject: str, context: Mapping[str, str], *, case: bool) -> bool:
    for v in values:
        try:
            if _pattern(v, context, case=case).fullmatch(subject):
                return True
        except _Missing:
            continue
    return False


def _applies(st: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    if "Action" in st:
        acts = _matches(_strings(st["Action"]), action, context, case=False)
    else:
        acts = "NotAction" in st and not _matches(_strings(st["NotAction"]), action, context, case=False)
    if not acts:
        return False
    if "Resource" in st:
        return _matches(_strings(st["Resource"]), resource, context, case=True)
    if "NotResource" in st:
        # a NotResource naming a missing variable excludes nothing (it cannot match)
        return not _matches(_strings(st["NotResource"]), resource, context, case=True)
    return False


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = policy.get("Statement", [])
    if isinstance(statements, Mapping):
        statements = [statements]
    return [s for s in statements if isinstance(s, Mapping)]


def _decide(
    policy: Mapping[str, Any],
    action: str,
    resource: str,
    context: Mapping[str, str],
    *,
    conditional_allow: bool,
    conditional_deny: bool,
) -> bool:
    allowed = False
    for st in _statements(policy):
        conditional = bool(st.get("Condition"))
        if not _applies(st, action, resource, context):
            continue
        if st.get("Effect") == "Deny" and (conditional_deny or not conditional):
            return False
        if st.get("Effect") == "Allow" and (conditional_allow or not conditional):
            allowed = True
    return allowed


def may_allow(
    policy: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str] | None = None
) -> bool:
    """Could ``policy`` allow ``action`` on ``resource`` for a request with ``context``?

    False proves a refusal: no Allow matches (conditional ones counted as matching), or an
    unconditional Deny does.
    """
    return _decide(policy, action, resource, context or {}, conditional_allow=True, conditional_deny=False)


def surely_allows(
    policy: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str] | None = None
) -> bool:
    """Does ``policy`` allow the request whatever its conditions say (unconditional Allow, no Deny)?"""
    return _decide(policy, action, resource, context or {}, conditional_allow=False, conditional_deny=True)
