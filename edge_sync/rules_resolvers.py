"""Resolver code named by a rules file: where its ``custom:<name>`` resolvers come from.

A rules file may list, under ``resolvers:``, the code that registers its custom resolvers::

    resolvers:
      - module: my_pkg.resolvers          # an importable module (installed, or on sys.path)
      - entry_point: longest_words        # entry point in group ``edgeplat.resolvers``: a module,
                                          # or a function (the resolver named like the entry point)
      - path: resolvers/longest.py        # a Python file, relative to the rules file

Each is imported inside :func:`edge_sync.resolvers.collecting`, so its
``@register_resolver`` functions (law-checked there) go to this rule set's own mapping,
never the process-wide registry. A module imported before is found by scanning its
attributes for registered functions, so loading it twice gives the same resolvers.

Devices load rules that arrive in the desired-state document with ``allow_paths=False``:
a device runs only resolver code it already has installed (modules and entry points), never
a file a document names (docs/security.md).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from edge_sync import resolvers
from edge_sync.resolvers import Resolver, ResolverLawError

ENTRY_POINT_GROUP = "edgeplat.resolvers"


class ResolverLoadError(ValueError):
    """A resolver source could not be loaded; the message names it and the fix."""


class ResolverSource(BaseModel):
    """One entry of a rules file's ``resolvers:`` list: exactly one of module, entry_point, path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    module: str | None = None
    entry_point: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ResolverSource:
        given = [k for k in ("module", "entry_point", "path") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                f"a resolvers entry needs exactly one of module, entry_point or path (got {given or 'none'})"
            )
        return self

    def describe(self) -> str:
        if self.module:
            return f"module {self.module!r}"
        if self.entry_point:
            return f"entry point {self.entry_point!r} (group {ENTRY_POINT_GROUP})"
        return f"path {self.path!r}"


def load_sources(
    sources: list[ResolverSource], *, base_dir: Path | None, allow_paths: bool
) -> dict[str, tuple[Resolver, str]]:
    """Resolver name -> (function, the source that registered it), for every source in order."""
    found: dict[str, tuple[Resolver, str]] = {}
    for i, source in enumerate(sources):
        where = f"resolvers[{i}] ({source.describe()})"
        try:
            loaded = _load(source, base_dir=base_dir, allow_paths=allow_paths)
        except ResolverLawError as exc:
            raise ResolverLoadError(
                f"{where}: {exc}; a resolver must be commutative, associative and idempotent "
                "(edge_sync.resolvers): fix it or remove it from the rules"
            ) from None
        except ResolverLoadError as exc:
            raise ResolverLoadError(f"{where}: {exc}") from None
        except Exception as exc:  # the operator's code failed to import: say whose and why
            raise ResolverLoadError(
                f"{where} fails to import ({type(exc).__name__}: {exc}): fix that code"
            ) from None
        if not loaded:
            raise ResolverLoadError(
                f"{where} registers no resolver: decorate its resolvers with "
                "@edge_sync.resolvers.register_resolver('<name>')"
            )
        for name, fn in loaded.items():
            try:  # a module imported before (outside collecting) is checked here, not at import
                resolvers.check_laws(name, fn, getattr(fn, resolvers.RESOLVER_ATTR)[1])
            except ResolverLawError as exc:
                raise ResolverLoadError(f"{where}: {exc}; fix it or remove it from the rules") from None
            found[name] = (fn, source.describe())
    return found


def _load(source: ResolverSource, *, base_dir: Path | None, allow_paths: bool) -> dict[str, Resolver]:
    with resolvers.collecting() as registered:
        if source.module:
            obj = _import(source.module)
        elif source.entry_point:
            obj = _entry_point(source.entry_point)
            if callable(obj) and not isinstance(obj, types.ModuleType) and not resolvers.tagged(obj):
                # a plain function: the resolver named like its entry point, checked like any other
                return {source.entry_point: resolvers.register_resolver(source.entry_point)(obj)}
        else:
            assert source.path is not None
            if not allow_paths:
                raise ResolverLoadError(
                    "resolver files named by a document are never loaded here (devices run only "
                    "resolvers they have installed): install a package providing the resolver and "
                    "name it by module or entry_point"
                )
            obj = _import_file(source.path, base_dir)
    return {**resolvers.tagged(obj), **registered}


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ResolverLoadError(
            f"module {module!r} cannot be imported ({exc}): install the package that provides it, "
            "or put its directory on PYTHONPATH"
        ) from None


def _entry_point(name: str):
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not eps:
        known = sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        raise ResolverLoadError(
            f"no entry point {name!r} in group {ENTRY_POINT_GROUP} (installed: {', '.join(known) or 'none'}): "
            f"install the package that declares it under [project.entry-points.{ENTRY_POINT_GROUP!r}]"
        )
    ep = next(iter(eps))
    try:
        return ep.load()
    except (ImportError, AttributeError) as exc:
        raise ResolverLoadError(f"entry point {name!r} = {ep.value!r} does not load: {exc}") from None


def _import_file(path: str, base_dir: Path | None) -> object:
    file = (base_dir / path) if base_dir is not None else Path(path)
    file = file.resolve()
    if not file.is_file():
        raise ResolverLoadError(
            f"resolver file {file} does not exist: fix the path (relative to the rules file's directory)"
        )
    # One module per file and content, so reloading an unchanged file reuses it and a changed
    # file is a new module; registered in sys.modules so its functions pickle by reference.
    digest = hashlib.sha256(str(file).encode() + b"\0" + file.read_bytes()).hexdigest()[:16]
    name = f"_edgeplat_resolvers_{file.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ResolverLoadError(f"resolver file {file} is not a Python module: give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
