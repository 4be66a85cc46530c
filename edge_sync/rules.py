"""The state conflict rules file: which merge rule applies to each (namespace, field).

A versioned YAML file, validated with pydantic; every error names the offending field::

    version: 3              # the revision of this rules file, recorded with every merge
    default: lww            # rule for namespaces/fields not listed
    namespaces:
      config:
        default: lww        # rule for fields of this namespace not listed
        fields: {threshold: max, boot_count: counter, tags: set_union,
                 firmware_pin: prefer_central, calibration: prefer_device, label: "custom:longest"}
    resolvers:              # optional: code registering custom resolvers (edge_sync.rules_resolvers)
      - module: my_pkg.resolvers

The packaged file (``default_rules()``) is the default; an operator's file (``load_rules``)
replaces it on the platform and reaches devices in the desired-state document. ``version``
is the operator's: it is recorded on every state and conflict row, and a changed content
(``content_hash``) under an unchanged version is refused where versions are remembered (the
central merge's ``state_rules_versions`` table, the device's adopted rules).

Rules (``RULES`` below is their registry; ``edge_sync.merge`` says how each merges):

- ``lww``: last writer wins by HLC, equal HLCs broken by node id.
- ``max`` / ``min``: the numerically greatest / smallest JSON number wins (then LWW).
- ``counter``: each edit's value is an integer increment; the state is the sum over distinct
  edits (identified by node id and HLC), so concurrent increments add up and re-delivered
  edits count once.
- ``set_union``: JSON arrays; the state is their union as a sorted canonical JSON array.
- ``prefer_device`` / ``prefer_central``: an edit of the preferred origin beats any edit of
  the other origin whatever the HLCs; within one origin, LWW.
- ``custom:<name>``: a resolver registered with ``@register_resolver("<name>")``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from edge_sync import resolvers
from edge_sync.resolvers import Resolver
from edge_sync.rules_resolvers import ResolverLoadError, ResolverSource, load_sources


@dataclass(frozen=True)
class Rule:
    """One conflict rule as the merge, the downlink and the ingest metadata see it.

    The merge builds its SQL and Arrow forms from these fields and the registry below is
    the one list of rule names, so a rule is described in one place.
    """

    name: str
    # How edits combine: "pick" one of them, "sum" increments, "union" arrays, "fold" with a resolver.
    combine: Literal["pick", "sum", "union", "fold"]
    prefers: str | None = None  # prefer_*: this origin's edits beat the other's whatever the HLCs
    sign: int = 0  # max (1) / min (-1): edits are ordered by their JSON number times this

    @property
    def picks(self) -> bool:
        """The state is one of the edits, so a losing edit can be named."""
        return self.combine == "pick"

    @property
    def sums(self) -> bool:
        """Each edit is an increment: applying one twice counts it twice."""
        return self.combine == "sum"

    @property
    def folds(self) -> bool:
        """The state combines every value and is stamped with the latest edit."""
        return self.combine in ("union", "fold")

    @property
    def conflicts(self) -> bool:
        """A head whose value is not the state's lost something (sums and unions lose nothing)."""
        return self.combine in ("pick", "fold")


COUNTER = Rule("counter", "sum")
SET_UNION = Rule("set_union", "union")
RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("lww", "pick"),
        Rule("max", "pick", sign=1),
        Rule("min", "pick", sign=-1),
        COUNTER,
        SET_UNION,
        Rule("prefer_device", "pick", prefers="device"),
        Rule("prefer_central", "pick", prefers="central"),
    )
}
CUSTOM_PREFIX = "custom:"
# Every ``custom:<name>`` rule: values folded with the named resolver.
CUSTOM = Rule(CUSTOM_PREFIX, "fold")


def rule_kind(name: str) -> Rule:
    """The registry entry of a rule name (``CUSTOM`` for any ``custom:<name>``)."""
    if name.startswith(CUSTOM_PREFIX):
        return CUSTOM
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(
            f"unknown rule {name!r}; expected one of {', '.join(RULES)} or custom:<name>"
        ) from None


class RulesError(ValueError):
    """The rules file is malformed; the message names each bad field and what is allowed."""


def check_rule(rule: str) -> str:
    if rule in RULES:
        return rule
    if isinstance(rule, str) and rule.startswith(CUSTOM_PREFIX):
        name = rule[len(CUSTOM_PREFIX) :]
        if resolvers._NAME.match(name):
            return rule
        raise ValueError(f"custom rule {rule!r} needs a resolver name matching {resolvers._NAME.pattern}")
    raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)} or custom:<name>")


RuleName = Annotated[str, AfterValidator(check_rule)]


def custom_name(rule: str) -> str | None:
    """The resolver name of a ``custom:<name>`` rule, else None."""
    return rule[len(CUSTOM_PREFIX) :] if rule.startswith(CUSTOM_PREFIX) else None


