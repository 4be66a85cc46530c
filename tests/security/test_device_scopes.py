"""Per-device write scopes: the device role policy the platform generates lets a device write its own
prefix only, as IAM evaluates it for a concrete thing name.

Why the policy checker and not a server: the role policy names ``${credentials-iot:ThingName}``,
which only the AWS IoT credentials provider sets. moto enforces IAM policies but evaluates
neither policy variables nor conditions, so no local server can show a sibling's write refused;
``edgeplat.security.policy_eval`` substitutes the variable as IAM does and decides each request.
"""

from __future__ import annotations

import copy
import json

import pytest

from edgeplat.security.device_scopes import (
    DeviceScopeError,
    check_device_scopes,
    check_thing_name,
    device_role_name,
    device_role_policy,
    device_scope_problems,
    iot_policy,
    iot_policy_problems,
    role_alias_arn,
    role_alias_definition,
    role_alias_name,
    trust_policy,
    trust_policy_problems,
)
from edgeplat.security.policy_eval import may_allow, surely_allows
from edgeplat.security.storage_policy import tenant_storage_policy
from edgeplat.security.tenant_storage import StorageTarget
from edgeplat.security.terraform_export import device_roles_document
from tests.support.deploy_tools import ENVIRONMENTS, REPO
from tests.support.terraform import blocks

B = "fleet-bucket"
INFRA = REPO / "infrastructure"
ALIAS_ARN = role_alias_arn(role_alias_name("A"), region="eu-west-1", account_id="123456789012")
CTX = {"credentials-iot:ThingName": "d1"}


def _key(tenant: str, device: str, rest: str = "stream=telemetry/1-2.batch", base: str = "") -> str:
    return f"arn:aws:s3:::{B}/{base + '/' if base else ''}tenant={tenant}/device={device}/{rest}"


@pytest.mark.parametrize("base", ["", "batches"])
def test_the_generated_policy_refuses_a_write_to_a_siblings_prefix(base: str) -> None:
    policy = device_role_policy(B, "A", base_prefix=base)
    assert device_scope_problems(policy, B, "A", thing_name="d1", base_prefix=base) == []
    assert surely_allows(policy, "s3:PutObject", _key("A", "d1", base=base), CTX)  # own prefix
    for sibling in ("d2", "d10", "d1x"):
        assert not may_allow(policy, "s3:PutObject", _key("A", sibling, base=base), CTX), sibling
        assert not may_allow(policy, "s3:GetObject", _key("A", sibling, "desired.json", base), CTX)
    for other in ("B", "AB"):  # tenant=AB/ must not match a tenant=A* pattern
        assert not may_allow(policy, "s3:PutObject", _key(other, "d1", base=base), CTX), other
    assert not may_allow(policy, "s3:ListBucket", f"arn:aws:s3:::{B}", CTX)
    assert not may_allow(policy, "s3:DeleteObject", _key("A", "d1", base=base), CTX)
    assert not may_allow(policy, "s3:PutObject", _key("A", "d1", "desired.json", base), CTX)
    # reads what the agent reads: its desired state and the tenant's release manifests
    assert surely_allows(policy, "s3:GetObject", _key("A", "d1", "desired.json", base), CTX)
    releases = f"arn:aws:s3:::{B}/{base + '/' if base else ''}tenant=A/releases/1.2.0/release.json"
    assert surely_allows(policy, "s3:GetObject", releases, CTX)
    assert not may_allow(policy, "s3:PutObject", releases, CTX)


def test_without_a_thing_name_the_role_grants_no_device_prefix() -> None:
    policy = device_role_policy(B, "A")
    assert not may_allow(policy, "s3:PutObject", _key("A", "d1"), {})
    # a literal '${credentials-iot:ThingName}' device segment is not a match either
    assert not may_allow(policy, "s3:PutObject", _key("A", "${credentials-iot:ThingName}"), {})


def test_todays_tenant_wide_policy_fails_the_device_check_for_the_sibling_write() -> None:
    problems = device_scope_problems(tenant_storage_policy(B, "A"), B, "A", thing_name="d1")
    assert any("a sibling's key" in p and "s3:PutObject" in p for p in problems), problems
    assert any("without a thing name" in p for p in problems)


def _with(statement: dict) -> dict:
    policy = copy.deepcopy(device_role_policy(B, "A"))
    policy["Statement"].append(statement)
    return policy


