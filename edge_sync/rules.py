"""The state conflict rules file: which merge rule applies to each (namespace, field).

A versioned YAML file, validated with pydantic; every error names the offending field::

    version: 3              # the revision of this rules file, recorded with every merge
    default: lww            # rule for namespaces/fields not listed
    namespaces:
      config:
        default: lww        # rule for fields of this namespace not listed
        fields: {threshold: max, boot_count: counter, tags: set_union,
                 firmware_pin: prefer_central, calibration: prefer_device, label: "custom:longest"}

Rules (see ``edge_sync.merge`` for how each merges):

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

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from edge_sync import resolvers

BUILTIN_RULES: tuple[str, ...] = (
    "lww",
    "max",
    "min",
    "counter",
    "set_union",
    "prefer_device",
    "prefer_central",
)
# Rules whose state is one of the edits (a loser can be named); the others combine edits.
PICKING_RULES: frozenset[str] = frozenset({"lww", "max", "min", "prefer_device", "prefer_central"})
CUSTOM_PREFIX = "custom:"


class RulesError(ValueError):
    """The rules file is malformed; the message names each bad field and what is allowed."""


def check_rule(rule: str) -> str:
    if rule in BUILTIN_RULES:
        return rule
    if isinstance(rule, str) and rule.startswith(CUSTOM_PREFIX):
        name = rule[len(CUSTOM_PREFIX) :]
        if resolvers._NAME.match(name):
            return rule
        raise ValueError(f"custom rule {rule!r} needs a resolver name matching {resolvers._NAME.pattern}")
    raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(BUILTIN_RULES)} or custom:<name>")


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
    """Load and validate a rules YAML file; errors name the file and each bad field."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise RulesError(f"state rules file {p} does not exist") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"state rules file {p} is not valid YAML: {exc}") from None
    return parse_rules(data, source=f"state rules file {p}", require_resolvers=require_resolvers)


DEFAULT_RULES_PATH = Path(__file__).resolve().parent.parent / "edgeplat" / "config" / "state_rules.yaml"


def default_rules() -> RuleSet:
    """The platform's default rules file (edgeplat/config/state_rules.yaml)."""
    return load_rules(DEFAULT_RULES_PATH)
