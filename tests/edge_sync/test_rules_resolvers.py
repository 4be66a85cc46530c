"""An operator's rules file and resolver code from outside the package, validated at load."""

from __future__ import annotations

import sys

import pytest

from edge_sync import resolvers
from edge_sync.rules import RulesError, load_rules, parse_rules
from tests.support.operator_rules import (
    FIRST_WINS,
    SMALLEST,
    unique,
    write_distribution,
    write_resolver_module,
    write_rules,
)


def test_a_resolver_file_next_to_the_rules_is_loaded_into_the_rule_set_only(tmp_path) -> None:
    name = unique("smallest")
    write_resolver_module(tmp_path / "ops" / "resolvers", "smallest", SMALLEST.format(name=name))
    path = write_rules(
        tmp_path / "ops",
        version=2,
        label_rule=f"custom:{name}",
        resolvers=[{"path": "resolvers/smallest.py"}],
    )
    rules = load_rules(path)
    assert rules.version == 2 and rules.rule_for("config", "label") == f"custom:{name}"
    assert rules.resolver(name)("b", "a") == "a"
    assert rules.loaded_resolvers() == {name: "path 'resolvers/smallest.py'"}
    assert name not in resolvers.registered()  # no leak into the process-wide registry
    other = parse_rules(
        {"version": 1, "namespaces": {"config": {"fields": {"label": f"custom:{name}"}}}},
        require_resolvers=False,
    )
    with pytest.raises(KeyError, match=name):
        other.resolver(name)


def test_a_module_on_sys_path_is_loaded_and_the_same_rules_hash_alike(tmp_path, monkeypatch) -> None:
    name, module = unique("smallest"), unique("ops_resolvers")
    write_resolver_module(tmp_path / "site", module, SMALLEST.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = write_rules(
        tmp_path / "ops", version=3, label_rule=f"custom:{name}", resolvers=[{"module": module}]
    )
    first, again = load_rules(path), load_rules(path)  # the second import is the cached module
    assert first.resolver(name) is again.resolver(name)
    assert first.content_hash == again.content_hash
    assert parse_rules(first.document()).content_hash == first.content_hash
    assert name not in resolvers.registered()


def test_a_non_commutative_resolver_is_refused_at_load_naming_it(tmp_path) -> None:
    name = unique("first")
    write_resolver_module(tmp_path / "ops", "bad", FIRST_WINS.format(name=name))
    path = write_rules(
        tmp_path / "ops", version=2, label_rule=f"custom:{name}", resolvers=[{"path": "bad.py"}]
    )
    with pytest.raises(RulesError) as err:
        load_rules(path)
    message = str(err.value)
    assert f"resolver {name!r} is not commutative" in message
    assert "resolvers[0] (path 'bad.py')" in message and str(path) in message
    assert name not in resolvers.registered()


def test_a_missing_module_is_named_with_the_fix(tmp_path) -> None:
    missing = unique("no_such_resolvers")
    path = write_rules(tmp_path, version=2, label_rule="custom:x", resolvers=[{"module": missing}])
    with pytest.raises(RulesError, match=rf"module '{missing}' cannot be imported .*install the package"):
        load_rules(path)


def test_a_missing_entry_point_and_a_missing_file_are_named(tmp_path) -> None:
    path = write_rules(tmp_path, version=2, label_rule="lww", resolvers=[{"entry_point": "nope"}])
    with pytest.raises(RulesError, match=r"no entry point 'nope' in group edgeplat\.resolvers"):
        load_rules(path)
    path = write_rules(tmp_path, version=2, label_rule="lww", resolvers=[{"path": "gone.py"}])
    with pytest.raises(RulesError, match=r"resolver file .*gone\.py does not exist"):
        load_rules(path)


def test_an_unknown_rule_is_named_with_the_allowed_ones(tmp_path) -> None:
    path = write_rules(tmp_path, version=2, label_rule="longest_wins")
    with pytest.raises(
        RulesError,
        match=r"namespaces\.config\.fields\.label: unknown rule 'longest_wins'; expected one of lww",
    ):
        load_rules(path)


def test_a_rule_naming_a_resolver_its_modules_do_not_register_is_refused(tmp_path, monkeypatch) -> None:
    name, module = unique("smallest"), unique("ops_resolvers")
    write_resolver_module(tmp_path / "site", module, SMALLEST.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = write_rules(tmp_path, version=2, label_rule="custom:tallest", resolvers=[{"module": module}])
    with pytest.raises(
        RulesError,
        match=rf"fields\.label: custom resolver 'tallest' is not registered; none of this file's resolvers \(module '{module}'\)",
    ):
        load_rules(path)


def test_a_resolvers_entry_needs_exactly_one_source(tmp_path) -> None:
    path = write_rules(tmp_path, version=2, label_rule="lww", resolvers=[{"module": "a", "path": "b.py"}])
    with pytest.raises(RulesError, match="exactly one of module, entry_point or path"):
        load_rules(path)


def test_rules_from_a_document_never_load_resolver_files(tmp_path) -> None:
    name = unique("smallest")
    write_resolver_module(tmp_path, "shipped_code", SMALLEST.format(name=name))
    doc = {
        "version": 2,
        "default": f"custom:{name}",
        "resolvers": [{"path": str(tmp_path / "shipped_code.py")}],
    }
    with pytest.raises(RulesError, match="devices run only resolvers they have installed"):
        parse_rules(doc, allow_paths=False)
    assert not [m for m in sys.modules if m.startswith("_edgeplat_resolvers_shipped_code")]


def test_entry_points_name_a_module_or_a_plain_function(tmp_path, monkeypatch) -> None:
    name, module = unique("smallest"), unique("acme_resolvers")
    site = tmp_path / "site"
    write_resolver_module(
        site,
        module,
        SMALLEST.format(name=name),
        "\ndef shortest(a, b):\n    return a if (len(str(a)), str(a)) <= (len(str(b)), str(b)) else b\n",
    )
    write_distribution(site, unique("acme"), {"acme_all": module, "shortest": f"{module}:shortest"})
    monkeypatch.syspath_prepend(str(site))
    rules = parse_rules(
        {
            "version": 2,
            "namespaces": {"config": {"fields": {"label": f"custom:{name}", "note": "custom:shortest"}}},
            "resolvers": [{"entry_point": "acme_all"}, {"entry_point": "shortest"}],
        }
    )
    assert rules.resolver(name)("b", "a") == "a" and rules.resolver("shortest")("bb", "c") == "c"
    assert "shortest" not in resolvers.registered()
