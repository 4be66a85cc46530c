"""infrastructure/: every Terraform file parses (python-hcl2), the tenants' IAM users and policies
come from the platform's own generator, and the names the platform expects (buckets, IAM user
naming, thing-group prefixes, region) are the ones Terraform creates."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgeplat.backends.greengrass import GROUP_PREFIX
from edgeplat.security.storage_policy import policy_problems, tenant_prefix
from edgeplat.security.tenant_storage import POLICY_NAME, TENANT_TAG, USER_PATH, iam_user_name
from edgeplat.security.terraform_export import regenerate
from tests.support.deploy_tools import ENVIRONMENTS, REPO, yaml_documents
from tests.support.terraform import blocks, load

INFRA = REPO / "infrastructure"
MODULES = INFRA / "modules"


def _document(env: str) -> dict[str, Any]:
    return json.loads((INFRA / "environments" / env / "tenant-storage.json").read_text())


def _overlay_config(env: str) -> dict[str, str]:
    docs = yaml_documents(REPO / "deploy" / "k8s" / "overlays" / env / "config.yaml")
    return next(d for d in docs if d["metadata"]["name"] == "edgeplat-env")["data"]


def test_every_terraform_file_parses() -> None:
    files = sorted(INFRA.rglob("*.tf"))
    folders = {p.parent.relative_to(INFRA).as_posix() for p in files}
    assert {"aws", "azure", "modules/tenant_storage", "modules/iot_fleet", "modules/catalog_db"} <= folders
    assert {"environments/dev", "environments/prod"} <= folders
    for path in files:
        assert load(path), path


def test_every_module_source_exists() -> None:
    for path in sorted(INFRA.rglob("*.tf")):
        for block in load(path).get("module", []):
            for name, body in block.items():
                assert (path.parent / body["source"]).resolve().is_dir(), f"{path}: module {name}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_tenant_document_is_what_the_generator_writes(env: str) -> None:
    """One source: a tenant added by hand, or a policy changed in the platform, shows here until
    scripts/export-tenant-storage is run again."""
    document = _document(env)
    assert document == regenerate(document)
    assert document["tenants"], "an environment without tenants"
    for tenant, entry in document["tenants"].items():
        assert entry["iam_user"] == iam_user_name(tenant)
        assert entry["prefix"] == tenant_prefix(tenant, document["base_prefix"])
        assert (
            policy_problems(entry["policy"], document["bucket"], tenant, base_prefix=document["base_prefix"])
            == []
        )
    assert (document["user_path"], document["policy_name"], document["tenant_tag"]) == (
        USER_PATH,
        POLICY_NAME,
        TENANT_TAG,
    )


def test_a_tampered_document_is_caught() -> None:
    document = _document("prod")
    tenant = next(iter(document["tenants"]))
    document["tenants"][tenant]["policy"]["Statement"][0]["Resource"] = f"arn:aws:s3:::{document['bucket']}/*"
    assert document != regenerate(document)
    assert policy_problems(
        document["tenants"][tenant]["policy"], document["bucket"], tenant, base_prefix="batches"
    )


def test_terraform_takes_users_and_policies_from_the_document() -> None:
    resources = blocks(MODULES / "tenant_storage", "resource")
    user, policy = resources[("aws_iam_user", "tenant")], resources[("aws_iam_user_policy", "tenant")]
    assert user["name"] == "${each.value.iam_user}" and user["path"] == "${var.tenant_storage.user_path}"
    assert user["tags"] == {"${(var.tenant_storage.tenant_tag)}": "${each.key}"}
    assert policy["policy"] == "${jsonencode(each.value.policy)}"
    assert policy["name"] == "${var.tenant_storage.policy_name}"
    assert resources[("aws_s3_bucket", "fleet")]["bucket"] == "${var.tenant_storage.bucket}"
    assert not [r for r in resources if r[0] == "aws_iam_access_key"], (
        "keys are issued into Vault, not Terraform state"
    )
    for env in ENVIRONMENTS:
        local = blocks(INFRA / "environments" / env, "locals")
        assert (
            local[("tenant_storage",)]["value"] == '${jsondecode(file("${path.module}/tenant-storage.json"))}'
        )
        assert (
            blocks(INFRA / "environments" / env, "module")[("aws",)]["tenant_storage"]
            == "${local.tenant_storage}"
        )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_platform_configuration_names_what_terraform_creates(env: str) -> None:
    config, document = _overlay_config(env), _document(env)
    local = {k[0]: v["value"] for k, v in blocks(INFRA / "environments" / env, "locals").items()}
    assert local["environment"] == env
    assert config["EDGEPLAT_OBJECTS_URL"] == document["store_url"] == f"s3://{document['bucket']}/batches"
    lake = blocks(MODULES / "tenant_storage", "resource")[("aws_s3_bucket", "lake")]["bucket"]
    lake_data = blocks(INFRA / "aws", "output")[("lake_data",)]["value"]
    assert lake_data == "s3://${module.tenant_storage.lake_bucket}/edgeplat/"
    assert config["EDGEPLAT_LAKE_DATA"] == f"s3://{lake.replace('${var.environment}', env)}/edgeplat/"
    assert config["AWS_REGION"] == local["region"]


def test_thing_group_prefixes_match_the_greengrass_backend() -> None:
    variables = blocks(MODULES / "iot_fleet", "variable")
    platform_prefix = variables[("platform_thing_group_prefix",)]["default"]
    tenant_prefix_ = variables[("tenant_group_prefix",)]["default"]
    assert platform_prefix == GROUP_PREFIX
    # the backend reads every group under its prefix as a rollout phase's
    assert not tenant_prefix_.startswith(GROUP_PREFIX)
    policy = blocks(MODULES / "iot_fleet", "data")[("aws_iam_policy_document", "platform_greengrass")]
    groups = next(s for s in policy["statement"] if s["sid"] == "RolloutThingGroups")
    assert groups["resources"] == ["${local.arn_prefix}:thinggroup/${var.platform_thing_group_prefix}*"]


def test_the_clouds_have_the_parts_the_platform_uses() -> None:
    aws = {r for m in ("tenant_storage", "iot_fleet", "catalog_db") for r in blocks(MODULES / m, "resource")}
    aws |= set(blocks(INFRA / "aws", "resource"))
    assert {
        ("aws_iot_thing_group", "tenant"),
        ("aws_iam_role", "token_exchange"),
        ("aws_iot_role_alias", "token_exchange"),
        ("aws_db_instance", "catalog"),
        ("aws_s3_bucket_versioning", "all"),
    } <= aws
    db = blocks(MODULES / "catalog_db", "resource")[("aws_db_instance", "catalog")]
    assert db["engine"] == "postgres" and db["storage_encrypted"] is True
    assert db["manage_master_user_password"] is True and "password" not in db
    azure = set(blocks(INFRA / "azure", "resource"))
    assert {t for t, _ in azure} >= {
        "azurerm_iothub",
        "azurerm_storage_account",
        "azurerm_container_registry",
    }


def test_no_secret_is_written_in_terraform() -> None:
    secret_words = ("password", "secret_key", "access_key", "connection_string")
    for folder in sorted({p.parent for p in INFRA.rglob("*.tf")}):
        for kind in ("resource", "module"):
            for labels, body in blocks(folder, kind).items():
                literal = [
                    k
                    for k, v in body.items()
                    if any(w in k for w in secret_words) and isinstance(v, str) and "${" not in v
                ]
                assert literal == [], f"{folder.name} {labels}: {literal}"


def test_the_generator_script_writes_the_committed_document(tmp_path: Path) -> None:
    document = _document("dev")
    args = [str(REPO / "scripts" / "export-tenant-storage"), "--store-url", document["store_url"]]
    for tenant in document["tenants"]:
        args += ["--tenant", tenant]
    out = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == (INFRA / "environments" / "dev" / "tenant-storage.json").read_text()