BAD = {
    "prefix without slash": (
        _with(
            {
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{B}/tenant=A/device=${{credentials-iot:ThingName}}*",
            }
        ),
        "a sibling's key",
    ),
    "tenant wide": (
        _with({"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{B}/tenant=A/*"}),
        "a sibling's key",
    ),
    "delete": (
        _with(
            {
                "Effect": "Allow",
                "Action": "s3:DeleteObject",
                "Resource": f"arn:aws:s3:::{B}/tenant=A/device=${{credentials-iot:ThingName}}/*",
            }
        ),
        "may delete",
    ),
    "conditional list": (
        _with(
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{B}",
                "Condition": {"StringLike": {"s3:prefix": "tenant=A/*"}},
            }
        ),
        "may list",
    ),
    "variable in the tenant part": (
        _with(
            {
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{B}/tenant=${{credentials-iot:ThingTypeName, 'B'}}/*",
            }
        ),
        "policy variable",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_role_policy_reaching_beyond_the_device_prefix_is_refused(name: str) -> None:
    policy, expected = BAD[name]
    problems = device_scope_problems(policy, B, "A", thing_name="d1")
    assert any(expected in p for p in problems), problems
    with pytest.raises(DeviceScopeError, match="fix: regenerate"):
        check_device_scopes(
            "A",
            bucket=B,
            role_policy=policy,
            trust=trust_policy(),
            iot=iot_policy(ALIAS_ARN),
            alias_arn=ALIAS_ARN,
        )


def test_a_deny_on_the_own_prefix_is_caught_as_a_device_that_cannot_upload() -> None:
    policy = _with({"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{B}/tenant=A/*"})
    assert any("cannot write its own" in p for p in device_scope_problems(policy, B, "A", thing_name="d1"))


def test_the_generated_trust_alias_and_iot_policy_pass_and_wider_ones_do_not() -> None:
    check_device_scopes(
        "A",
        bucket=B,
        role_policy=device_role_policy(B, "A"),
        trust=trust_policy(),
        iot=iot_policy(ALIAS_ARN),
        alias_arn=ALIAS_ARN,
    )
    assert trust_policy()["Statement"][0]["Principal"] == {"Service": "credentials.iot.amazonaws.com"}
    wide_trust = copy.deepcopy(trust_policy())
    wide_trust["Statement"][0]["Principal"] = {"AWS": "*"}
    assert trust_policy_problems(wide_trust)
    any_alias = iot_policy(ALIAS_ARN.rsplit("/", 1)[0] + "/*")
    assert any("exactly the tenant's role alias" in p for p in iot_policy_problems(any_alias, ALIAS_ARN))
    more = copy.deepcopy(iot_policy(ALIAS_ARN))
    more["Statement"][0]["Action"] = ["iot:AssumeRoleWithCertificate", "iot:Connect"]
    assert iot_policy_problems(more, ALIAS_ARN)
    alias = role_alias_definition("A", "arn:aws:iam::123456789012:role/" + device_role_name("A"))
    assert alias == {
        "roleAlias": "edgeplat-d-_a",
        "roleArn": "arn:aws:iam::123456789012:role/edgeplat-d-_a",
        "credentialDurationSeconds": 3600,
    }
    with pytest.raises(ValueError, match="900..3600"):
        role_alias_definition("A", alias["roleArn"], 7200)


def test_names_are_distinct_per_tenant_and_fit_aws_limits() -> None:
    assert device_role_name("Acme") != device_role_name("acme")
    long = "t" * 128
    assert len(device_role_name(long)) == 64 and len(role_alias_name(long)) <= 128


@pytest.mark.parametrize("bad", ["dev.1", "a/b"])
def test_a_device_id_that_cannot_be_a_thing_name_is_refused_with_the_fix(bad: str) -> None:
    with pytest.raises(ValueError, match="thing name|device id"):
        check_thing_name(bad)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_committed_terraform_document_carries_checked_device_roles(env: str) -> None:
    """What Terraform creates for per-device scopes is the generator's, and passes the checker once
    the alias ARN AWS assigns is filled in where the document's placeholder stands."""
    document = json.loads((INFRA / "environments" / env / "tenant-storage.json").read_text())
    roles = document["device_roles"]
    assert roles == device_roles_document(
        StorageTarget.from_url(document["store_url"], partition=document["partition"]), document["tenants"]
    )
    assert set(roles["tenants"]) == set(document["tenants"])
    for tenant, entry in roles["tenants"].items():
        alias_arn = role_alias_arn(entry["role_alias"], region="eu-west-1", account_id="123456789012")
        iot = json.loads(
            json.dumps(entry["iot_policy"]).replace(roles["role_alias_arn_placeholder"], alias_arn)
        )
        check_device_scopes(
            tenant,
            bucket=document["bucket"],
            base_prefix=document["base_prefix"],
            role_policy=entry["role_policy"],
            trust=entry["trust_policy"],
            iot=iot,
            alias_arn=alias_arn,
        )


def test_terraform_makes_the_device_roles_from_the_document() -> None:
    resources = blocks(INFRA / "modules" / "tenant_storage", "resource")
    role, policy = resources[("aws_iam_role", "device")], resources[("aws_iam_role_policy", "device")]
    alias, iot = resources[("aws_iot_role_alias", "device")], resources[("aws_iot_policy", "device")]
    assert role["name"] == "${each.value.role_name}"
    assert role["assume_role_policy"] == "${jsonencode(each.value.trust_policy)}"
    assert policy["policy"] == "${jsonencode(each.value.role_policy)}"
    assert alias["role_arn"] == "${aws_iam_role.device[each.key].arn}"
    assert alias["alias"] == "${each.value.role_alias}"
    assert iot["policy"] == (
        "${replace(jsonencode(each.value.iot_policy), local.device_roles.role_alias_arn_placeholder, "
        "aws_iot_role_alias.device[each.key].arn)}"
    )


def _one(effect: str, resource, action="s3:PutObject", **extra) -> dict:
    return {"Statement": [{"Effect": effect, "Action": action, "Resource": resource, **extra}]}


@pytest.mark.parametrize(
    ("policy", "key", "context", "allowed"),
    [
        # a variable's value is literal: a thing named 'd*' does not widen the pattern
        (
            _one("Allow", "arn:aws:s3:::b/${credentials-iot:ThingName}/*"),
            "arn:aws:s3:::b/dx/k",
            {"credentials-iot:ThingName": "d*"},
            False,
        ),
        (
            _one("Allow", "arn:aws:s3:::b/${credentials-iot:ThingName}/*"),
            "arn:aws:s3:::b/d*/k",
            {"credentials-iot:ThingName": "d*"},
            True,
        ),
        # variable keys ignore case; a default applies when the key is missing
        (_one("Allow", "arn:aws:s3:::b/${CREDENTIALS-IOT:thingname}/*"), "arn:aws:s3:::b/d1/k", CTX, True),
        (
            _one("Allow", "arn:aws:s3:::b/${credentials-iot:ThingName, 'none'}/*"),
            "arn:aws:s3:::b/none/k",
            {},
            True,
        ),
        # ${*} is a literal star, a bare * any run of characters, ? one character
        (_one("Allow", "arn:aws:s3:::b/a${*}"), "arn:aws:s3:::b/ab", {}, False),
        (_one("Allow", "arn:aws:s3:::b/a${*}"), "arn:aws:s3:::b/a*", {}, True),
        (_one("Allow", "arn:aws:s3:::b/a?"), "arn:aws:s3:::b/ab", {}, True),
        (_one("Allow", "arn:aws:s3:::b/a?"), "arn:aws:s3:::b/abc", {}, False),
        # actions ignore case, resources do not
        (_one("Allow", "arn:aws:s3:::b/*", action="S3:putobject"), "arn:aws:s3:::b/k", {}, True),
        (_one("Allow", "arn:aws:s3:::B/*"), "arn:aws:s3:::b/k", {}, False),
        # NotResource grants everything it does not name
        (
            {"Statement": [{"Effect": "Allow", "Action": "s3:PutObject", "NotResource": "arn:aws:s3:::b/x"}]},
            "arn:aws:s3:::b/y",
            {},
            True,
        ),
    ],
)
def test_the_evaluator_follows_iam_matching_rules(policy, key, context, allowed) -> None:
    assert may_allow(policy, "s3:PutObject", key, context) is allowed
    assert surely_allows(policy, "s3:PutObject", key, context) is allowed


def test_conditions_count_against_the_claim_being_proven() -> None:
    conditional_allow = _one("Allow", "arn:aws:s3:::b/*", Condition={"Bool": {"aws:SecureTransport": "true"}})
    assert may_allow(conditional_allow, "s3:PutObject", "arn:aws:s3:::b/k")  # cannot prove a refusal
    assert not surely_allows(conditional_allow, "s3:PutObject", "arn:aws:s3:::b/k")  # nor an allow
    both = _one("Allow", "arn:aws:s3:::b/*")
    both["Statement"].append({"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"x": {}}})
    assert may_allow(both, "s3:PutObject", "arn:aws:s3:::b/k")
    assert not surely_allows(both, "s3:PutObject", "arn:aws:s3:::b/k")
