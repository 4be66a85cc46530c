"""The fleet bucket's lifecycle rules for the archive: the prefixes are the platform's own, the
storage classes answer a replay's GET at once, incomplete multipart uploads are aborted."""

from __future__ import annotations

from typing import Any

from edgeplat.sync.archive import ARCHIVE_PREFIX, QUARANTINE_ARCHIVE_PREFIX
from tests.support.deploy_tools import REPO
from tests.support.terraform import blocks, load

MODULE = REPO / "infrastructure" / "modules" / "tenant_storage"
INSTANT_READ = {"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"}


def _rules(name: str) -> dict[str, dict[str, Any]]:
    resource = blocks(MODULE, "resource")[("aws_s3_bucket_lifecycle_configuration", name)]
    return {rule["id"]: rule for rule in resource["rule"]}


def _locals() -> dict[str, Any]:
    return {name: body["value"] for (name,), body in blocks(MODULE, "locals").items()}


def test_the_archive_rules_cover_the_platforms_archive_prefixes() -> None:
    rules = _rules("fleet")
    assert set(rules) == {
        "abort-incomplete-uploads-and-expire-old-versions",
        "archive-to-colder-storage",
        "expire-archived-quarantine",
    }
    local = _locals()
    assert (
        local["archive_prefix"]
        == f'${{trimprefix("${{var.tenant_storage.base_prefix}}/{ARCHIVE_PREFIX}", "/")}}'
    )
    quarantine_tail = QUARANTINE_ARCHIVE_PREFIX.removeprefix(ARCHIVE_PREFIX)
    assert local["quarantine_archive_prefix"] == f"${{local.archive_prefix}}{quarantine_tail}"
    assert rules["archive-to-colder-storage"]["filter"] == [{"prefix": "${local.archive_prefix}"}]
    assert rules["expire-archived-quarantine"]["filter"] == [{"prefix": "${local.quarantine_archive_prefix}"}]
    # the fleet bucket left the shared configuration (S3 takes one per bucket), its state moved along
    assert "fleet" in blocks(MODULE, "resource")[("aws_s3_bucket_lifecycle_configuration", "all")]["for_each"]
    moves = [m for path in MODULE.glob("*.tf") for m in load(path).get("moved", [])]
    assert {
        "from": 'aws_s3_bucket_lifecycle_configuration.all["fleet"]',
        "to": "aws_s3_bucket_lifecycle_configuration.fleet",
    } in [{k: v.removeprefix("${").removesuffix("}") for k, v in m.items()} for m in moves]


def test_archived_batches_stay_readable_without_a_restore() -> None:
    transitions = _rules("fleet")["archive-to-colder-storage"]["transition"]
    assert {t["storage_class"] for t in transitions} <= INSTANT_READ
    variables = blocks(MODULE, "variable")
    ia, glacier_ir = (
        variables[(n,)]["default"] for n in ("archive_infrequent_access_days", "archive_glacier_ir_days")
    )
    assert 30 <= ia < glacier_ir  # 30 days: S3's minimum before STANDARD_IA


def test_incomplete_multipart_uploads_are_aborted_on_every_bucket() -> None:
    for name in ("all", "fleet"):
        rule = _rules(name)["abort-incomplete-uploads-and-expire-old-versions"]
        assert (
            rule["filter"] == [{}]
            and rule["abort_incomplete_multipart_upload"][0]["days_after_initiation"] > 0
        )
