"""Check what is deployed on AWS for a tenant's per-device write scopes (``edgeplat security check-device-scopes``).

Terraform creates the device role, its role alias and the IoT policy from the generated
document (:mod:`edgeplat.security.terraform_export`); this reads them back from IAM and AWS
IoT and runs the device-scope checker over what is there, so a grant an operator added by
hand (an inline or attached role policy, a wider trust, an alias pointing at another role,
an IoT policy naming other aliases) is found. The identity needs ``iam:GetRole``,
``iam:ListRolePolicies``, ``iam:GetRolePolicy``, ``iam:ListAttachedRolePolicies``,
``iam:GetPolicy``, ``iam:GetPolicyVersion``, ``iot:DescribeRoleAlias`` and ``iot:GetPolicy``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgeplat.security.device_scopes import (
    device_role_name,
    device_scope_problems,
    iot_policy_name,
    iot_policy_problems,
    role_alias_name,
    trust_policy_problems,
)
from edgeplat.security.storage_policy import POLICY_VERSION
from edgeplat.security.tenant_storage import StorageTarget


@dataclass
class DeviceScopeCheck:
    """The verdict on a tenant's deployed device role: ``ok`` when ``problems`` is empty."""

    tenant_id: str
    role: str
    role_alias: str
    iot_policy: str
    policies: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


class DeviceScopeAudit:
    """Reads a tenant's device role, alias and IoT policy (boto3 IAM and IoT clients) and checks them."""

    def __init__(self, iam: Any, iot: Any, target: StorageTarget) -> None:
        self.iam, self.iot, self.target = iam, iot, target

    def check(self, tenant_id: str, thing_name: str = "device-1") -> DeviceScopeCheck:
        role, alias, iot_name = (
            device_role_name(tenant_id),
            role_alias_name(tenant_id),
            iot_policy_name(tenant_id),
        )
        result = DeviceScopeCheck(tenant_id, role, alias, iot_name, [], [])
        fix = "create it with terraform apply (infrastructure/modules/tenant_storage/device_roles.tf)"
        try:
            described = self.iam.get_role(RoleName=role)["Role"]
        except self.iam.exceptions.NoSuchEntityException:
            result.problems.append(f"no IAM role {role}: {fix}")
            return result
        result.problems += trust_policy_problems(described["AssumeRolePolicyDocument"], f"role {role} trust")
        policies = self._policies(role)
        result.policies = sorted(policies)
        merged = {
            "Version": POLICY_VERSION,
            "Statement": [st for doc in policies.values() for st in _statements(doc)],
        }
        result.problems += device_scope_problems(
            merged,
            self.target.bucket,
            tenant_id,
            thing_name=thing_name,
            base_prefix=self.target.base_prefix,
            partition=self.target.partition,
            name=f"role {role} policies",
        )
        try:
            desc = self.iot.describe_role_alias(roleAlias=alias)["roleAliasDescription"]
        except self.iot.exceptions.ResourceNotFoundException:
            result.problems.append(f"no IoT role alias {alias}: {fix}")
            return result
        if desc["roleArn"] != described["Arn"]:
            result.problems.append(
                f"role alias {alias} points at {desc['roleArn']}, not at {described['Arn']}"
            )
        try:
            document = self.iot.get_policy(policyName=iot_name)["policyDocument"]
        except self.iot.exceptions.ResourceNotFoundException:
            result.problems.append(f"no IoT policy {iot_name}: {fix}")
            return result
        result.problems += iot_policy_problems(document, desc["roleAliasArn"], f"IoT policy {iot_name}")
        return result

    def _policies(self, role: str) -> dict[str, Any]:
        iam, docs = self.iam, {}
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=role):
            for name in page["PolicyNames"]:
                docs[f"inline {name}"] = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role):
            for att in page["AttachedPolicies"]:
                version = iam.get_policy(PolicyArn=att["PolicyArn"])["Policy"]["DefaultVersionId"]
                docs[f"managed {att['PolicyArn']}"] = iam.get_policy_version(
                    PolicyArn=att["PolicyArn"], VersionId=version
                )["PolicyVersion"]["Document"]
        return docs


def _statements(doc: Any) -> list[Any]:
    if isinstance(doc, str):
        doc = json.loads(doc)
    statements = doc.get("Statement", []) if isinstance(doc, dict) else []
    return [statements] if isinstance(statements, dict) else list(statements)
