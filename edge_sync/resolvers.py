"""Registry of custom conflict resolvers, named in the rules file as ``custom:<name>``.

A resolver is a pure function ``(a, b) -> value`` over two decoded JSON values (what
``json.loads`` returns) that picks or combines them. Merged state must not depend on the
order or the number of times edits arrive, so a resolver MUST be

- commutative: ``f(a, b) == f(b, a)``
- associative: ``f(f(a, b), c) == f(a, f(b, c))``
- idempotent:  ``f(a, a) == a``

(a join-semilattice). ``@register_resolver`` checks these laws on a few probe values when
it registers the function; probe families the resolver does not accept (it raises
``TypeError``/``ValueError``/``KeyError``) are skipped, so pass ``probes=`` with values of
the type the resolver really handles to get a meaningful check.

Resolvers of an operator's rules file (``edge_sync.rules_resolvers``) are imported inside
:func:`collecting`: their ``@register_resolver`` then fills that rule set's own mapping, not
the process-wide registry, so two rule sets never see each other's resolvers. Every
registered function is tagged (``RESOLVER_ATTR``), so a module imported earlier is still
found by scanning its attributes.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import re
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

Resolver = Callable[[Any, Any], Any]

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_REGISTRY: dict[str, Resolver] = {}
# Where ``@register_resolver`` puts resolvers while a rules file's modules are imported.
_COLLECTOR: contextvars.ContextVar[dict[str, Resolver] | None] = contextvars.ContextVar(
    "resolver_collector", default=None
)
# Attribute set on every registered function: (name, probes), so it can be found and re-checked.
RESOLVER_ATTR = "__edgeplat_resolver__"

# Probe families tried when the caller gives none: strings, numbers, lists.
DEFAULT_PROBES: tuple[tuple[Any, ...], ...] = (
    ("a", "bb", "ab", ""),
    (1, -2, 3.5, 0),
    ([1], [2, 3], []),
)


class ResolverLawError(ValueError):
    """A resolver broke commutativity, associativity or idempotence on a probe."""


def canonical_json(value: Any) -> str:
    """The one text form of a JSON value: sorted keys, no spaces (used to compare values)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_laws(name: str, fn: Resolver, probes: Sequence[Sequence[Any]] | None = None) -> None:
    """Raise ``ResolverLawError`` if ``fn`` breaks a merge law on any probe family it accepts."""
    for family in probes if probes is not None else DEFAULT_PROBES:
        _check_laws(name, fn, list(family))


def _check_laws(name: str, fn: Resolver, probes: Sequence[Any]) -> None:
    c = canonical_json
    try:
        for a in probes:
            if c(fn(a, a)) != c(a):
                raise ResolverLawError(f"resolver {name!r} is not idempotent: f({a!r}, {a!r}) = {fn(a, a)!r}")
        for a, b in itertools.permutations(probes, 2):
            if c(fn(a, b)) != c(fn(b, a)):
                raise ResolverLawError(
                    f"resolver {name!r} is not commutative: f({a!r}, {b!r}) = {fn(a, b)!r} "
                    f"but f({b!r}, {a!r}) = {fn(b, a)!r}; break ties deterministically (e.g. by value)"
                )
        for a, b, d in itertools.permutations(probes, 3):
            if c(fn(fn(a, b), d)) != c(fn(a, fn(b, d))):
                raise ResolverLawError(f"resolver {name!r} is not associative on {a!r}, {b!r}, {d!r}")
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, ResolverLawError):
            raise
        # The resolver does not accept this family of values: nothing to check here.


def register_resolver(
    name: str, *, probes: Sequence[Sequence[Any]] | None = None
) -> Callable[[Resolver], Resolver]:
    """Decorator: register ``fn`` as the resolver for ``custom:<name>`` after checking its laws."""
    if not _NAME.match(name):
        raise ValueError(
            f"resolver name {name!r} must match {_NAME.pattern} (lower case, digits, underscores)"
        )

    def decorate(fn: Resolver) -> Resolver:
        check_laws(name, fn, probes)
        setattr(fn, RESOLVER_ATTR, (name, probes))
        collector = _COLLECTOR.get()
        (_REGISTRY if collector is None else collector)[name] = fn
        return fn

    return decorate


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, Resolver]]:
    """Inside the block ``@register_resolver`` fills the yielded mapping instead of the registry."""
    found: dict[str, Resolver] = {}
    token = _COLLECTOR.set(found)
    try:
        yield found
    finally:
        _COLLECTOR.reset(token)


def tagged(obj: Any) -> dict[str, Resolver]:
    """The registered resolvers ``obj`` is (a decorated function) or holds as attributes (a module)."""
    tag = getattr(obj, RESOLVER_ATTR, None)
    if isinstance(tag, tuple) and callable(obj):
        return {tag[0]: obj}
    found: dict[str, Resolver] = {}
    for value in vars(obj).values() if isinstance(obj, types.ModuleType) else ():
        tag = getattr(value, RESOLVER_ATTR, None)
        if isinstance(tag, tuple) and callable(value):
            found[tag[0]] = value
    return found


def unregister_resolver(name: str) -> None:
    """Remove a resolver (tests use this to keep the registry clean)."""
    _REGISTRY.pop(name, None)


def get_resolver(name: str) -> Resolver:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"custom resolver {name!r} is not registered; register it with @register_resolver({name!r}) "
            f"before merging (registered: {', '.join(sorted(_REGISTRY)) or 'none'})"
        ) from None


def registered() -> frozenset[str]:
    return frozenset(_REGISTRY)


def resolve_all(name: str, values: Sequence[Any], fn: Resolver | None = None) -> Any:
    """Fold ``values`` with the resolver (``fn``, else the registered one), in canonical order so the
    fold itself is deterministic."""
    fn = fn or get_resolver(name)
    ordered = sorted(values, key=canonical_json)
    acc = ordered[0]
    for v in ordered[1:]:
        acc = fn(acc, v)
    return acc


@register_resolver("longest", probes=[("a", "bb", "ab", "", "ba")])
def longest(a: Any, b: Any) -> Any:
    """Keep the longer text; equal lengths keep the greater text, so the result is order-free."""
    sa, sb = str(a), str(b)
    return a if (len(sa), sa) >= (len(sb), sb) else b