class NamespaceRules(BaseModel):
    """Rules for one namespace: its default and per-field overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: RuleName | None = None
    fields: dict[str, RuleName] = Field(default_factory=dict)


class RuleSet(BaseModel):
    """A validated rules file. ``rule_for(namespace, field)`` is the only lookup merges use.

    Its custom resolvers are its own (loaded from ``resolvers``), else the process-wide
    registry's (resolvers registered by an import, e.g. ``longest`` of edge_sync.resolvers).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    default: RuleName = "lww"
    namespaces: dict[str, NamespaceRules] = Field(default_factory=dict)
    resolvers: list[ResolverSource] = Field(default_factory=list)
    # name -> (resolver, the source that registered it), from ``resolvers`` at load
    _own: dict[str, tuple[Resolver, str]] = PrivateAttr(default_factory=dict)

    def rule_for(self, namespace: str, field: str) -> str:
        ns = self.namespaces.get(namespace)
        if ns is None:
            return self.default
        return ns.fields.get(field) or ns.default or self.default

    def document(self) -> dict[str, Any]:
        """The rules as a JSON-able mapping that ``parse_rules`` reads back (what devices receive)."""
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of ``document()``: equal rules, equal hash (comments, order aside)."""
        return hashlib.sha256(resolvers.canonical_json(self.document()).encode()).hexdigest()

    def resolver(self, name: str) -> Resolver:
        """The resolver of ``custom:<name>``: this rule set's own, else the registry's (KeyError if none)."""
        own = self._own.get(name)
        return own[0] if own is not None else resolvers.get_resolver(name)

    def resolver_sources(self) -> dict[str, str]:
        """Every custom resolver the rules use -> where it comes from."""
        return {
            name: self._own[name][1] if name in self._own else "built in (registered by an import)"
            for name in sorted(set(self.custom_resolvers().values()))
            if name in self._own or name in resolvers.registered()
        }

    def loaded_resolvers(self) -> dict[str, str]:
        """Resolvers this rule set's ``resolvers`` registered -> the source of each."""
        return {name: src for name, (_, src) in self._own.items()}

    def custom_resolvers(self) -> dict[str, str]:
        """Location in the file -> resolver name, for every custom rule used."""
        found: dict[str, str] = {}
        if (name := custom_name(self.default)) is not None:
            found["default"] = name
        for ns_name, ns in self.namespaces.items():
            if ns.default and (name := custom_name(ns.default)) is not None:
                found[f"namespaces.{ns_name}.default"] = name
            for f, rule in ns.fields.items():
                if (name := custom_name(rule)) is not None:
                    found[f"namespaces.{ns_name}.fields.{f}"] = name
        return found

    def check_resolvers(self) -> None:
        """Fail if a ``custom:<name>`` rule has no resolver (neither its own nor a registered one)."""
        named = ", ".join(s.describe() for s in self.resolvers)
        hint = (
            f"none of this file's resolvers ({named}) registers it: fix the name or add the resolvers entry "
            "that registers it"
            if named
            else "add a resolvers entry (module, entry_point or path) whose code registers it with "
            "@register_resolver"
        )
        missing = [
            f"{where}: custom resolver {name!r} is not registered; {hint}"
            for where, name in self.custom_resolvers().items()
            if name not in self._own and name not in resolvers.registered()
        ]
        if missing:
            raise RulesError("invalid state rules:\n  " + "\n  ".join(missing))


def parse_rules(
    data: Any,
    *,
    source: str = "state rules",
    require_resolvers: bool = True,
    base_dir: Path | None = None,
    allow_paths: bool = True,
) -> RuleSet:
    """Validate an already-parsed rules document (a dict) and load the resolvers it names.

    ``base_dir``: where ``resolvers: [{path: ...}]`` entries are relative to (the rules file's
    directory). ``allow_paths=False`` refuses such entries (rules received by a device).
    """
    if not isinstance(data, dict):
        raise RulesError(
            f"{source}: expected a mapping with version, default and namespaces, got {type(data).__name__}"
        )
    errors: list[str] = []
    try:
        rules = RuleSet.model_validate(data)
    except ValidationError as exc:
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            errors.append(f"{loc}: {msg}")
        rules = None
    if errors:
        raise RulesError(f"invalid {source}:\n  " + "\n  ".join(errors))
    assert rules is not None
    try:
        rules._own = load_sources(rules.resolvers, base_dir=base_dir, allow_paths=allow_paths)
    except ResolverLoadError as exc:
        raise RulesError(f"invalid {source}:\n  {exc}") from None
    if require_resolvers:
        try:
            rules.check_resolvers()
        except RulesError as exc:
            raise RulesError(str(exc).replace("invalid state rules", f"invalid {source}", 1)) from None
    return rules


def load_rules(path: str | Path, *, require_resolvers: bool = True) -> RuleSet:
    """Load and validate a rules YAML file; errors name the file, each bad field and the fix."""
    return _load(Path(path), "fix the path or put the platform's rules file there", require_resolvers)


# Package data of edge_sync, so a device merges under the same rules as the platform.
RULES_FILE = "state_rules.yaml"


def default_rules() -> RuleSet:
    """The rules file that ships with edge_sync (``edge_sync/state_rules.yaml``); the platform's too."""
    with importlib.resources.as_file(importlib.resources.files(__package__) / RULES_FILE) as path:
        return _load(
            path,
            f"reinstall edge-sync (its package data must include edge_sync/{RULES_FILE}) "
            "or set rules_path in device.toml",
            require_resolvers=True,
        )


def _load(path: Path, fix: str, require_resolvers: bool) -> RuleSet:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RulesError(f"state rules file {path} does not exist: {fix}") from None
    except OSError as exc:
        raise RulesError(f"state rules file {path} cannot be read ({exc.strerror or exc}): {fix}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"state rules file {path} is not valid YAML: {exc}") from None
    return parse_rules(
        data, source=f"state rules file {path}", require_resolvers=require_resolvers, base_dir=path.parent
    )
