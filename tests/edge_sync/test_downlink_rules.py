"""The downlink adopts the operator's rules from the document only with resolvers the device has."""

from __future__ import annotations

from edge_sync.desired import StateEdit, StateRulesDoc, state_rules_doc
from edge_sync.downlink import AGENT_NAMESPACE, Downlink
from edge_sync.hlc import pack
from edge_sync.rules import default_rules, load_rules
from tests.support.device import NOW
from tests.support.downlink import PLATFORM, alerts, publish
from tests.support.operator_rules import SMALLEST, unique, write_resolver_module, write_rules


def downlink(env) -> Downlink:
    return Downlink(env.cache, env.store, platform_keys=PLATFORM.public_key_bytes(), rules=default_rules())


def label_edit(value: str, at: int) -> StateEdit:
    return StateEdit(namespace="config", key="main", field="label", value=value, hlc=pack(NOW + at, 0))


def operator_rules(tmp_path, monkeypatch, version: int):
    name, module = unique("smallest"), unique("device_resolvers")
    write_resolver_module(tmp_path / "site", module, SMALLEST.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return load_rules(
        write_rules(
            tmp_path / f"v{version}",
            version=version,
            label_rule=f"custom:{name}",
            resolvers=[{"module": module}],
        )
    )


def test_rules_are_adopted_kept_across_restarts_and_dropped_when_the_document_omits_them(
    env, tmp_path, monkeypatch
) -> None:
    rules = operator_rules(tmp_path, monkeypatch, 4)
    publish(
        env.store,
        1,
        state_rules=state_rules_doc(rules),
        state_edits=[label_edit('"bb"', 1), label_edit('"a"', 2)],
    )
    result = downlink(env).pull()
    assert (result.status, result.rules_version, result.rules_error) == ("applied", 4, None)
    assert env.cache.get_state("config", "main")["label"] == "a"  # smallest, where longest keeps "bb"
    assert env.cache.get_state(AGENT_NAMESPACE, "rules")["version"] == 4
    restarted = downlink(env)  # a new agent process: merges under the adopted rules at once
    assert restarted.rules.content_hash == rules.content_hash
    publish(env.store, 2)  # the platform went back to the packaged rules
    assert restarted.pull().rules_version == default_rules().version
    assert env.cache.get_state(AGENT_NAMESPACE, "rules")["version"] == default_rules().version


def test_rules_naming_a_resolver_the_device_lacks_are_refused_and_the_old_ones_kept(
    env, tmp_path, monkeypatch
) -> None:
    adopted = operator_rules(tmp_path, monkeypatch, 4)
    dl = downlink(env)
    publish(env.store, 1, state_rules=state_rules_doc(adopted))
    assert dl.pull().rules_version == 4
    missing = unique("resolvers_not_on_this_device")
    doc = {"version": 5, "default": "custom:fancy", "resolvers": [{"module": missing}]}
    publish(
        env.store,
        2,
        state_rules=StateRulesDoc(version=5, content_hash="0" * 64, rules=doc),
        state_edits=[label_edit('"zz"', 3)],
    )
    result = dl.pull()
    assert result.status == "applied" and result.rules_version == 4  # the rest of the document applies
    assert f"module '{missing}' cannot be imported" in result.rules_error
    assert dl.rules.content_hash == adopted.content_hash
    assert env.cache.get_state(AGENT_NAMESPACE, "rules")["refused"].startswith(
        "state rules version 5 refused"
    )
    assert [a["code"] for a in alerts(env.cache)] == ["desired_rules_refused"]
    publish(env.store, 3, state_rules=state_rules_doc(adopted))  # the platform went back
    assert dl.pull().rules_error is None
    assert env.cache.get_state(AGENT_NAMESPACE, "rules")["refused"] is None


def test_changed_rules_under_the_same_version_are_refused(env, tmp_path, monkeypatch) -> None:
    adopted = operator_rules(tmp_path, monkeypatch, 4)
    dl = downlink(env)
    publish(env.store, 1, state_rules=state_rules_doc(adopted))
    dl.pull()
    changed = load_rules(write_rules(tmp_path / "changed", version=4, label_rule="max"))
    publish(env.store, 2, state_rules=state_rules_doc(changed))
    assert "same version; a rules change must bump the version" in dl.pull().rules_error
    assert dl.rules.content_hash == adopted.content_hash


def test_a_document_whose_rules_do_not_match_their_hash_is_refused(env, tmp_path, monkeypatch) -> None:
    rules = operator_rules(tmp_path, monkeypatch, 4)
    forged = StateRulesDoc(version=4, content_hash="f" * 64, rules=rules.document())
    publish(env.store, 1, state_rules=forged)
    assert "do not match its version and content hash" in downlink(env).pull().rules_error
