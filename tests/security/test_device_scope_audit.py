"""``edgeplat security check-device-scopes``: the tenant's device role, role alias and IoT policy
read back from IAM and AWS IoT (moto server) and checked. Created here the way Terraform creates
them from the generated document; moto stores the policies but evaluates no policy variables, so
the verdict is the device-scope checker's."""

from __future__ import annotations

import json
import secrets

import pytest

from cli import main as cli_main
from edgeplat.security.tenant_storage import StorageTarget
from edgeplat.security.terraform_export import device_roles_document
from tests.support.moto_server import MOTO_CREDENTIALS, moto_client

pytestmark = pytest.mark.services


def _apply_like_terraform(endpoint: str, document: dict, tenant: str) -> tuple[str, str]:
    """What device_roles.tf creates for ``tenant``; returns (role name, alias ARN)."""
    entry = document["tenants"][tenant]
    iam, iot = moto_client(endpoint, "iam"), moto_client(endpoint, "iot")
    arn = iam.create_role(
        RoleName=entry["role_name"], AssumeRolePolicyDocument=json.dumps(entry["trust_policy"])
    )["Role"]["Arn"]
    iam.put_role_policy(
        RoleName=entry["role_name"],
        PolicyName=document["policy_name"],
        PolicyDocument=json.dumps(entry["role_policy"]),
    )
    alias_arn = iot.create_role_alias(
        roleAlias=entry["role_alias"], roleArn=arn, credentialDurationSeconds=document["credential_duration"]
    )["roleAliasArn"]
    policy = json.dumps(entry["iot_policy"]).replace(document["role_alias_arn_placeholder"], alias_arn)
    iot.create_policy(policyName=entry["iot_policy_name"], policyDocument=policy)
    return entry["role_name"], alias_arn


def test_the_cli_passes_the_generated_roles_and_names_a_widened_one(moto_server, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", MOTO_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MOTO_CREDENTIALS["aws_secret_access_key"])
    tenant, bucket = f"t{secrets.token_hex(4)}", f"fleet-{secrets.token_hex(4)}"
    args = ["--tenant", tenant, "--store-url", f"s3://{bucket}/batches", "--region", "us-east-1"]
    args += ["--iam-endpoint-url", moto_server, "--iot-endpoint-url", moto_server]

    assert cli_main(["security", "check-device-scopes", *args]) == 1
    assert "no IAM role edgeplat-d-" in capsys.readouterr().out

    document = device_roles_document(StorageTarget.from_url(f"s3://{bucket}/batches"), [tenant])
    role, _ = _apply_like_terraform(moto_server, document, tenant)
    assert cli_main(["security", "check-device-scopes", *args]) == 0
    assert ": OK" in capsys.readouterr().out

    # an operator grants the role the whole tenant prefix by hand: every device could write its siblings'
    moto_client(moto_server, "iam").put_role_policy(
        RoleName=role,
        PolicyName="extra",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{bucket}/batches/tenant={tenant}/*",
                    }
                ],
            }
        ),
    )
    assert cli_main(["security", "check-device-scopes", *args, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and "inline extra" in report["policies"]
    assert any("a sibling's key" in p for p in report["problems"]), report["problems"]
