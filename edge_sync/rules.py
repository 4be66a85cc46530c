"""The state conflict rules file: which merge rule applies to each (namespace, field).

A versioned YAML file, validated with pydantic; every error names the offending field::

    version: 3              # the revision of this rules file, recorded with every merge
    default: lww            # rule for namespaces/fields not listed
    namespaces:
      config:
        default: lww        # rule for fields of this namespace not listed
        fields: {threshold: max, boot_count: counter, tags: set_union,
                 firmware_pin: prefer_central, calibration: prefer_device, label: "custom:longest"}

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

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from edge_sync import resolvers


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
    """A validated rules file. ``rule_for(namespace, field)`` is the only lookup merges use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    default: RuleName = "lww"
    namespaces: dict[str, NamespaceRules] = Field(default_factory=dict)

    def rule_for(self, namespace: str, field: str) -> str:
        ns = self.namespaces.get(namespace)
        if ns is None:
            return self.default
        return ns.fields.get(field) or ns.default or self.default

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
        """Fail if a ``custom:<name>`` rule has no registered resolver (import it first)."""
        missing = [
            f"{where}: custom resolver {name!r} is not registered; register it with "
            f"@register_resolver({name!r}) before loading the rules"
            for where, name in self.custom_resolvers().items()
            if name not in resolvers.registered()
        ]
        if missing:
            raise RulesError("invalid state rules:\n  " + "\n  ".join(missing))


def parse_rules(data: Any, *, source: str = "state rules", require_resolvers: bool = True) -> RuleSet:
    """Validate an already-parsed rules document (a dict)."""
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
    if require_resolvers:
        rules.check_resolvers()
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
    return parse_rules(data, source=f"state rules file {path}", require_resolvers=require_resolvers)
