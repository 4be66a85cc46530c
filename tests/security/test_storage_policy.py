"""The tenant storage policy and its checker, without a server: what it generates passes, and
every way a policy can reach beyond ``tenant=<T>/`` is named and refused."""

from __future__ import annotations

import copy

import pytest

from edgeplat.security.storage_policy import (
    StoragePolicyError,
    check_policies,
    policy_problems,
    tenant_prefix,
    tenant_storage_policy,
)

B = "fleet-bucket"
OBJ = f"arn:aws:s3:::{B}/tenant=A/*"


def _allow(action, resource, **extra) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource, **extra}],
    }


def _list(condition) -> dict:
    return _allow("s3:ListBucket", f"arn:aws:s3:::{B}", **({"Condition": condition} if condition else {}))


@pytest.mark.parametrize("allow_list", [False, True])
@pytest.mark.parametrize("base", ["", "fleet/prod"])
def test_the_generated_policy_passes_its_own_check(allow_list: bool, base: str) -> None:
    policy = tenant_storage_policy(B, "A", base_prefix=base, allow_list=allow_list)
    assert policy_problems(policy, B, "A", base_prefix=base) == []
    check_policies({"p": policy}, B, "A", base_prefix=base)
    objects = policy["Statement"][0]
    assert objects["Resource"] == f"arn:aws:s3:::{B}/{base + '/' if base else ''}tenant=A/*"  # trailing slash
    assert "s3:DeleteObject" not in objects["Action"]
    assert any(s.get("Action") == "s3:ListBucket" for s in policy["Statement"]) is allow_list


def test_one_tenants_policy_fails_the_check_for_another_tenant() -> None:
    problems = policy_problems(tenant_storage_policy(B, "A"), B, "AB")
    assert problems and all("tenant=AB/" in p for p in problems)


BAD = {
    "every action": (_allow("*", OBJ), "action '*'"),
    "s3 wildcard": (_allow("s3:*", OBJ), "action 's3:*'"),
    "object ACLs": (_allow("s3:PutObjectAcl", OBJ), "PutObjectAcl"),
    "delete": (_allow("s3:DeleteObject", OBJ), "DeleteObject"),
    "whole bucket": (_allow("s3:GetObject", f"arn:aws:s3:::{B}/*"), "not under"),
    "prefix without slash (tenant=AB confusion)": (
        _allow("s3:PutObject", f"arn:aws:s3:::{B}/tenant=A*"),
        "not under",
    ),
    "another tenant": (_allow("s3:PutObject", f"arn:aws:s3:::{B}/tenant=B/*"), "not under"),
    "another bucket": (_allow("s3:PutObject", "arn:aws:s3:::other-bucket/tenant=A/*"), "not under"),
    "wildcard bucket": (_allow("s3:PutObject", "arn:aws:s3:::*/tenant=A/*"), "not under"),
    "any resource": (_allow("s3:GetObject", "*"), "not under"),
    "policy variable": (
        _allow("s3:GetObject", f"arn:aws:s3:::{B}/tenant=A/${{aws:username}}/*"),
        "policy variable",
    ),
    "NotResource": (
        {
            "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "NotResource": f"arn:aws:s3:::{B}/tenant=B/*"}
            ]
        },
        "NotResource",
    ),
    "NotAction": ({"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": OBJ}]}, "NotAction"),
    "Principal": (_allow("s3:GetObject", OBJ, Principal="*"), "Principal"),
    "list without condition": (_list(None), "without an s3:prefix condition"),
    "list IfExists": (
        _list({"StringLikeIfExists": {"s3:prefix": ["tenant=A/*"]}}),
        "StringLike or StringEquals",
    ),
    "list ForAnyValue": (_list({"ForAnyValue:StringLike": {"s3:prefix": ["tenant=A/*"]}}), "StringLike or"),
    "list another prefix": (
        _list({"StringLike": {"s3:prefix": ["tenant=A/*", "tenant=B/*"]}}),
        "'tenant=B/*'",
    ),
    "list everything": (_list({"StringLike": {"s3:prefix": "*"}}), "'*' is not under"),
    "list on every bucket": (
        _allow("s3:ListBucket", "*", Condition={"StringLike": {"s3:prefix": "tenant=A/*"}}),
        "must be exactly",
    ),
    "list and objects in one statement": (
        _allow(["s3:ListBucket", "s3:GetObject"], [OBJ, f"arn:aws:s3:::{B}"]),
        "statement of its own",
    ),
    "odd effect": ({"Statement": [{"Effect": "allow", "Action": "s3:GetObject", "Resource": OBJ}]}, "Effect"),
    "not a policy": ({"Version": "2012-10-17"}, "no 'Statement'"),
    "not JSON": ("{nope", "not JSON"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_policy_reaching_beyond_the_tenant_prefix_is_refused_with_the_reason(name: str) -> None:
    policy, expected = BAD[name]
    problems = policy_problems(policy, B, "A")
    assert problems, f"{name} passed the check"
    assert any(expected in p for p in problems), problems
    with pytest.raises(StoragePolicyError, match="fix: remove the extra grants"):
        check_policies({"user inline x": policy}, B, "A")


def test_a_bad_statement_beside_good_ones_is_still_found() -> None:
    policy = copy.deepcopy(tenant_storage_policy(B, "A"))
    policy["Statement"].append({"Sid": "Oops", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})
    assert [p for p in policy_problems(policy, B, "A", name="p") if "statement Oops" in p]


def test_deny_statements_only_narrow_and_are_accepted() -> None:
    policy = _allow("s3:GetObject", OBJ)
    policy["Statement"].append({"Effect": "Deny", "Action": "*", "Resource": "*"})
    assert policy_problems(policy, B, "A") == []


@pytest.mark.parametrize("bad", ["../x", "a/*", "a/$x", "a//b"])
def test_bad_base_prefixes_and_ids_are_refused_early(bad: str) -> None:
    with pytest.raises(ValueError, match="prefix|key"):
        tenant_prefix("A", bad)
    with pytest.raises(ValueError, match="tenant id"):
        tenant_prefix("A/../B")
