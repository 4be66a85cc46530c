"""The rules file: loading, lookups, field-pointing errors, and the custom resolver registry."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import duckdb
import pytest

from edge_sync import resolvers
from edge_sync import rules as rules_mod
from edge_sync.config import ConfigError, state_rules
from edge_sync.merge import rule_sql
from edge_sync.resolvers import ResolverLawError, register_resolver, unregister_resolver
from edge_sync.rules import RULES_FILE, RulesError, default_rules, load_rules, parse_rules


def test_default_rules_file_loads_and_looks_up_fields() -> None:
    rules = default_rules()
    assert rules.version >= 1
    assert rules.rule_for("config", "threshold") == "max"
    assert rules.rule_for("config", "boot_count") == "counter"
    assert rules.rule_for("config", "label") == "custom:longest"
    assert rules.rule_for("config", "not_listed") == "lww"
    assert rules.rule_for("other_ns", "threshold") == "lww"


def test_namespace_default_applies_before_the_global_default() -> None:
    rules = parse_rules(
        {"version": 2, "default": "lww", "namespaces": {"inv": {"default": "max", "fields": {"n": "min"}}}}
    )
    assert rules.rule_for("inv", "n") == "min"
    assert rules.rule_for("inv", "other") == "max"
    assert rules.rule_for("x", "n") == "lww"


def test_unknown_rule_error_points_at_the_field(tmp_path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nnamespaces:\n  config:\n    fields: {threshold: lvw, ok: max}\n")
    with pytest.raises(RulesError) as err:
        load_rules(path)
    msg = str(err.value)
    assert "namespaces.config.fields.threshold: unknown rule 'lvw'; expected one of lww, max, min" in msg
    assert str(path) in msg
    assert ".ok" not in msg


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"version": 0}, "version: Input should be greater than or equal to 1"),
        ({"default": "lww"}, "version: Field required"),
        ({"version": 1, "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"version": 1, "default": "newest"}, "default: unknown rule 'newest'"),
        (
            {"version": 1, "namespaces": {"c": {"default": "custom:Bad-Name"}}},
            "namespaces.c.default: custom rule",
        ),
    ],
)
def test_malformed_rules_name_the_field(doc: dict, expected: str) -> None:
    with pytest.raises(RulesError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        parse_rules(doc)


def test_bad_yaml_and_missing_file_are_clear(tmp_path) -> None:
    with pytest.raises(RulesError, match="does not exist"):
        load_rules(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [1\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(bad)
    bad.write_text("- 1\n")
    with pytest.raises(RulesError, match="expected a mapping"):
        load_rules(bad)


def test_custom_rule_needs_a_registered_resolver() -> None:
    doc = {"version": 1, "namespaces": {"c": {"fields": {"f": "custom:not_registered_yet"}}}}
    with pytest.raises(
        RulesError, match=r"namespaces\.c\.fields\.f: custom resolver 'not_registered_yet' is not registered"
    ):
        parse_rules(doc)
    rules = parse_rules(doc, require_resolvers=False)
    assert rules.rule_for("c", "f") == "custom:not_registered_yet"
    with pytest.raises(RulesError):
        rules.check_resolvers()


def test_register_resolver_rejects_broken_laws() -> None:
    with pytest.raises(ResolverLawError, match="not commutative"):

        @register_resolver("t_first")
        def first(a, b):
            return a

    with pytest.raises(ResolverLawError, match="not idempotent"):

        @register_resolver("t_sum", probes=[(1, 2, 3)])
        def add(a, b):
            return a + b

    assert "t_first" not in resolvers.registered() and "t_sum" not in resolvers.registered()
    with pytest.raises(ValueError, match="must match"):
        register_resolver("Bad Name")


def test_register_resolver_skips_probe_families_it_does_not_accept() -> None:
    try:

        @register_resolver("t_numeric_max")
        def numeric_max(a, b):
            if not isinstance(a, int | float) or not isinstance(b, int | float):
                raise TypeError("numbers only")
            return max(a, b)

        assert "t_numeric_max" in resolvers.registered()
        assert resolvers.resolve_all("t_numeric_max", [3, 1, 2]) == 3
    finally:
        unregister_resolver("t_numeric_max")


def test_rule_sql_agrees_with_rule_for() -> None:
    rules = parse_rules(
        {
            "version": 1,
            "default": "min",
            "namespaces": {
                "config": {"default": "lww", "fields": {"threshold": "max", "it's": "counter"}},
                "inv": {"fields": {"tags": "set_union"}},
            },
        }
    )
    pairs = [
        ("config", "threshold"),
        ("config", "it's"),
        ("config", "x"),
        ("inv", "tags"),
        ("inv", "x"),
        ("z", "tags"),
    ]
    con = duckdb.connect()
    for ns, f in pairs:
        got = con.execute(f"SELECT {rule_sql(rules, '$1', '$2')}", [ns, f]).fetchone()[0]
        assert got == rules.rule_for(ns, f), (ns, f)


def test_default_rules_ship_with_edge_sync() -> None:
    packaged = importlib.resources.files("edge_sync") / RULES_FILE
    assert packaged.is_file()
    assert default_rules() == load_rules(Path(str(packaged)))


def test_a_missing_rules_file_is_an_error_not_a_fallback(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(rules_mod, "RULES_FILE", "no_such_rules.yaml")
    with pytest.raises(RulesError, match=r"no_such_rules\.yaml does not exist: reinstall edge-sync"):
        default_rules()
    with pytest.raises(ConfigError, match=r"no_such_rules\.yaml does not exist"):
        state_rules(None)
    with pytest.raises(ConfigError, match=r"rules_path: state rules file .*nope\.yaml does not exist"):
        state_rules(tmp_path / "nope.yaml")
